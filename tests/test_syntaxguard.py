"""The syntax guard: its rules on text, on no valid code, on the real tokenizer, in the
sampler, and in the server's completions with the shipped model."""
import glob
import os

import numpy as np
import pytest

from cromwell_lsp.features.syntaxguard import LexState, SyntaxGuard, is_python, scan
from cromwell_lsp.model.sampling import GUARD_TRIES, Sampler, SamplingParams


def _first_break(text: str, since: int = 0):
    at = scan(text, LexState(exact=True), since=since)
    return None if at is None else text[at:]


@pytest.mark.parametrize("text, broken", [
    # what the shipped model writes after bare starts
    ("def f(xs):\n    for i in range(len(xs):\n        pass\n", ":\n        pass\n"),
    ("def f(x):\n    if not isinstance(x, (int, str):\n", ":\n"),
    ("while g(x:  # loop\n", ":  # loop\n"),
    ("    elif (a and f(b):\n", ":\n"),
    ("with open(f(p) as fh:\n", ":\n"),
    ("async for x in aiter(y:\n", ":\n"),
    # a closing bracket of the wrong kind, or with no open one
    ("x = foo(bar]\n", "]\n"),
    ("x = foo(bar))\n", ")\n"),
    ("x = [\n    1]]\n", "]\n"),
    ("y = {1: [2, 3)}\n", ")}\n"),
    ("z = (\n    [1, 2}\n", "}\n"),
    # a block's header followed by a line no deeper than it
    ("with f(t) as tf:\n    if not g(p):\n    if x:\n", "if x:\n"),
    ("def f():\nreturn 1\n", "return 1\n"),
    ("class A:\n    def g(self):  # note\n\n    # c\n    pass\n", "pass\n"),
    # a line break inside a one-quote string
    ('x = f("abc\n    def")\n', '\n    def")\n'),
    ("raise ValueError(f'the {x}\n')\n", "\n')\n"),
    # a compound statement's header with no colon
    ("if x and y\n    return\n", "\n    return\n"),
    ("def f(a, b)\n", "\n"),
    ("for i in range(3)  # loop\n", "\n"),
    ("try\n", "\n"),
    ("if (y := g(x)) is not None\n", "\n"),
])
def test_code_no_python_accepts_is_caught_where_it_breaks(text, broken):
    assert _first_break(text) == broken
    with pytest.raises(SyntaxError):
        compile(text + "\n" + " " * 8 + "pass\n", "<t>", "exec")


@pytest.mark.parametrize("text", [
    "if (n := len(a)) > 10:\n    pass\n",
    "while (line := f.readline()):\n    pass\n",
    "for k, v in sorted(d.items(), key=lambda kv: kv[1]):\n    pass\n",
    "if x[1:2] and y[::2]:\n    pass\n",
    "if x in {'a': 1, 'b': (2, 3)}:\n    pass\n",
    "def f(a: int = (1), *, b: 'C' = None) -> dict[str, int]:\n    pass\n",
    "class A(B, metaclass=M):\n    x: int = 0\n",
    "if f('(:'):  # a comment (: with brackets ]\n    pass\n",
    's = """\nif (a:\n"""\nt = "]"\n',
    "if a and \\\n        b(c):\n    pass\n",
    "x = f(\n    a,\n    b)\nif x:\n    pass\n",
    "print(f'{x:>3}', {y: z for y, z in w})\n",
    "match p:\n    case {'k': v}:\n        pass\n",
    "if x:\n\n  # a comment at any indentation\n    y = {\n'k':\n1}\nelse: pass\n",
    "def f():\n    '''doc\nat column 0'''\n",
    "if x: y = 1\nz = 2\n",
    's = "a \\\nb"\n',
    "if y := g(x):\n    pass\nelse: pass\n",
    "if a and \\\n        b:\n    pass\n",
    "async def f():\n    async with a as b: pass\ntry: pass\nfinally: pass\n",
    "class A(\n    B,\n):\n    pass\n",
    "lambda: 0\nmatch = 3\ncase = 4\nelse_ = 5\n",
])
def test_valid_code_is_never_caught(text):
    compile(text, "<t>", "exec")
    assert _first_break(text) is None


def test_no_valid_file_of_the_standard_library_is_caught():
    """Every compiling module of a sample of the standard library lexes with no break
    (the whole standard library and site-packages, 17,152 files, did when the guard was
    written)."""
    files = sorted(glob.glob(os.path.join(os.path.dirname(os.__file__), "*.py")))
    assert len(files) > 150
    for path in files:
        with open(path, encoding="utf-8") as fh:
            src = fh.read()
        try:
            compile(src, path, "exec")
        except SyntaxError:
            continue
        at = scan(src, LexState(exact=True), since=0)
        assert at is None, (path, src[max(0, at - 80):at + 20])


