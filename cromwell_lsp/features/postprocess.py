"""Turning raw model output into the completion an editor shows.

Pure functions over text (no model, no LSP), in the order `finish` applies them:
  1. mode: "line" (the cursor has code before it on its line: complete the rest of the
     line) or "block" (after a line ending in ":" or on an empty line: complete a block);
  2. in block mode, when the token limit stopped the output, drop the statement it left
     unfinished (the whole lines before it stay; a lone statement keeps its whole lines),
     as half a line is worse to insert than none;
  2b. cut at the end of the block: the first non-empty line indented less than the block
     (at module level, the first blank line; in line mode, the first line break); a line
     that begins inside a bracket or a string goes on with its statement, and in Python
     a clause that may go on the block's statement at its header's indentation (`except`
     after a `try:` body, `else` after an `if`'s) goes on with it, unless the document
     already goes on that statement after the cursor;
  3. cut where it loops: a small model's greedy output often repeats itself (the same
     method three times, "0, 0, 0, ..." up to the token limit); the first copy is kept;
  4. trim what repeats the suffix: text at the end of the completion that the document
     already has right after the cursor (closing brackets, the next lines);
  5. balance brackets: cut before a closer that nothing opened; in line mode, close
     what the completion opened when the rest of the line does not;
  5b. in block mode in Python, end where Python can: cut back to the last line break
     outside the brackets and strings the completion opened and not right after a
     header with no body; a lone statement left open gets its quote and closing
     brackets when its end allows (drop_open_end);
  5c. in block mode in Python, when the code around the cursor (from the last top-level
     `def`, `class` or decorator before it to the end of the cursor's block) does not
     parse with the completion, and Python's error is not above the cursor, cut the
     completion back to its longest whole-line start with which it parses
     (keep_parsing);
  6. the document's line endings.
Brackets inside strings and comments do not count (a small scanner, not a parser:
completions are partial code).
"""
from __future__ import annotations

import re

from ..positions import with_line_ending
from .syntaxguard import CLAUSES

_PAIRS = {")": "(", "]": "[", "}": "{"}
_OPENERS = {v: k for k, v in _PAIRS.items()}


def indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def mode(prefix: str, suffix: str) -> str:
    """'line' when the cursor's line has code before the cursor, else 'block'."""
    current = prefix.rsplit("\n", 1)[-1]
    return "line" if current.strip() else "block"


def cut_block(completion: str, prefix: str, line_mode: bool, python: bool = False,
              suffix: str = "") -> str:
    """Keep the rest of the line (line mode), or the block the completion starts, at
    block_indent's indentation: the first non-empty line indented less ends it.  At
    module level (indentation 0) a blank line ends it.  A line that begins inside a
    bracket the completion opened, or inside a string, goes on with its statement as it
    does for Python, so it ends nothing: a signature closed by `):` at
    the def's column, or a docstring's blank line at module level.  `python`: a clause
    at the indentation of the block's header that may go on the header's statement
    (goes_on: `except` after a `try:` body) goes on the block with its own body, unless
    the document already goes on that statement after the cursor (`suffix`): a `try:`
    body alone never parses, and an `except` the developer wrote is not written twice."""
    if line_mode:
        return completion.split("\n", 1)[0]
    lines = completion.split("\n")
    while lines and not lines[0].strip() and len(lines) > 1:
        lines = lines[1:]  # leading blank lines carry no code
    indent = block_indent(lines[0], prefix)
    statement, lead = open_statement(prefix, suffix, indent) if python else (None, None)
    base = -1 if lead is None else len(lead.expandtabs(4))
    kept = [lines[0]]
    for line, inside in zip(lines[1:], continued("\n".join(lines))):
        if not inside and line.strip() and indent_of(line.expandtabs(4)) < indent:
            if indent_of(line.expandtabs(4)) != base or not (statement := goes_on(statement, line)):
                break
        if not inside and not line.strip() and indent == 0:
            break
        kept.append(line)
    return "\n".join(kept).rstrip(" \t\n")


