"""A syntax guard for Python completions: decoding refuses a token that writes what Python
never accepts, and takes the model's next choice in its place (grammar-constrained
decoding, kept to two rules that no valid code breaks).

1. A closing bracket of the wrong kind for the innermost open one: `foo(bar]`.
2. A colon directly inside a round bracket in the header of a compound statement (`if`,
   `elif`, `while`, `for`, `with`, `except`) with no `lambda` in that bracket:
   `for i in range(len(x):`, `if not isinstance(x, (int, str):`.  The bracket should
   have closed where the colon is, and the model's next choice is then usually `)):`.
   The walrus (` :=`, one token) and slices and dicts (inside `[` and `{`) are not
   touched; `def` and `class` headers are not judged (annotations and defaults).

The guard follows the text the tokens spell with a small Python lexer (strings, comments,
line continuations, brackets, each logical line's first word).  The text before the
cursor is lexed once, from a line start at most CONTEXT characters back; each candidate
token is then checked by lexing only the completion so far plus the token.  A lexer that
starts inside a string it cannot see may misread what follows; the rules then judge a
wrong bracket at worst, and the cost is the model's second choice for that token.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..model.healing import vocab_index

CONTEXT = 4000  # characters of the text before the cursor that are lexed
HEADERS = frozenset({"if", "elif", "while", "for", "with", "except"})
OPENS = {")": "(", "]": "[", "}": "{"}


@dataclass
class LexState:
    quote: str | None = None       # the open string's quote
    comment: bool = False
    stack: list = field(default_factory=list)  # [bracket, lambda seen inside it]
    first: bool = True             # the next word is its logical line's first
    header: bool = False           # the logical line is a compound statement's header
    word: str = ""                 # the identifier being read

    def copy(self) -> "LexState":
        return LexState(self.quote, self.comment, [list(b) for b in self.stack],
                        self.first, self.header, self.word)


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
    while i < n:
        c = text[i]
        if st.comment:
            if c != "\n":
                i += 1
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
            if c != "\n" or len(st.quote) == 3:
                i += 1
                continue
            st.quote = None  # a one-quote string ends at its line
        if c.isalnum() or c == "_" or ord(c) > 127:
            st.word += c
            i += 1
            continue
        _end_word(st)
        judge = since is not None and i >= since
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
            continue
        elif c == "\n" and not st.stack:
            st.first, st.header = True, False
        i += 1
    return None


def is_python(uri: str) -> bool:
    """Is the document Python source (by its name)?"""
    return uri.lower().endswith((".py", ".pyi"))


class SyntaxGuard:
    """For one completion: `context` is the text before the generated tokens (the cursor's
    prefix less the text token healing re-spells), `lead` that re-spelt text, which is the
    developer's and never judged.  rejects(id) asks about a token; advance(id) takes one."""

    def __init__(self, tok, context: str, lead: str = ""):
        self.vocab = vocab_index(tok).vocab
        start = max(0, len(context) - CONTEXT)
        if start:
            start = context.find("\n", start) + 1 or len(context)
        self.base = LexState()
        scan(context[start:], self.base)
        self.lead = len(lead)
        self.data = b""

    def _piece(self, tid: int) -> bytes:
        return self.vocab[tid] if 0 <= tid < len(self.vocab) else b""

    def rejects(self, tid: int) -> bool:
        piece = self._piece(tid)
        if not any(b in piece for b in b")]}:"):
            return False
        done = self.data.decode("utf-8", "replace")
        text = (self.data + piece).decode("utf-8", "replace")
        return scan(text, self.base.copy(), since=max(len(done), self.lead)) is not None

    def advance(self, tid: int) -> None:
        self.data += self._piece(tid)