@pytest.mark.parametrize("text, then, broken", [
    # the line break after a header is not judged (spaces may follow it); the code is
    ("def f():\n    if x:", "\n   ", False),
    ("def f():\n    if x:\n   ", " return", True),
    ("def f():\n    if x:\n   ", "     return", False),
    ("def f():\n    if x:\n   ", " # a comment", False),
    ("def f():\n    y = 1\n   ", " return", False),
])
def test_code_after_a_header_must_be_deeper(text, then, broken):
    at = scan(text + then, LexState(), since=len(text))
    assert (at is not None) if broken else at is None


def test_only_text_past_since_is_judged():
    text = "x = foo(bar]\ny = (1, 2]"
    assert _first_break(text, since=text.index("\n")) == "]"
    assert _first_break(text, since=len(text)) is None


def test_is_python_by_name():
    assert is_python("file:///a/b.py") and is_python("file:///a/B.PYI")
    assert not is_python("file:///a/b.js") and not is_python("untitled:Untitled-1")


@pytest.fixture(scope="module")
def tok():
    from cromwell_lsp.model import DEFAULT_WEIGHTS
    from cromwell_lsp.model.tokenizer import Tokenizer

    return Tokenizer(DEFAULT_WEIGHTS.with_name("tokenizer.json"))


def _id(tok, text: str) -> int:
    ids = tok.encode(text)
    assert len(ids) == 1, (text, ids)
    return ids[0]


def test_the_guard_follows_tokens_and_refuses_the_header_colon(tok):
    g = SyntaxGuard(tok, "def f(xs):\n    ")
    for piece in [" for", " i", " in", " range", "(", "len", "(", "x", "s"]:
        assert not g.rejects(_id(tok, piece))
        g.advance(_id(tok, piece))
    assert g.rejects(_id(tok, "):"))
    assert not g.rejects(_id(tok, ")):"))
    assert not g.rejects(_id(tok, "))"))


def test_the_guard_refuses_a_body_left_at_its_headers_indentation(tok):
    g = SyntaxGuard(tok, "def f(x):\n    if x")
    for piece in [":", "\n   "]:
        assert not g.rejects(_id(tok, piece))
        g.advance(_id(tok, piece))
    assert g.rejects(_id(tok, " return")) and not g.rejects(_id(tok, "    "))


def test_real_code_token_by_token_is_never_refused(tok):
    """Modules of the standard library fed to the guard token by token: no token refused,
    and the lexer's state after each piece is the state after the whole text."""
    files = sorted(glob.glob(os.path.join(os.path.dirname(os.__file__), "*.py")))[:12]
    for path in files:
        with open(path, encoding="utf-8") as fh:
            src = fh.read()
        g = SyntaxGuard(tok, "")
        for tid in tok.encode(src):
            assert not g.rejects(tid), (path, g.text[-80:], tok.decode([tid]))
            g.advance(tid)
        whole = LexState(exact=True)
        scan(src, whole)
        assert g.now == whole and g.text == src


def test_the_text_before_the_cursor_sets_the_state(tok):
    # the bracket and the header are the developer's; the completion's colon is refused
    g = SyntaxGuard(tok, "def f(x):\n    if not isinstance(x, (int, str")
    assert g.rejects(_id(tok, "):"))
    assert not g.rejects(_id(tok, ")):"))
    # inside a string or a comment nothing is judged
    assert not SyntaxGuard(tok, 'if f("(').rejects(_id(tok, "):"))
    assert not SyntaxGuard(tok, "x = 1  # if f(").rejects(_id(tok, "):"))


def test_the_healed_lead_is_the_developers_and_never_refused(tok):
    # the developer typed the mismatch; the tokens re-spelling it must pass
    g = SyntaxGuard(tok, "x = [foo(bar", lead="]")
    assert not g.rejects(_id(tok, "]"))
    g.advance(_id(tok, "]"))
    # the lead is spelt (it closed foo's bracket): the model's own brackets are judged
    assert g.rejects(_id(tok, ")")) and not g.rejects(_id(tok, "]"))
    assert SyntaxGuard(tok, "x = [foo(bar").rejects(_id(tok, "]"))


class _Refuse:
    def __init__(self, refused):
        self.refused, self.taken = set(refused), []

    def rejects(self, tid):
        return tid in self.refused

    def advance(self, tid):
        self.taken.append(tid)


