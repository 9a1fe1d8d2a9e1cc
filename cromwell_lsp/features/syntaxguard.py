"""A syntax guard for Python completions: decoding refuses a token that writes what Python
never accepts, and mends it or takes the model's next choice in its place
(grammar-constrained decoding, kept to seven rules that no valid code breaks).

1. A closing bracket of the wrong kind for the innermost open one: `foo(bar]`.
2. A colon directly inside a round bracket in the header of a compound statement (`if`,
   `elif`, `while`, `for`, `with`, `except`) with no `lambda` in that bracket:
   `for i in range(len(x):`, `if not isinstance(x, (int, str):`.  The bracket should
   have closed where the colon is.  The walrus (` :=`, one token) and slices and dicts
   (inside `[` and `{`) are not touched; `def` and `class` headers are not judged
   (annotations and defaults).
3. After a line that ends a block's header with its colon, a first line of code no
   deeper than the header (blank and comment lines do not count).  The token that puts
   the code there is refused; the line break before it is not judged, since a line's
   indentation may come in two tokens (a line break, then spaces).
4. A line break inside a string opened with one quote (not after a backslash):
   `"abc` / `def"`.
5. A compound statement's header (`if`, `elif`, `while`, `for`, `with`, `except`,
   `def`, `class`, `else`, `try`, `finally`) whose logical line ends with no colon
   outside brackets: `if x` / `return`.  A one-line body (`if x: return`) has its colon.
6. The end of the completion right after a block's header, when the text after the
   cursor (when the guard is given it) has no deeper line to be the block's body.
7. A closing bracket with no open one, when the lexer has seen the whole text before
   the cursor (a file no longer than CONTEXT there): `f(x))`.

Where the model's choice breaks rule 2, 3, 4, 5 or 7, the guard first mends it, as a
developer would finish the same thought (`mend`): the colon gets the closing brackets its
header left open before it (`if not isinstance(x, (int, str):` -> `(int, str)):`); a
body line left at its header's indentation goes one level deeper than the header
(`if x:` / `return y` -> `if x:` / `    return y`), and `else`, `elif`, `except` and
`finally` there would close the empty block, which then gets `pass`; the string gets its
closing quote before the line break; the header gets its colon before it; a closing
bracket with no open one is left out.  The mended text is spelt by the tokenizer and
decoded as the next tokens.  Only where no mend applies (rules 1 and 6, a mend that
would break a rule itself, or tab-indented code for rule 3) is the model's next choice
taken: a refused colon that the next choices only postpone left the model rambling
inside the bracket to the token limit, and a refused body line left it writing comment
after comment at the header's indentation.

The guard follows the text the tokens spell with a small Python lexer (strings, comments,
line continuations, brackets, each logical line's first word and indentation).  The text
before the cursor is lexed once, from a line start at most CONTEXT characters back; each
candidate token is then lexed on from the state after the tokens taken.  A lexer that
starts inside a string it cannot see (a docstring longer than CONTEXT, entered mid-way)
may misread what follows, and then refuse and mend a token that was fine there (an
apostrophe taken for a string's quote gets a closing one); text before the cursor no
longer than CONTEXT is lexed whole and never misread.
"""
from __future__ import annotations

import dataclasses
import re
from collections import OrderedDict
from dataclasses import dataclass, field

from ..model.healing import vocab_index

CONTEXT = 4000  # characters of the text before the cursor that are lexed
HEADERS = frozenset({"if", "elif", "while", "for", "with", "except"})
COMPOUND = HEADERS | {"def", "class", "else", "try", "finally"}  # headers end with a colon
OPENS = {")": "(", "]": "[", "}": "{"}
CLOSES = {o: c for c, o in OPENS.items()}
CLAUSES = frozenset({"else", "elif", "except", "finally"})  # go on a statement, open none
INDENT = 4  # spaces a mended body line goes deeper than its header
_WORD = re.compile(r"[^\x00-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]+")  # isalnum, _, non-ASCII
_BLANK = re.compile(r"[ \t]*")
_PLAIN = re.compile(r"[^\\\n'\"]*")  # string content up to a backslash, break or quote


@dataclass
class LexState:
    quote: str | None = None       # the open string's quote
    comment: bool = False
    stack: list = field(default_factory=list)  # [bracket, lambda seen inside it]
    first: bool = True             # the next word is its logical line's first
    header: bool = False           # the logical line is a header of HEADERS (rule 2)
    compound: bool = False         # the logical line is a header of COMPOUND (rule 5)
    colon: bool = False            # the header's colon outside brackets has come
    word: str = ""                 # the identifier being read
    start: bool = True             # before the first code of a logical line
    indent: int = 0                # the logical line's indentation
    last: str = ""                 # the logical line's last code character so far
    body: int | None = None        # a block was opened at this indentation: deeper next
    col: int = 0                   # the column where the text scanned so far ends
    exact: bool = False            # lexed from the text's start: no bracket is unseen

    def copy(self) -> "LexState":
        return dataclasses.replace(self, stack=[list(b) for b in self.stack])