def block_indent(first_line: str, prefix: str) -> int:
    """The indentation of a block completion whose first line is `first_line`: the
    cursor's column plus that line's own indentation (so it is the same whether or not
    the editor indented the new line)."""
    return len(prefix.rsplit("\n", 1)[-1].expandtabs(4)) + indent_of(first_line.expandtabs(4))


# the clauses that may go on a compound statement at its header's indentation after the
# block of its header or last clause: after a try's `else` (one that follows `except`)
# only `finally`; the `else` of an `if` or a loop, and `finally`, end their statement
_GOES_ON = {"if": ("elif", "else"), "elif": ("elif", "else"), "for": ("else",),
            "while": ("else",), "try": ("except", "finally"),
            "except": ("except", "else", "finally"), "try-else": ("finally",)}
_FIRST_WORD = re.compile(r"[ \t]*(?:async[ \t]+)?([A-Za-z_]\w*)")


def statement_word(line: str) -> str | None:
    """The keyword (or name) the statement on a line begins with, `async` skipped."""
    m = _FIRST_WORD.match(line)
    return m.group(1) if m else None


def goes_on(statement: str | None, line: str) -> str | None:
    """When `line` begins a clause that may go on the compound statement whose header or
    last clause began with `statement` (`try`, `except`, `if`...; "try-else" for a try's
    `else`), what then began its last clause; None when it begins no such clause."""
    word = statement_word(line)
    if word not in _GOES_ON.get(statement, ()):
        return None
    return "try-else" if word == "else" and statement == "except" else word


def handler_lead(completion: str, prefix: str, suffix: str) -> str | None:
    """When a finished Python block completion is the body of a `try:` that has no
    handler, neither in the completion (cut_block keeps the clauses the model wrote) nor
    after the cursor: the try's indentation, as written, where its `except` goes; else
    None.  A try's body alone never parses."""
    lines = completion.split("\n")
    if not completion.strip():
        return None
    statement, lead = open_statement(prefix, suffix, block_indent(lines[0], prefix))
    if statement != "try":
        return None
    base = len(lead.expandtabs(4))
    for line, inside in zip(lines[1:], continued(completion)):
        if not inside and line.strip() and indent_of(line.expandtabs(4)) <= base:
            return None  # a clause, or the block ended: not a body alone
    return lead


def code_lines_ahead(text: str, at: int = 0):
    """(offset, line) for each line of text from offset `at` (a line start) that holds
    code: not blank, not only a comment.  Walks the text, never splits it whole."""
    while at < len(text):
        end = text.find("\n", at)
        end = len(text) if end < 0 else end
        if text[at:end].strip()[:1] not in ("", "#"):
            yield at, text[at:end]
        at = end + 1


def _code_lines_back(text: str):
    """The lines of text that hold code (code_lines_ahead's), last first."""
    end = len(text)
    while end >= 0:
        at = text.rfind("\n", 0, end) + 1
        if text[at:end].strip()[:1] not in ("", "#"):
            yield text[at:end]
        end = at - 1


def open_statement(prefix: str, suffix: str, indent: int) -> tuple[str | None, str | None]:
    """(what began the statement a block indented `indent` at the cursor belongs to, as
    goes_on reads it, and its header's indentation, as written): the header is the last
    line before the cursor's indented less.  (None, None) when there is none, or when the
    document already goes on that statement after the cursor: the first line after the
    cursor's indented less than the block is a clause at the header's indentation."""
    statement, lead = None, None
    back = _code_lines_back(prefix[:prefix.rfind("\n") + 1])  # not the cursor's own line
    for line in back:
        if indent_of(line.expandtabs(4)) < indent:
            statement, lead = statement_word(line), line[:indent_of(line)]
            break
    if lead is None:
        return None, None
    base = len(lead.expandtabs(4))
    if statement == "else":  # a try's else when the clause before it is an except
        for line in back:
            if indent_of(line.expandtabs(4)) > base:
                continue
            if indent_of(line.expandtabs(4)) == base and statement_word(line) == "except":
                statement = "try-else"
            break
    after = suffix.find("\n") + 1  # past the rest of the cursor's line
    for _, line in code_lines_ahead(suffix, after) if after else ():
        if indent_of(line.expandtabs(4)) < indent:
            if indent_of(line.expandtabs(4)) == base and statement_word(line) in CLAUSES:
                return None, None
            break
    return statement, lead