def test_the_sampler_takes_the_next_choice_a_guard_allows():
    logits = np.array([0.0, 5.0, 4.0, 3.0, 1.0])
    guard = _Refuse({1, 2})
    assert Sampler(guard=guard)(logits) == 3
    assert guard.taken == [3]
    for seed in range(20):
        s = Sampler(SamplingParams(temperature=1.0, seed=seed), guard=_Refuse({1, 2}))
        assert s(logits) not in (1, 2)


def test_the_models_choice_stands_when_the_guard_refuses_too_many():
    logits = np.arange(GUARD_TRIES + 4, dtype=np.float64)
    top = len(logits) - 1
    assert Sampler(guard=_Refuse(range(len(logits))))(logits) == top
    # GUARD_TRIES candidates are asked about: the last of them may be the one taken
    assert Sampler(guard=_Refuse(range(top - GUARD_TRIES + 2, top + 1)))(logits) == top - GUARD_TRIES + 1
    assert Sampler(guard=_Refuse(range(top - GUARD_TRIES + 1, top + 1)))(logits) == top


def _spelt(tok, ids) -> str:
    return b"".join(tok.vocab_bytes()[i] for i in ids).decode("utf-8")


@pytest.mark.parametrize("context, piece, mended", [
    # rule 2: the colon gets the brackets its header left open, innermost first
    ("def f(x):\n    if not isinstance(x, (int, str", "):", ")):"),
    ("def f(xs):\n    for i in sorted(range(len(xs", ":", "))):"),
    ("def f(xs):\n    while xs[g(1", ":", ")]:"),
    # rule 3: a body line at its header's depth or shallower goes one level deeper
    ("def f(x):\n    if x:\n    ", "return", "    return"),
    ("def f(x):\n    if x:\n   ", " return", "     return"),  # blanks in two tokens
    ("def f(x):\n    if x:\n  ", " return", "      return"),  # to column 8
    # ...and a clause that goes on the statement would close the empty block: `pass`
    ("def f(x):\n    if x:\n    ", "else", "    pass\n    else"),
    # rule 4: the string's quote before the line break; rule 5: the header's colon
    ('def f(x):\n    raise ValueError("no such', "\n   ", '"\n   '),
    ("def f(x):\n    if x and g(x)", "\n   ", ":\n   "),
    # rule 7: a closer with none open is left out
    ("def f(x):\n    return g(x)", "):", ":"),
])
def test_a_refused_token_is_mended_as_a_developer_would(tok, context, piece, mended):
    assert _spelt(tok, SyntaxGuard(tok, context).repair(_id(tok, piece))) == mended


def test_a_mend_breaks_no_rule_and_the_guard_follows_it(tok):
    ids = SyntaxGuard(tok, "def f(x):\n    if g(x").repair(_id(tok, ":"))
    g = SyntaxGuard(tok, "def f(x):\n    if g(x")
    for tid in ids:
        assert not g.rejects(tid)
        g.advance(tid)
    assert g.text == "):" and g.now.stack == []
    # a comment ends the line: a colon after it would be in the comment, so no mend
    assert SyntaxGuard(tok, "if x  # c").repair(_id(tok, "\n   ")) is None
    # code indented with tabs is not mended with spaces
    assert SyntaxGuard(tok, "def f(x):\n\tif x:\n\t").repair(_id(tok, "return")) is None


