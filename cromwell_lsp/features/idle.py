"""Where an idle document is pre-filled: the position just after its last edit, which is
where the cursor stands after typing (the next completion request comes from there).

An incremental change says it directly (its range start plus the inserted text, in the
new document); a whole-document change is compared with the previous text.
"""
from __future__ import annotations


def edit_end(old: str, new: str) -> int:
    """Offset in `new` just after the span that differs from `old` (len(new) when equal).

    The common prefix is taken first, so typing "a" after "a" ends after the new "a"."""
    n = min(len(old), len(new))
    lo, hi = 0, n  # the common prefix has length in [lo, hi]; slices compare at C speed
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if old[:mid] == new[:mid]:
            lo = mid
        else:
            hi = mid - 1
    prefix = lo
    if prefix == len(old) == len(new):
        return len(new)
    lo, hi = 0, n - prefix  # the common suffix, not overlapping the prefix
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if old[len(old) - mid:] == new[len(new) - mid:]:
            lo = mid
        else:
            hi = mid - 1
    return len(new) - lo
