"""A syntax guard for Python completions: decoding refuses a token that writes what Python
never accepts, and takes the model's next choice in its place (grammar-constrained
decoding, kept to three rules that no valid code breaks).

1. A closing bracket of the wrong kind for the innermost open one: `foo(bar]`.
2. A colon directly inside a round bracket in the header of a compound statement (`if`,
   `elif`, `while`, `for`, `with`, `except`) with no `lambda` in that bracket:
   `for i in range(len(x):`, `if not isinstance(x, (int, str):`.  The bracket should
   have closed where the colon is, and the model's next choice is then usually `)):`.
   The walrus (` :=`, one token) and slices and dicts (inside `[` and `{`) are not
   touched; `def` and `class` headers are not judged (annotations and defaults).
3. After a line that ends a block's header with its colon, a first line of code no
   deeper than the header (blank and comment lines do not count).  The token that puts
   the code there is refused; the line break before it is not judged, since a line's
   indentation may come in two tokens (a line break, then spaces).

The guard follows the text the tokens spell with a small Python lexer (strings, comments,
line continuations, brackets, each logical line's first word and indentation).  The text
before the cursor is lexed once, from a line start at most CONTEXT characters back; each
candidate token is then lexed on from the state after the tokens taken.  A lexer that
starts inside a string it cannot see may misread what follows; the rules then judge a
wrong bracket at worst, and the cost is the model's second choice for that token.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from ..model.healing import vocab_index

CONTEXT = 4000  # characters of the text before the cursor that are lexed
HEADERS = frozenset({"if", "elif", "while", "for", "with", "except"})
OPENS = {")": "(", "]": "[", "}": "{"}
_WORD = re.compile(r"[^\x00-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]+")  # isalnum, _, non-ASCII
_BLANK = re.compile(r"[ \t]*")
_PLAIN = re.compile(r"[^\\\n'\"]*")  # string content up to a backslash, break or quote


@dataclass
class LexState:
    quote: str | None = None       # the open string's quote
    comment: bool = False
    stack: list = field(default_factory=list)  # [bracket, lambda seen inside it]
    first: bool = True             # the next word is its logical line's first
    header: bool = False           # the logical line is a compound statement's header
    word: str = ""                 # the identifier being read
    start: bool = True             # before the first code of a logical line
    indent: int = 0                # the logical line's indentation
    last: str = ""                 # the logical line's last code character so far
    body: int | None = None        # a block was opened at this indentation: deeper next
    col: int = 0                   # the column where the text scanned so far ends

    def copy(self) -> "LexState":
        return dataclasses.replace(self, stack=[list(b) for b in self.stack])


def _end_word(st: LexState) -> None:
    w, st.word = st.word, ""
    if not w:
        return
    if st.first and w != "async":
        st.header, st.first = w in HEADERS, False
    if w == "lambda" and st.stack:
        st.stack[-1][1] = True


def scan(text: str, st: LexState, since: int | None = None) -> int | None:
    """Lex text on from state st (changed in place).  With `since`: stop at the first
    character at or after it that breaks a rule, and return its offset; None when none."""
    i, n = 0, len(text)
    line = -1 - st.col  # where the current physical line began, as an offset in text
    while i < n:
        c = text[i]
        if st.comment:
            if c != "\n":
                j = text.find("\n", i)
                i = n if j < 0 else j  # the rest of the comment at once
                continue
            st.comment = False
        elif st.quote:
            if c == "\\":
                i += 2
                continue
            if text.startswith(st.quote, i):
                i += len(st.quote)
                st.quote = None
                continue
            if c == "\n":
                line = i
            if c != "\n" or len(st.quote) == 3:
                i = _PLAIN.match(text, i + 1).end()  # up to the next quote, escape or break
                continue
            st.quote = None  # a one-quote string ends at its line
        if c == " " or c == "\t":
            _end_word(st)
            i = _BLANK.match(text, i + 1).end()  # the rest of the run of blanks at once
            continue
        judge = since is not None and i >= since
        if st.start and c not in "\n#\\":
            st.start, st.indent = False, i - line - 1  # the logical line's first code
            if st.body is not None:
                if judge and st.indent <= st.body:
                    return i
                st.body = None
        if c not in "\n#":
            st.last = c
        if c.isalnum() or c == "_" or ord(c) > 127:
            j = _WORD.match(text, i).end()  # the rest of the word at once
            st.word += text[i:j]
            st.last = text[j - 1]
            i = j
            continue
        _end_word(st)
        if c == "#":
            st.comment = True
        elif c in "'\"":
            st.quote = text[i:i + 3] if text.startswith(c * 3, i) else c
            i += len(st.quote)
            continue
        elif c in "([{":
            st.stack.append([c, False])
        elif c in ")]}":
            if st.stack:
                if judge and st.stack[-1][0] != OPENS[c]:
                    return i
                st.stack.pop()
        elif c == ":":
            if (judge and st.header and st.stack and st.stack[-1] == ["(", False]
                    and not text.startswith("=", i + 1)):
                return i
        elif c == "\\" and text.startswith("\n", i + 1):
            i += 2  # a line continuation: the logical line goes on
            line = i - 1
            continue
        elif c == "\n":
            line = i
            if not st.stack:
                if not st.start and st.last == ":":
                    st.body = st.indent  # a block's header ended: its body is deeper
                st.first, st.header, st.start, st.last = True, False, True, ""
        i += 1
    st.col = n - line - 1
    return None


def is_python(uri: str) -> bool:
    """Is the document Python source (by its name)?"""
    return uri.lower().endswith((".py", ".pyi"))


class SyntaxGuard:
    """For one completion: `context` is the text before the generated tokens (the cursor's
    prefix less the text token healing re-spells), `lead` that re-spelt text, which is the
    developer's and never judged.  rejects(id) asks about a token; advance(id) takes one.
    A token is lexed only when it could break a rule: it holds a bracket, a colon or a
    line break, or the text so far ends at a new line's indentation after a header."""

    def __init__(self, tok, context: str, lead: str = ""):
        self.vocab = vocab_index(tok).vocab
        start = max(0, len(context) - CONTEXT)
        if start:
            start = context.find("\n", start) + 1 or len(context)
        self.base = LexState()
        scan(context[start:], self.base)
        self.lead = len(lead)
        self.text = ""        # what the tokens taken so far spell
        self.now = self.base  # the lexer's state after it
        self.ck, self.ck_len = self.base, 0  # the last state after a text not _risky

    def _piece(self, tid: int) -> str:
        raw = self.vocab[tid] if 0 <= tid < len(self.vocab) else b""
        return raw.decode("utf-8", "replace")

    def _risky(self) -> bool:
        """Could the next piece change how the text so far ends (an escape, or a quote
        that may grow into a triple quote)?  Then the text is lexed again from the last
        state after a text that did not end so."""
        return self.text[-1:] in ("\\", "'", '"')

    def rejects(self, tid: int) -> bool:
        piece = self._piece(tid)
        if not (any(c in piece for c in ")]}:\n") or (self.now.start and self.now.body is not None)):
            return False
        since = max(len(self.text), self.lead)
        if self._risky():
            return scan(self.text[self.ck_len:] + piece, self.ck.copy(),
                        since=since - self.ck_len) is not None
        return scan(piece, self.now.copy(), since=since - len(self.text)) is not None

    def advance(self, tid: int) -> None:
        piece = self._piece(tid)
        if self._risky():
            st = self.ck.copy()
            scan(self.text[self.ck_len:] + piece, st)
        else:
            st = self.now.copy()
            scan(piece, st)
        self.text += piece
        self.now = st
        if not self._risky():
            self.ck, self.ck_len = st, len(self.text)