def continued(text: str) -> list[bool]:
    """For each line of text after the first: does it begin inside a bracket opened
    earlier in the text, or inside a string?  (Closers of brackets opened before the
    text are ignored: the text cannot see them.)"""
    return [in_string or top is not None for _, _, _, in_string, top in code_lines(text)][1:]


MAX_UNIT_LINES = 8     # the longest run of lines looked for as a repeated unit
LINE_COPIES = 3        # consecutive copies of a unit that count as a loop
PIECE_COPIES = 6       # consecutive copies of a short piece, running to the end
_PIECE_LOOP = re.compile(r"(.{1,12}?)\1{%d,}" % (PIECE_COPIES - 1), re.S)


def line_loop_end(text: str) -> int | None:
    """Where the first copy ends of a unit of 1..MAX_UNIT_LINES lines, with a letter or
    digit in it, that comes LINE_COPIES times in a row (identical, indentation included;
    code does not repeat a line, or a block, three times running), or None.  Only lines
    ended by a line break count, so a prefix of a stream can be checked."""
    lines = text.split("\n")[:-1]
    for i in range(len(lines)):
        for u in range(1, MAX_UNIT_LINES + 1):
            if i + LINE_COPIES * u > len(lines):
                break
            unit = lines[i:i + u]
            if not any(ch.isalnum() for line in unit for ch in line):
                continue
            if all(lines[i + k * u:i + (k + 1) * u] == unit for k in range(1, LINE_COPIES)):
                return len("\n".join(lines[:i + u]))
    return None


def piece_loop_end(text: str, copies: int = PIECE_COPIES) -> int | None:
    """Where the first copy ends of a short piece (1-12 characters, with a letter or
    digit) repeated `copies` times or more up to the end of the text, as in "0, 0, 0, ..."
    cut by the token limit, or None; a finished run ("[0, 0, 0, 0, 0, 0]") is code.
    `copies` is PIECE_COPIES or more (the pattern finds runs of PIECE_COPIES)."""
    body = text.rstrip()
    for m in _PIECE_LOOP.finditer(body):
        piece = m.group(1)
        if (any(ch.isalnum() for ch in piece) and piece.startswith(body[m.end():])
                and m.end() - m.start() >= copies * len(piece)):
            return m.start() + len(piece)
    return None


def cut_repetition(completion: str) -> str:
    """Keep the first copy of what the completion loops on (line_loop_end, else
    piece_loop_end); the separators left dangling after a kept piece (", ") go too."""
    end = line_loop_end(completion + "\n")
    if end is None:
        end = piece_loop_end(completion)
    return completion if end is None else completion[:end].rstrip(" ,;\t\n")


def trim_suffix_overlap(completion: str, suffix: str) -> str:
    """Drop the end of the completion that repeats the start of the suffix: whole lines
    first, then the rest of the cursor's line (e.g. a closing bracket already there)."""
    sfx_lines = [l for l in suffix.split("\n") if l.strip()]
    comp_lines = completion.split("\n")
    for n in range(min(len(sfx_lines), len(comp_lines) - 1), 0, -1):
        tail = [l.strip() for l in comp_lines[-n:]]
        if tail == [l.strip() for l in sfx_lines[:n]]:
            completion = "\n".join(comp_lines[:-n]).rstrip(" \t\n")
            break
    rest = suffix.split("\n", 1)[0].strip()
    if rest and completion.rstrip().endswith(rest):
        completion = completion.rstrip()[: -len(rest)]
    return completion


