"""LSP position conversions in the three encodings, clamping, line endings, CLI coordinates."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cromwell_lsp.positions import ENCODINGS, Lines, line_ending, with_line_ending

DOC = "a😀b\r\nnaïve = 'é'\n\n∑x\rlast"


def reference_units(s, encoding):
    if encoding == "utf-16":
        return len(s.encode("utf-16-le")) // 2
    if encoding == "utf-8":
        return len(s.encode("utf-8"))
    return len(s)


def test_lines_split_on_all_three_breaks():
    lines = Lines.of(DOC)
    assert [lines.line(i) for i in range(len(lines))] == ["a😀b", "naïve = 'é'", "", "∑x", "last"]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_known_positions(encoding):
    lines = Lines.of(DOC)
    b_col = reference_units("a😀", encoding)
    assert lines.offset(0, b_col, encoding) == DOC.index("b")
    assert lines.position(DOC.index("b"), encoding) == (0, b_col)
    assert lines.offset(1, 0, encoding) == DOC.index("n")
    assert lines.position(len(DOC), encoding) == (4, 4)


def test_clamping():
    lines = Lines.of(DOC)
    assert lines.offset(99, 0) == len(DOC)
    assert lines.offset(0, 999) == DOC.index("\r\n")  # end of line, not the next line
    assert lines.offset(0, 2, "utf-16") == 1  # inside the surrogate pair: snap back
    assert lines.offset(0, 3, "utf-8") == 1   # inside the 4-byte sequence: snap back
    with pytest.raises(ValueError):
        lines.offset(-1, 0)
    assert Lines.of("").offset(0, 5) == 0 and Lines.of("").position(3) == (0, 0)


def test_cli_coordinates():
    lines = Lines.of(DOC)
    assert lines.from_cli(1, 3) == DOC.index("b")
    assert lines.from_cli(2, 1) == DOC.index("n")
    for bad in [(0, 1), (1, 0), (6, 1), (1, 5)]:
        with pytest.raises(ValueError):
            lines.from_cli(*bad)


def test_line_endings():
    assert line_ending("a\r\nb\nc") == "\r\n" and line_ending("abc") == "\n"
    assert with_line_ending("x\ny\r\nz", "\r\n") == "x\r\ny\r\nz"


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60),
       st.sampled_from(ENCODINGS))
def test_round_trip_every_offset(text, encoding):
    lines = Lines.of(text)
    for off in range(len(text) + 1):
        line, char = lines.position(off, encoding)
        inside = min(off, lines.ends[line])  # offsets within a line break map to its line's end
        assert lines.starts[line] <= inside
        assert char == reference_units(text[lines.starts[line]:inside], encoding)
        assert lines.offset(line, char, encoding) == inside
