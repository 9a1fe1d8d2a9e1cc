"""Reading a screenshot: the character under each patch of the vision grid, and the code
those characters spell.

The vision encoder's reading head (`vision.read`, trained by `cromwell train align`'s
reading loss on renders whose glyph cells are known) names, for every 4x4 patch, the
character drawn under its centre: class 0 is a space or background, 1..94 are "!".."~",
95 any other character.  A line of monospaced code covers a band of two to four patch
rows and each character one to two patch columns, so `grid_text` turns the class grid
into text the way a person copies a listing: lines are the rows' inked segments, split
where touching lines' rows read other characters (`line_bands`) and where a band is as
tall as two lines; each line's
patches are the ink-weighted vote of its rows, and are cut into character cells about a
pitch wide (`_cells`: the most likely cutting, each cell naming the character its
patches agree on best, so a stray patch at a glyph's edge is outvoted instead of read
as one more character); a line starts at the column its indentation gives at that pitch,
and a column of line numbers is dropped.

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
    probabilities, column by column, below `alike`) after at least two rows; a band
    still as tall as two lines then is cut in two (`_one_line_each`)."""
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
    return _one_line_each(bands)


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
    """A line's rows of probabilities [r, Gw, 96] -> its probabilities [Gw, 96]: each row
    weighted by the ink it holds (the rows through the glyphs' middles speak loudest)."""
    w = (1 - band[..., 0]).sum(1)  # (r,)
    w = w / max(float(w.sum()), 1e-9)
    return np.einsum("r,rcd->cd", w, band)


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
    classes = [line.argmax(-1) for line in lines]
    classes = [c if (c != 0).sum() >= MIN_INK else np.zeros_like(c) for c in classes]
    runs = [_runs(c) for c in classes]
    lengths = [n for line in runs for (_, n, c) in line if c]
    if not lengths:
        return ""
    pitch = _pitch(lengths)
    runs = _without_line_numbers(runs)
    spans = [[(s, s + n) for s, n, c in line if c] for line in runs]
    spans = [(line[0][0], line[-1][1]) if line else None for line in spans]
    if not any(spans):
        return ""
    left = min(s[0] for s in spans if s)
    out = []
    for line, span in zip(lines, spans):
        if span is None:
            out.append("")
            continue
        indent = " " * int(round((span[0] - left) / pitch))
        cells = _cells(np.log(np.clip(line, 1e-6, 1.0)), span[0], span[1], pitch)
        out.append((indent + "".join(class_char(c) for c in cells)).rstrip())
    return "\n".join(out).strip("\n")


def _one_line_each(bands: list[tuple[int, int]], tall: float = 1.6) -> list[tuple[int, int]]:
    """Bands cut where one is `tall` times the median band or more: two lines of near
    identical text read alike row by row, so the row comparison keeps them as one band."""
    if not bands:
        return bands
    height = sorted(r1 - r0 for r0, r1 in bands)[len(bands) // 2]
    out = []
    for r0, r1 in bands:
        n = max(1, int(round((r1 - r0) / height))) if r1 - r0 >= tall * height else 1
        cuts = [r0 + round(k * (r1 - r0) / n) for k in range(n + 1)]
        out += list(zip(cuts[:-1], cuts[1:]))
    return out


STEPS = 10        # cell edges are placed to a tenth of a patch
NARROW = 0.75     # a cell is at least this much of the pitch
WIDE = 1.7        # and at most this much
WIDTH_COST = 20.0  # log-likelihood lost per (relative width deviation)^2


def _cells(logp: np.ndarray, lo: int, hi: int, pitch: float) -> list[int]:
    """The classes of the character cells that cover patches lo..hi-1 of a line, from its
    log-probabilities [Gw, 96]: the cutting into cells (edges on a 1/STEPS-patch grid,
    widths NARROW..WIDE of the pitch) that maximises each cell's best class's summed
    log-probability over the patches whose centres it holds, less WIDTH_COST times each
    width's squared relative deviation from the pitch.  Edges are searched by dynamic
    programming; every cell holds a patch centre (widths above one patch), so a cell
    never names a character no patch saw."""
    gw = len(logp)
    cum = np.concatenate([np.zeros((1, logp.shape[1])), np.cumsum(logp, 0)])
    widths = np.arange(max(STEPS + 1, int(np.ceil(NARROW * pitch * STEPS))),
                       max(STEPS + 1, int(np.floor(WIDE * pitch * STEPS))) + 1)
    longest = int(np.ceil(widths.max() / STEPS)) + 1  # patches a cell can hold
    best = np.full((gw + 1, longest + 1), -np.inf)     # [first patch, patches] -> score
    name = np.zeros((gw + 1, longest + 1), dtype=np.int64)
    for k in range(1, min(longest, gw) + 1):
        total = cum[k:] - cum[:-k]
        best[:gw + 1 - k, k], name[:gw + 1 - k, k] = total.max(1), total.argmax(1)
    cost = -WIDTH_COST * ((widths / STEPS - pitch) / pitch) ** 2
    # edge position t stands at patch coordinate lo - 0.5 + t / STEPS; the first edge lies
    # within the half patch before lo's centre, the last at or after hi - 1's centre
    n = (hi - lo + 2) * STEPS + 1
    first = np.ceil(lo - 1.0 + np.arange(n) / STEPS - 1e-9).astype(np.int64)  # first centre at/after t
    score = np.full(n, -np.inf)
    score[:STEPS] = 0.0
    back = np.zeros(n, dtype=np.int64)
    cls = np.zeros(n, dtype=np.int64)
    w0 = int(widths.min())  # a block of w0 edges depends only on edges before it
    for t0 in range(STEPS, n, w0):
        t = np.arange(t0, min(n, t0 + w0))
        src = t[:, None] - widths[None, :]
        ok = src >= 0
        src = np.where(ok, src, 0)
        j0, k = first[src], first[t][:, None] - first[src]
        ok &= (k >= 1) & (k <= longest) & (j0 >= 0) & (first[t][:, None] <= gw)
        j0, k = np.clip(j0, 0, gw), np.clip(k, 0, longest)
        val = np.where(ok, score[src] + cost[None, :] + best[j0, k], -np.inf)
        i = val.argmax(1)
        r = np.arange(len(t))
        score[t], back[t], cls[t] = val[r, i], src[r, i], name[j0[r, i], k[r, i]]
    end = (hi - lo) * STEPS
    t = end + int(score[end:].argmax())
    out = []
    while t >= STEPS and score[t] > -np.inf:
        out.append(int(cls[t]))
        t = back[t]
    return out[::-1]


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