def code_chars(text: str, state: dict):
    """(index, character) for each character of text outside strings and comments, and
    for each line break, inside a string too (state["quote"] then names the string that
    goes on over it).  state["quote"] carries a string still open from one call to the
    next; a one-quote string ends at its line."""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        quote = state.get("quote")
        if quote:
            if c == "\\":
                if text.startswith("\n", i + 1):
                    yield i + 1, "\n"
                i += 2
                continue
            if text.startswith(quote, i):
                state["quote"] = None
                i += len(quote)
                continue
            if c == "\n":
                if len(quote) == 1:
                    state["quote"] = None
                yield i, c
            i += 1
            continue
        if c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if c in "'\"":
            triple = text[i:i + 3]
            state["quote"] = triple if triple in ('"""', "'''") else c
            i += len(state["quote"])
            continue
        yield i, c
        i += 1


def code_lines(code: str):
    """For each line of the code: (offset of its line break, or -1 for the first line,
    offset of its first non-blank character, its indentation, whether it begins inside
    a string, the innermost bracket open at its start as (offset, indentation of that
    bracket's line) or None).  Strings and comments are skipped (code_chars)."""
    stack: list[tuple[int, int]] = []
    state: dict = {}

    def line(brk: int):
        j = brk + 1
        while j < len(code) and code[j] in " \t":
            j += 1
        return (brk, j, len(code[brk + 1:j].expandtabs(8)), state.get("quote") is not None,
                stack[-1] if stack else None)

    current = line(-1)
    yield current
    for i, c in code_chars(code, state):
        if c in _OPENERS:
            stack.append((i, current[2]))
        elif c in _PAIRS and stack:
            stack.pop()
        elif c == "\n":
            current = line(i)
            yield current


def _scan(text: str, stack: list[str], state: dict) -> int | None:
    """Update a bracket stack over text, skipping strings and comments; returns the
    index of the first closer with no opener, or None."""
    for i, c in code_chars(text, state):
        if c in _OPENERS:
            stack.append(c)
        elif c in _PAIRS:
            if not stack or stack[-1] != _PAIRS[c]:
                return i
            stack.pop()
    return None


def balance_brackets(completion: str, prefix: str, suffix: str, line_mode: bool) -> str:
    stack: list[str] = []
    state: dict = {}
    statement_start = prefix.rfind("\n\n")
    _scan(prefix[statement_start + 1 if statement_start >= 0 else 0:], stack, state)
    stack_before = len(stack)
    bad = _scan(completion, stack, state)
    if bad is not None:
        completion = completion[:bad].rstrip(" ,")
        stack, state = [], {}
        _scan(prefix[statement_start + 1 if statement_start >= 0 else 0:] + completion, stack, state)
    if line_mode and len(stack) > stack_before and not state.get("quote"):
        rest = suffix.split("\n", 1)[0]
        opened = stack[stack_before:]
        needed = "".join(_OPENERS[c] for c in reversed(opened))
        if not rest.strip().startswith(needed[:1] or "\0"):
            completion += needed
    return completion


def drop_unfinished(completion: str) -> str:
    """Raw output the token limit stopped, without the statement it left unfinished: the
    last statement (its first line is not a continuation of the one before, see
    continued) goes when a statement comes before it, else the last line goes.  Output
    that ends with a line break outside brackets and strings ended its statement and
    stays.  Where the block ends before the last statement, the block cut removes that
    statement anyway, so this may run before it."""
    text = completion.rstrip(" \t")
    if text.endswith("\n") and not continued(text)[-1]:
        return completion
    text = text.rstrip()
    flags, lines = continued(text), text.split("\n")
    first = next((i for i, line in enumerate(lines) if line.strip()), len(lines))
    starts = [i for i, inside in enumerate(flags, 1)
              if i > first and not inside and lines[i].strip()]
    keep = starts[-1] if starts else len(lines) - 1
    return "\n".join(lines[:keep]) if keep > first else completion


