"""Reading a screenshot: the character under each patch of the vision grid, and the code
those characters spell.

The vision encoder's reading head (`vision.read`, trained by `cromwell train align`'s
reading loss on renders whose glyph cells are known) names, for every 4x4 patch, the
character drawn under its centre: class 0 is a space or background, 1..94 are "!".."~",
95 any other character.  A line of monospaced code covers a band of two to four patch
rows and each character one to two patch columns, so `grid_text` turns the class grid
into text the way a person copies a listing: lines are the rows' inked segments, split
where touching lines' rows read other characters (`line_bands`), and each line's
classes are the ink-weighted vote of its rows;
a run of one class is one character (two when it is about twice the pitch:
"ll", "=="), a character after a gap goes to the column its position gives at the
character pitch, and a column of line numbers is dropped.

Dimension letters: Gh, Gw grid rows/columns.
"""
from __future__ import annotations

import numpy as np

N_CLASSES = 96
OTHER = 95  # any character outside printable ASCII


def char_class(ch: str) -> int:
    """0 for a space, 1..94 for "!".."~", OTHER for any other character."""
    return 0 if ch == " " else (ord(ch) - 32 if "!" <= ch <= "~" else OTHER)


def class_char(c: int) -> str:
    return " " if c == 0 else ("?" if c >= OTHER else chr(c + 32))


def _probabilities(scores: np.ndarray) -> np.ndarray:
    """Class scores [Gh, Gw, 96] (the head's logits) as probabilities; a grid of classes
    [Gh, Gw] as certain ones."""
    scores = np.asarray(scores)
    if scores.ndim == 2:
        return np.eye(N_CLASSES, dtype=np.float32)[scores.astype(np.int64)]
    e = np.exp(scores - scores.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def line_bands(P: np.ndarray, faint: float = 0.15, alike: float = 0.5) -> list[tuple[int, int]]:
    """The row bands [r0, r1) of the lines of text in probabilities [Gh, Gw, 96].  Rows
    with more than `faint` of the most inked row's ink run in segments; within a segment
    a line ends where the next row reads other characters (the cosine of the two rows'
    probabilities, column by column, below `alike`) after at least two rows."""
    ink = (1 - P[..., 0]).sum(1)  # (Gh,)
    if not len(ink) or ink.max() <= 0:
        return []
    inked = ink > faint * ink.max()
    bands, r0 = [], None
    for r in range(len(ink) + 1):
        if r == len(ink) or not inked[r]:
            if r0 is not None:
                bands.append((r0, r))
            r0 = None
        elif r0 is None:
            r0 = r
        elif r - r0 >= 2 and _alike(P[r - 1], P[r]) < alike:
            bands.append((r0, r))
            r0 = r
    return bands


def _alike(a: np.ndarray, b: np.ndarray) -> float:
    """How alike two rows of probabilities [Gw, 96] read: the mean, over columns inked in
    either, of the cosine of their character distributions (space left out)."""
    a, b = a[:, 1:], b[:, 1:]
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    cols = (a.sum(1) > 0.5) | (b.sum(1) > 0.5)
    if not cols.any():
        return 1.0
    cos = (a * b).sum(1)[cols] / np.maximum(na[cols] * nb[cols], 1e-9)
    return float(cos.mean())


def _line(band: np.ndarray) -> np.ndarray:
    """A line's rows of probabilities [r, Gw, 96] -> its classes [Gw]: each row weighted
    by the ink it holds (the rows through the glyphs' middles speak loudest)."""
    w = (1 - band[..., 0]).sum(1)  # (r,)
    w = w / max(float(w.sum()), 1e-9)
    return np.einsum("r,rcd->cd", w, band).argmax(-1)


def _runs(row: np.ndarray) -> list[tuple[int, int, int]]:
    """(start column, length, class) of each run of one class in a row."""
    edges = np.flatnonzero(np.diff(row)) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [len(row)]])
    return [(int(s), int(e - s), int(row[s])) for s, e in zip(starts, ends)]


MIN_INK = 3  # a line band with fewer inked patches holds only the edges of glyphs


def grid_text(scores: np.ndarray) -> str:
    """The text a grid spells ("" when it holds none): scores are the reading head's
    logits [Gh, Gw, 96] or a grid of classes [Gh, Gw]."""
    P = _probabilities(scores)
    if P.shape[0] == 0 or P.shape[1] == 0:
        return ""
    lines = [_line(P[r0:r1]) for r0, r1 in line_bands(P)]
    lines = [line if (line != 0).sum() >= MIN_INK else np.zeros_like(line) for line in lines]
    runs = [_runs(line) for line in lines]
    lengths = [n for line in runs for (_, n, c) in line if c]
    if not lengths:
        return ""
    pitch = _pitch(lengths)
    runs = _without_line_numbers(runs)
    if not any(c for line in runs for (_, _, c) in line):
        return ""
    left = min(r[0] for line in runs for r in line if r[2])
    out = []
    for line in runs:
        text, end = "", None
        for start, n, c in line:
            if c == 0:
                continue
            if start != end:  # after a gap: to the column its position says, a space at least
                column = int(round((start - left) / pitch))
                text += " " * max(0 if end is None else 1, column - len(text))
            text += class_char(c) * _count(n, pitch)
            end = start + n
        out.append(text)
    return "\n".join(t.rstrip() for t in out).strip("\n")


def _count(n: int, pitch: float) -> int:
    """How many characters a run of n patches of one class holds: one character covers
    one or two patches, a doubled one ("ll", "==") about twice the pitch."""
    return max(1, int(n / pitch + 0.3))


def _pitch(lengths: list[int], rounds: int = 3) -> float:
    """Patches per character from the inked runs' lengths, counting doubled characters
    as two (the plain mean would count them as one and overestimate it)."""
    total = sum(lengths)
    pitch = max(1.0, total / len(lengths))
    for _ in range(rounds):
        pitch = max(1.0, total / sum(_count(n, pitch) for n in lengths))
    return pitch


DIGITS = {char_class(d) for d in "0123456789"}


def _without_line_numbers(runs: list[list[tuple[int, int, int]]]):
    """The lines' runs less a column of line numbers: when most inked lines start with
    digits and then a gap, those digits go (the code's indentation is then measured from
    its own leftmost column, not the numbers')."""
    def number_end(line):
        inked = [r for r in line if r[2]]
        k = 0
        while k < len(inked) and inked[k][2] in DIGITS and (k == 0 or inked[k][0] == inked[k - 1][0] + inked[k - 1][1]):
            k += 1
        if k == 0 or (k < len(inked) and inked[k][0] == inked[k - 1][0] + inked[k - 1][1]):
            return None  # no digits first, or digits that run on into code (a literal)
        return inked[k - 1][0] + inked[k - 1][1]

    ends = [number_end(line) for line in runs if any(c for _, _, c in line)]
    if not ends or sum(e is not None for e in ends) < 0.8 * len(ends):
        return runs
    cut = max(e for e in ends if e is not None)
    return [[r for r in line if r[0] >= cut] for line in runs]
