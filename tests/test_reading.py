"""Reading a screenshot's class grid back into code (model/reading.py): on the grids the
renderer's own glyph cells give (what a perfect reading head would name), the text comes
back nearly as written, line numbers dropped; an empty grid reads as nothing."""
import difflib
import random

import numpy as np
import pytest

from cromwell_lsp.model.reading import N_CLASSES, OTHER, char_class, class_char, grid_text

pytest.importorskip("pygments")
from cromwell_lsp.training import screenshots as S  # noqa: E402

CODE = '''def fibonacci(n):
    """Return the n-th Fibonacci number."""
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a
'''


def _grid(code, seed, side=384, **kw):
    image, glyphs = S.render_with_layout(code, random.Random(seed), **kw)
    scale = S.fit_scale(image.size, side)
    return S.char_labels(glyphs, scale, side)


def test_classes_round_trip():
    assert N_CLASSES == 96 and char_class(" ") == 0 and char_class("é") == OTHER
    for ch in "az_({:#'~!":
        assert class_char(char_class(ch)) == ch


def test_a_perfect_reading_gives_the_code_back():
    """36 renders (6 looks x 3 font sizes x with and without line numbers): each reads
    back within 5% of the code, the same number of lines, no line numbers; and most
    lines come back exactly (measured: 191 of 216; the renderer places each token on a
    grid a little wider than its glyphs at 9 and 11 points, so spacing can be a column
    off)."""
    exact = total = 0
    for seed in range(6):
        for font_size in (9, 10, 11):
            for line_numbers in (False, True):
                got = grid_text(_grid(CODE, seed, font_size=font_size, line_numbers=line_numbers))
                ratio = difflib.SequenceMatcher(None, got, CODE.rstrip("\n")).ratio()
                assert ratio > 0.95, (got, ratio)
                lines = got.split("\n")
                assert len(lines) == CODE.count("\n") and lines[0].startswith("def ")
                exact += sum(a == b for a, b in zip(lines, CODE.split("\n")))
                total += len(lines)
    assert exact >= 0.85 * total


def test_nothing_to_read():
    assert grid_text(np.zeros((8, 10), dtype=np.int64)) == ""
    assert grid_text(np.zeros((0, 0), dtype=np.int64)) == ""


def test_any_grid_reads_without_error():
    """Random logits and class grids of any size, down to a single patch (a narrow grid
    holds fewer patches than one wide cell spans), read as some text."""
    rng = np.random.default_rng(0)
    for shape in [(8, 8), (8, 3), (3, 1), (1, 1), (2, 40), (96, 96)]:
        for _ in range(10):
            scores = rng.normal(size=shape + (N_CLASSES,)).astype(np.float32) * rng.uniform(0, 5)
            assert isinstance(grid_text(scores), str)
        assert isinstance(grid_text(rng.integers(0, N_CLASSES, size=shape)), str)