def drop_open_end(completion: str, prefix: str, suffix: str) -> str:
    """A block completion cut back to its last line break where Python can stop: not
    inside a bracket or a string it opened, nor right after a block's header with no body
    (unless the code after the cursor is deeper than the header); a loop cut or the token
    limit can stop the model there.  A completion with no such line break, a lone
    statement left open, gets the quote and the closing brackets it opened when its last
    code can end an argument list (`f(a, b` -> `f(a, b)`, not `f(a +`); else it stays as
    drop_unfinished keeps it.  (The lexer is the syntax guard's, which knows indentation
    and headers; the completion alone is lexed first, and the text before the cursor only
    when that alone does not end whole.)"""
    from .syntaxguard import LexState, ends_whole, follows, lex, scan, whole

    if whole(completion, LexState(), None):
        return completion  # (a header at its end is judged below, at its real column)
    after = follows(suffix)
    base = lex(prefix)
    if whole(completion, base, after):
        return completion
    st, done, cut = base.copy(), 0, None  # one pass: the last line break that ends whole
    for end in (i for i, c in enumerate(completion) if c == "\n"):
        scan(completion[done:end + 1], st)
        done = end + 1
        if ends_whole(st, base, after) and completion[:end].strip():
            cut = end
    if cut is not None:
        return completion[:cut].rstrip()
    closed = _closed(completion.rstrip(" \t"), base)
    if closed is not None and whole(closed, base, after):
        return closed
    return completion


def _closed(text: str, base) -> str | None:
    """text with the string and the brackets it opened (after the state `base`) closed,
    or None when its last code cannot end an argument list or nothing is open."""
    from .syntaxguard import CLOSES, scan

    st = base.copy()
    scan(text, st)
    if st.comment or (base.quote and st.quote):
        return None
    if st.quote:
        text, st.last = text + st.quote, st.quote[-1]
    opened = st.stack[len(base.stack):]
    if not opened or not (st.last.isalnum() or st.last in "_'\")]},([{"):
        return None
    return text + "".join(CLOSES[b] for b, _ in reversed(opened))


# a top-level line that begins a statement code around the cursor can be parsed from
_ANCHOR = re.compile(r"^(?:@|(?:async[ \t]+)?def\b|class\b)", re.M)
WINDOW = 40_000  # characters on each side of the cursor keep_parsing may parse
CUTS = 16        # line breaks of a completion keep_parsing tries, from its end


def parse_window(prefix: str, suffix: str) -> tuple[str, str] | None:
    """The code around the cursor that Python can parse on its own: from the last line
    before the cursor that begins a top-level `def`, `class` or decorator (the text's
    start when there is none) to the end of the block the cursor is in (the first line
    after it indented less than the cursor's column), or to the next such top-level line
    (the text's end); None when either end lies more than WINDOW characters away."""
    far = max(len(prefix) - WINDOW, 0)
    if far:
        far = prefix.find("\n", far) + 1
        if not far:
            return None
    head = None
    for head in _ANCHOR.finditer(prefix, far):
        pass
    if head is None and far:
        return None
    tail = _ANCHOR.search(suffix, 1)  # (the suffix's own start is the cursor's line)
    end = tail.start() if tail else len(suffix)
    column = len(prefix.rsplit("\n", 1)[-1].expandtabs(4))
    at = suffix.find("\n") + 1 if column else 0
    for off, line in code_lines_ahead(suffix, at) if at else ():
        if off >= end:
            break
        if indent_of(line.expandtabs(4)) < column:  # the block the cursor is in ends here
            end = off
            break
    if end > WINDOW:
        return None
    return prefix[head.start() if head else 0:], suffix[:end]


def keep_parsing(completion: str, prefix: str, suffix: str) -> str:
    """A Python block completion that breaks the code around the cursor (parse_window)
    cut back to the longest start, ending at one of its line breaks, with which that code
    parses: `y = x + 1` / `if not in [""]:` keeps `y = x + 1`.  Left as it is when it
    parses, when none of its starts does, and when nothing can be told: Python's error
    lies above the cursor, or the code does not parse with a bare `pass` in place of the
    completion either (the developer's code after the cursor is half written)."""
    return _keep_parsing(completion, prefix, suffix)[0]


