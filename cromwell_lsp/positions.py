"""LSP positions, encodings and ranges: every conversion between the editor's coordinates
and Python string offsets lives here.

Conventions (stated once, used everywhere):
  - A document is a Python str.  Lines are split on "\\n", "\\r\\n" and "\\r" (the three
    line endings LSP recognises); a line's text excludes its line ending.
  - LSP Position(line, character): both 0-based; `character` counts code units of the
    negotiated encoding: "utf-16" (the default: characters outside the Basic
    Multilingual Plane count 2), "utf-8" (bytes) or "utf-32" (code points = Python str
    indices).
  - An offset is a 0-based index into the Python str (code points).
  - Out-of-range positions are clamped, as the LSP specification asks: a line past the end
    means the end of the document; a character past the end of its line means the end of
    that line; a character inside a surrogate pair or a UTF-8 sequence snaps back to the
    start of that code point.
  - The command line speaks compiler-message coordinates: 1-based line and column, the
    column counted in code points (`from_cli`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

ENCODINGS = ("utf-16", "utf-8", "utf-32")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def units(ch: str, encoding: str) -> int:
    """Code units one code point takes in `encoding`."""
    cp = ord(ch)
    if encoding == "utf-16":
        return 2 if cp > 0xFFFF else 1
    if encoding == "utf-8":
        return 1 if cp < 0x80 else 2 if cp < 0x800 else 3 if cp < 0x10000 else 4
    return 1


def check_encoding(encoding: str) -> str:
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown position encoding {encoding!r}; expected one of {ENCODINGS}")
    return encoding


@dataclass(frozen=True)
class Lines:
    """Line start offsets of a document, for fast position <-> offset conversion."""

    text: str
    starts: tuple[int, ...]
    ends: tuple[int, ...]  # offset where each line's text ends (before its line break)

    @classmethod
    def of(cls, text: str) -> "Lines":
        starts, ends = [0], []
        for m in _LINE_BREAK.finditer(text):
            ends.append(m.start())
            starts.append(m.end())
        ends.append(len(text))
        return cls(text, tuple(starts), tuple(ends))

    def __len__(self) -> int:
        return len(self.starts)

    def line(self, i: int) -> str:
        return self.text[self.starts[i]:self.ends[i]]

    def offset(self, line: int, character: int, encoding: str = "utf-16") -> int:
        """The str offset of an LSP position (clamped; see the module docstring)."""
        if line < 0 or character < 0:
            raise ValueError(f"negative position ({line}, {character})")
        if line >= len(self.starts):
            return len(self.text)
        start, end = self.starts[line], self.ends[line]
        if encoding == "utf-32":
            return min(start + character, end)
        count = 0
        for i in range(start, end):
            step = units(self.text[i], encoding)
            if count + step > character:
                return i
            count += step
        return end

    def position(self, offset: int, encoding: str = "utf-16") -> tuple[int, int]:
        """The LSP (line, character) of a str offset (clamped to the document)."""
        offset = max(0, min(offset, len(self.text)))
        lo, hi = 0, len(self.starts) - 1
        while lo < hi:  # the last line starting at or before offset
            mid = (lo + hi + 1) // 2
            if self.starts[mid] <= offset:
                lo = mid
            else:
                hi = mid - 1
        start = self.starts[lo]
        offset = min(offset, self.ends[lo])
        if encoding == "utf-32":
            return lo, offset - start
        return lo, sum(units(c, encoding) for c in self.text[start:offset])

    def from_cli(self, line: int, column: int) -> int:
        """Offset of a 1-based line and 1-based code-point column, as compilers print
        them; raises ValueError when the line does not exist."""
        if line < 1 or column < 1:
            raise ValueError(f"line and column are 1-based, got {line}:{column}")
        if line > len(self.starts):
            raise ValueError(f"line {line} is past the end of the file ({len(self.starts)} lines)")
        start, end = self.starts[line - 1], self.ends[line - 1]
        if start + column - 1 > end:
            raise ValueError(f"column {column} is past the end of line {line} "
                             f"({end - start} characters)")
        return start + column - 1


def line_ending(text: str) -> str:
    """The document's line ending: the first one it uses, "\\n" when it has none."""
    m = _LINE_BREAK.search(text)
    return m.group(0) if m else "\n"


def with_line_ending(text: str, ending: str) -> str:
    """text with every line break replaced by `ending`."""
    return _LINE_BREAK.sub(ending, text) if ending != "\n" or "\r" in text else text