def test_a_closing_bracket_with_no_open_one_is_left_out(tok):
    g = SyntaxGuard(tok, "def f(x):\n    return g(x)")
    assert g.repair(_id(tok, ")")) == []  # nothing left: the next choice is taken
    # only when the lexer saw the whole text before the cursor: a longer one may have
    # opened the bracket before the part lexed
    from cromwell_lsp.features.syntaxguard import CONTEXT

    long = "x = 1\n" * (CONTEXT // 6 + 10) + "y = g(x)"
    assert SyntaxGuard(tok, "y = g(x)").rejects(_id(tok, ")"))
    assert not SyntaxGuard(tok, long).rejects(_id(tok, ")"))


def test_nothing_to_mend_gives_no_repair(tok):
    assert SyntaxGuard(tok, "x = [foo(bar").repair(_id(tok, "]")) is None  # wrong closer
    assert SyntaxGuard(tok, "def f(x):\n    if g(x").repair(_id(tok, ")")) is None  # no break
    assert SyntaxGuard(tok, "def f(x):\n    if x:\n        ").repair(_id(tok, "return")) is None


class _Mend(_Refuse):
    def __init__(self, refused, mended):
        super().__init__(refused)
        self.mended, self.asked = mended, []

    def repair(self, tid):
        self.asked.append(tid)
        return self.mended


def test_the_sampler_takes_a_guards_mend_token_by_token():
    logits = np.array([0.0, 5.0, 4.0, 3.0, 1.0])
    guard = _Mend({1}, [4, 0, 2])
    s = Sampler(guard=guard)
    # the mend's tokens come in turn, whatever the logits say; then choosing resumes
    assert [s(logits) for _ in range(3)] == [4, 0, 2]
    assert guard.asked == [1] and guard.taken == [4, 0, 2]
    guard.refused, guard.mended = set(), None
    assert s(logits) == 1
    # no mend: the next choice, as before
    assert Sampler(guard=_Mend({1, 2}, None))(logits) == 3


class _Spelling:
    active = True

    def allowed(self):
        return np.arange(5)

    def advance(self, tid):
        pass


def test_no_mend_while_the_healed_lead_is_being_spelt():
    logits = np.array([0.0, 5.0, 4.0, 3.0, 1.0])
    guard = _Mend({1}, [4, 0])
    s = Sampler(guard=guard, constraint=_Spelling())
    assert s(logits) == 2 and guard.asked == [] and not s.forced


def test_the_end_right_after_a_header_is_refused_unless_a_body_follows(tok):
    from cromwell_lsp.features.syntaxguard import follows

    end = tok.special("endoftext")
    assert SyntaxGuard(tok, "def f(x):\n    if x:\n", after="").rejects(end)
    assert SyntaxGuard(tok, "def f(x):\n    if x:\n        ", after="\n    return 1\n").rejects(end)
    # the text after the cursor holds the body, or nothing is known of it: the end stands
    assert not SyntaxGuard(tok, "def f(x):\n    if x:\n", after="        y()\n").rejects(end)
    assert not SyntaxGuard(tok, "def f(x):\n    if x:\n", after="\r\n  # c\r\n\r\n        y()\r\n").rejects(end)
    assert not SyntaxGuard(tok, "def f(x):\n    if x:\n").rejects(end)
    # no header pending: the end stands
    assert not SyntaxGuard(tok, "def f(x):\n    return x\n", after="").rejects(end)
    assert not SyntaxGuard(tok, "def f(x):\n    return x\n    ", after="").rejects(end)
    assert follows("  foo()\n") is None and follows("\n\n") == -1 and follows("\n\t\tx\n") == 2


def test_the_lexer_cache_follows_typing_and_lexes_anew_after_an_edit_above():
    from cromwell_lsp.features.syntaxguard import CONTEXT, LexCache, lex

    with open(os.path.join(os.path.dirname(os.__file__), "argparse.py"), encoding="utf-8") as fh:
        src = fh.read()[:3 * CONTEXT]
    cache = LexCache()
    # typed a piece at a time past CONTEXT: each state is the whole text's, lexed exactly
    for end in range(0, len(src), 997):
        want = LexState(exact=True)
        scan(src[:end], want)
        assert cache.state("a.py", src[:end]) == want
    # an edit above the cursor: lexed anew from the window, as without the cache
    edited = "x = (\n" + src[:CONTEXT // 2]
    assert cache.state("a.py", edited) == lex(edited)
    # asked about a text the document does not go on from: the same state, the head kept
    head = cache._heads["a.py"]
    assert cache.state("a.py", edited + "y = 1\n    ", remember=False) == lex(edited + "y = 1\n    ")
    assert cache._heads["a.py"] is head
    # documents are kept apart, and forgotten
    assert cache.state("b.py", "if f(") == lex("if f(")
    cache.forget("a.py")
    assert "a.py" not in cache._heads and "b.py" in cache._heads


def test_the_completer_keeps_the_guards_lexer_state_per_document():
    from cromwell_lsp.features.completion import Completer
    from cromwell_lsp.features.session import Sessions
    from cromwell_lsp.model import CromwellVLJEPA
    from cromwell_lsp.settings import Settings

    model = CromwellVLJEPA.load()
    completer = Completer(model, Sessions(model.new_cache, budget_bytes=64 << 20))
    text = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    "
    completer.complete("file:///m.py", text, len(text), Settings(max_tokens=8))
    completer.complete("file:///m.txt", text, len(text), Settings(max_tokens=8))
    assert list(completer._lexed._heads) == ["file:///m.py"]  # Python documents only
    # a header finished mid-line gets its body after text the editor has not typed: the
    # state kept is still the document's, so the next keystroke lexes on from it
    typed = text + "return a - b\n\n\nfor i in range("
    got = completer.complete("file:///m.py", typed, len(typed), Settings(max_tokens=32))
    assert "\n" in got.text  # the line, then the body
    assert typed.startswith(completer._lexed._heads["file:///m.py"][0])
    completer.forget("file:///m.py")
    assert not completer._lexed._heads