def breaks_code(completion: str, prefix: str, suffix: str) -> bool:
    """Does a finished Python block completion leave the code around the cursor
    (parse_window) unparsable, while that code parses with a bare `pass` in its place?
    A completion of only comments, or none, where a block needs its first statement
    does.  False when nothing can be told (no window, or the code is broken without
    the completion: the developer's code after the cursor is half written)."""
    return _keep_parsing(*(with_line_ending(t, "\n") for t in (completion, prefix, suffix)),
                         cut=False)[1] is True


def fits(completion: str, prefix: str, suffix: str) -> bool:
    """Does the code around the cursor (parse_window) parse with this finished Python
    block completion in place?  False when it does not, and when nothing can be told."""
    return _keep_parsing(*(with_line_ending(t, "\n") for t in (completion, prefix, suffix)),
                         cut=False)[1] is False


def _keep_parsing(completion: str, prefix: str, suffix: str,
                  cut: bool = True) -> tuple[str, bool | None]:
    """keep_parsing's text (the completion itself when not `cut`) and whether that text
    breaks the code: True as breaks_code tells it, False when the code around the cursor
    parses with it, None when nothing can be told (no window, or the code is broken
    with `pass` there too: the code after the cursor, or a header before it, is half
    written).  From the same parses: one when the completion parses, two when the code
    is broken with it (the second with `pass`), and one more for each start tried (CUTS
    at most)."""
    window = parse_window(prefix, suffix)
    if window is None:
        return completion, None
    head, tail = window
    from .analysis import error_line, parses

    line = error_line(head + completion + tail)
    if line is None:
        return completion, False
    if not parses(head + "pass" + tail):
        return completion, None  # broken without this completion too: the code around it
    if not cut or line <= head.count("\n") or not completion.strip():
        return completion, True
    breaks = [i for i, c in enumerate(completion) if c == "\n"][-CUTS:]
    for i in reversed(breaks):
        kept = completion[:i].rstrip()
        if kept.strip() and parses(head + kept + tail):
            return kept, False
    return completion, True


def finish(completion: str, prefix: str, suffix: str, document_ending: str = "\n",
           truncated: bool = False, python: bool = False) -> str:
    """The text an editor inserts at the cursor, from raw model output (see the module
    docstring for the steps).  `truncated`: the token limit (or the deadline) stopped the
    generation, so its last statement may be unfinished.  `python`: the document is
    Python source (step 5b lexes it as such)."""
    return finish_checked(completion, prefix, suffix, document_ending, truncated, python)[0]


def finish_checked(completion: str, prefix: str, suffix: str, document_ending: str = "\n",
                   truncated: bool = False, python: bool = False) -> tuple[str, bool | None]:
    """finish's text, and whether it breaks the code around the cursor, told by the
    parses keep_parsing makes anyway: True (breaks_code), False (the code parses with
    it) or None (nothing can be told; always for all but Python blocks)."""
    completion = with_line_ending(completion, "\n")
    prefix = with_line_ending(prefix, "\n")
    suffix = with_line_ending(suffix, "\n")
    line_mode = mode(prefix, suffix) == "line"
    if truncated and not line_mode:
        completion = drop_unfinished(completion)
    text = cut_repetition(cut_block(completion, prefix, line_mode, python, suffix))
    text = trim_suffix_overlap(text, suffix)
    text = balance_brackets(text, prefix, suffix, line_mode)
    broken = None
    if python and not line_mode:
        text, broken = _keep_parsing(drop_open_end(text, prefix, suffix), prefix, suffix)
    text = re.sub(r"[ \t]+$", "", text, flags=re.M) if "\n" in text else text.rstrip("\n")
    return with_line_ending(text, document_ending), broken