def _end_word(st: LexState) -> None:
    w, st.word = st.word, ""
    if not w:
        return
    if st.first and w != "async":
        st.header, st.compound, st.first = w in HEADERS, w in COMPOUND, False
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
            if since is not None and i >= since:
                return i  # rule 4
            st.quote = None  # a one-quote string ends at its line (Python refuses it)
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
        prev = st.last
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
            elif judge and st.exact:
                return i  # rule 7
        elif c == ":":
            if (judge and st.header and st.stack and st.stack[-1] == ["(", False]
                    and not text.startswith("=", i + 1)):
                return i
            if not st.stack and st.compound:
                st.colon = True
        elif c == "=":
            if prev == ":" and text[i - 1:i] in (":", "") and not st.stack:
                st.colon = False  # it was a walrus (` :=`), perhaps split over two pieces
        elif c == "\\" and text.startswith("\n", i + 1):
            i += 2  # a line continuation: the logical line goes on
            line = i - 1
            continue
        elif c == "\n":
            if not st.stack:
                if judge and st.compound and not st.colon:
                    return i  # rule 5
                if not st.start and st.last == ":":
                    st.body = st.indent  # a block's header ended: its body is deeper
                st.first, st.header, st.start, st.last = True, False, True, ""
                st.compound = st.colon = False
            line = i
        i += 1
    st.col = n - line - 1
    return None


def mend(piece: str, at: int, st: LexState, spaces: bool = True) -> str | None:
    """The piece of text with the rule break at piece[at] mended, `st` being the lexer's
    state just before it (as scan leaves it when it stops there); None when the break is
    not one a mend applies to (a closing bracket of the wrong kind, or a body line when
    not `spaces`: code indented with tabs).  See the module's docstring for the mends."""
    c = piece[at]
    if c in ")]}" and not st.stack:  # rule 7
        return piece[:at] + piece[at + 1:]
    if c == "\n" and st.quote:  # rule 4
        return piece[:at] + st.quote + piece[at:]
    if c == "\n" and st.compound and not st.colon and not st.stack:  # rule 5
        return piece[:at] + ":" + piece[at:]
    if c == ":" and st.header and st.stack and st.stack[-1] == ["(", False]:
        closers = "".join(CLOSES[b] for b, _ in reversed(st.stack))
        return piece[:at] + closers + piece[at:]
    if spaces and st.body is not None and not st.start and st.indent <= st.body:
        deeper = " " * (st.body + INDENT - st.indent)
        m = _WORD.match(piece, at)
        if m and m.group() in CLAUSES:  # an empty block before it: `pass` fills it
            return piece[:at] + deeper + "pass\n" + " " * st.indent + piece[at:]
        return piece[:at] + deeper + piece[at:]
    return None


_CODE_LINE = re.compile(r"^([ \t]*)[^ \t\r\n#]", re.M)


def follows(after: str | None) -> int | None:
    """For rule 6: the indentation of the first code line after the cursor, -1 when no
    code follows it; None when that says nothing (no text after is known, or code goes
    on after the cursor on its own line)."""
    if after is None:
        return None
    rest, _, more = after.partition("\n")
    if rest.strip():
        return None
    m = _CODE_LINE.search(more)
    return -1 if m is None else len(m.group(1))


def _window(context: str) -> int:
    """Where lexing the text before the cursor starts: a line start at most CONTEXT
    characters back."""
    start = max(0, len(context) - CONTEXT)
    if not start:
        return 0
    return context.find("\n", start) + 1 or len(context)


def lex(context: str, start: int | None = None) -> LexState:
    """The lexer's state after the text before the cursor, lexed from `start` (by
    default a line start at most CONTEXT characters back)."""
    start = _window(context) if start is None else start
    st = LexState(exact=start == 0)
    scan(context[start:], st)
    return st


class LexCache:
    """The lexer's state after the text before the cursor, kept per document: typing only
    appends, so a request lexes on from the last line start the previous one lexed
    instead of lexing up to CONTEXT characters again.  A text before the cursor that does
    not begin with that line (an edit above it, a deletion) or that appended more than
    CONTEXT characters is lexed anew from its window.  A state lexed from the document's
    start stays exact as the document grows past CONTEXT.  remember=False asks about a
    text the document does not go on from (a header's body after a line the editor has
    not inserted yet): lexed on from the head all the same, the head stays where it was,
    so the next keystroke does not lex its window anew."""

    def __init__(self, documents: int = 64):
        self.documents = documents
        self._heads: OrderedDict[str, tuple[str, LexState]] = OrderedDict()

    def state(self, key: str, context: str, remember: bool = True) -> LexState:
        head = context[:context.rfind("\n") + 1]
        known = self._heads.get(key)
        if (known is not None and head.startswith(known[0])
                and len(head) - len(known[0]) <= CONTEXT):
            st = known[1].copy()
            scan(head[len(known[0]):], st)
        else:
            st = lex(head)
        if remember:
            self._heads[key] = (head, st)
            self._heads.move_to_end(key)
            while len(self._heads) > self.documents:
                self._heads.popitem(last=False)
            st = st.copy()
        scan(context[len(head):], st)
        return st

    def forget(self, key: str) -> None:
        self._heads.pop(key, None)


def body_pending(st: LexState, after_indent: int | None) -> bool:
    """Does the text that left state `st` end right after a block's header, with no body
    yet and none in the code after the cursor (`after_indent`, see follows; None: no
    code after it is known)?"""
    return (st.start and st.body is not None
            and not (after_indent is not None and after_indent > st.body))


def whole(text: str, base: LexState, after_indent: int | None) -> bool:
    """Could a block completion end after `text` (lexed on from `base`, the state after
    the text before it), as it is and with its line ended?  Not inside a bracket or a
    string the text opened, nor in a header's line with no colon yet, nor right after a
    block's header with no body (body_pending).  One lex of the text serves both."""
    st = base.copy()
    scan(text, st)
    if not ends_whole(st, base, after_indent):
        return False
    st = st.copy()
    scan("\n", st)
    return ends_whole(st, base, after_indent)


def ends_whole(st: LexState, base: LexState, after_indent: int | None) -> bool:
    """whole's test on the state `st` the text left (lexed on from `base`)."""
    if len(st.stack) > len(base.stack) or (st.quote and not base.quote):
        return False
    if st.compound and not st.colon:
        return False
    return not body_pending(st, after_indent)


def is_python(uri: str) -> bool:
    """Is the document Python source (by its name)?"""
    return uri.lower().endswith((".py", ".pyi"))


class SyntaxGuard:
    """For one completion: `context` is the text before the generated tokens (the cursor's
    prefix less the text token healing re-spells), `lead` that re-spelt text, which is the
    developer's and never judged; `after`, when given, the text after the cursor (rule 6);
    `base`, when given, the lexer's state after `context` (from a LexCache).
    rejects(id) asks about a token; repair(id) mends a refused one; advance(id) takes one.
    A token is lexed only when it could break a rule: it holds a bracket, a colon or a
    line break, or the text so far ends at a new line's indentation after a header."""

    def __init__(self, tok, context: str, lead: str = "", after: str | None = None,
                 base: LexState | None = None):
        self.tok = tok
        self.end = tok.special("endoftext")
        self.after = follows(after)  # rule 6; `after`: the text after the cursor
        self.vocab = vocab_index(tok).vocab
        start = _window(context)
        # code indented with tabs gets no mended indentation (spaces would mix with them)
        self.tabs = "\t" in context[start:]
        self.base = lex(context, start) if base is None else base  # (a LexCache's)
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
        if tid == self.end:  # rule 6
            return (self.after is not None and body_pending(self.now, self.after)
                    and len(self.text) >= self.lead)
        piece = self._piece(tid)
        if not (any(c in piece for c in ")]}:\n") or (self.now.start and self.now.body is not None)):
            return False
        since = max(len(self.text), self.lead)
        if self._risky():
            return scan(self.text[self.ck_len:] + piece, self.ck.copy(),
                        since=since - self.ck_len) is not None
        return scan(piece, self.now.copy(), since=since - len(self.text)) is not None

    def repair(self, tid: int) -> list[int] | None:
        """Token ids spelling a refused token's text mended (see mend), or None when no
        mend applies, the mended text still breaks a rule, or the tokenizer cannot spell
        it exactly."""
        piece = self._piece(tid)
        prior, st = ((self.text[self.ck_len:], self.ck.copy()) if self._risky()
                     else ("", self.now.copy()))
        since = max(len(self.text), self.lead) - (len(self.text) - len(prior))
        at = scan(prior + piece, st, since=since)
        if at is None:
            return None
        mended = mend(piece, at - len(prior), st, spaces=not self.tabs)
        if mended is None:
            return None
        st = self.ck.copy() if prior else self.now.copy()
        if scan(prior + mended, st, since=since) is not None:
            return None
        ids = self.tok.encode(mended)
        if b"".join(self.vocab[i] for i in ids) != mended.encode("utf-8"):
            return None
        return ids

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
