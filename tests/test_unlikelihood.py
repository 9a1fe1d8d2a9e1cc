"""Unlikelihood against the model's own loops: what counts as a repeat (the loops the
bare-start evaluation found, and not ordinary code), which tokens carry the loss, that
its gradient lowers exactly the marked tokens' probability, and that a run with these
steps logs them and still resumes exactly."""
import json
import random

import pytest

torch = pytest.importorskip("torch")

from cromwell_lsp.training import unlikelihood as U  # noqa: E402
from tests.test_training import _straight_and_resumed  # noqa: E402

# completions of bare starts by the step-27,729 model (docs/bench/eval-tiny-27729.json)
LOOPS = [
    ("def __init__(self, other):\n        self.other = other\n        self.right = other\n"
     "        self.right = other\n        self.right = other\n",
     # the repeated lines, and the run "\n        self.right = other" (27 characters)
     # from its third copy, merged
     ["self.right = other\n        self.right = other"]),
    ("return a.as_real(a, b, b, b, b, b, b)\n", [", b, b, b, b"]),
    ("return a.as_real_to_to_to_to_to_\n", ["_to_to_to"]),
    ("return [\n        'test'\n        'test'\n        'test'\n", ["'test'\n        'test'"]),
    ("self.x, self.x, self.x, self.x, self.", ["self.x, self.x, "]),
    ("return f(self._get_args(self._get_args(self._get_args(", ["(self._get_args"]),
    ("if x:\n        # if we have a line\n        if y:\n            # if we have a line\n",
     ["# if we have a line"]),
    ("if value in key:\n        value = value.replace(value)\n"
     "        value = value.replace(value)\n", ["value = value.replace(value)"]),
    # step 29,250 (docs/bench/eval-tiny-29250.json): a 27-character piece
    ("if not isinstance(i, int) and not isinstance(i, int) and not isinstance(i, int) and"
     " not isinstance(i, int):\n", [" not isinstance(i, int) and"]),
]
CODE = [
    "self.x = x\n        self.y = y\n        self.z = z\n",
    "if a:\n        return None\n    else:\n        return None\n",
    "for i in range(10):\n    for j in range(10):\n        pass\n    pass\n",
    "print('=' * 40)\nline = '----'\nsep = '===='\n",
    'def f():\n    """\n    Text.\n    """\n    try:\n        g()\n    except E:\n'
    '        raise\n    try:\n        h()\n    except E:\n        raise\n',
    "x = (1, 2)\ny = [a, b, c]\nz = {k: v}\n",
    "grid = [[0, 0], [0, 0], [0, 0]]\n",
]


@pytest.mark.parametrize("text, repeats", LOOPS)
def test_loops_are_marked_after_their_first_copies(text, repeats):
    assert [text[a:b] for a, b in U.repeat_spans(text)] == repeats


@pytest.mark.parametrize("text", CODE)
def test_ordinary_code_is_not_marked(text):
    assert U.repeat_spans(text) == []


HEADER = "def test_is_dtype(self, dtype):\n    "
EMPTY = [  # (start, completion, stopped) -> the completion's piece that ends the empty body
    (HEADER, "", True, ""),  # closed at once: the stop token (past the text)
    (HEADER, "# GH#4249\n", True, ""),
    ("@pytest.mark.parametrize('i', [1])\ndef test_x(i):\n    # GH#35331\n\n    ",
     "# GH#4249\n", True, ""),
    (HEADER, "# check it\n\ndef test_other(self):\n    pass\n", True, "\nd"),
    ("for i in items:\n    ", "\nx = 1\n", True, "\nx"),
]
FULL = [
    (HEADER, "return dtype\n", True),
    (HEADER, "# GH#4249\n    assert dtype\n\ndef g():\n", True),
    (HEADER, "# a comment the token limit cut", False),  # not ended: no mark
    ("for i in range(", "10):\n    pass\n", True),  # a point inside the header's line
    ("class C:\n    ", "x = 1\n", True),
]


@pytest.mark.parametrize("start, completion, stopped, piece", EMPTY)
def test_a_block_closed_without_a_statement_is_marked_where_it_ends(start, completion,
                                                                     stopped, piece):
    a, b = U.empty_body_end(start, completion, stopped)
    assert completion[a:b] == piece
    if not piece:
        assert (a, b) == (len(completion), len(completion) + 1)


@pytest.mark.parametrize("start, completion, stopped", FULL)
def test_a_body_with_a_statement_or_not_yet_ended_is_not_marked(start, completion, stopped):
    assert U.empty_body_end(start, completion, stopped) is None


TRIVIAL = [  # (start, completion, stopped) -> the marked statement, or None
    ("def fibonacci(n):\n    ", "return\n", True, "return"),
    ("@cache\ndef f(n):\n    ", "# nothing yet\n    pass\n\ndef g():\n", True, "pass"),
    ("for p in plist:\n    ", "return None\n", True, "return None"),
    ("if q <= 0:\n    ", "return\n", True, None),  # an early return: real code
    ("def f(n):\n    ", "return n\n", True, None),
    ("def f(n):\n    ", "return\n    x = 1\n", True, None),  # not its only statement
    ("def f(n):\n    ", "return", False, None),  # the token limit cut it: not yet closed
    ("def f(", "n):\n    return\n", True, None),  # inside the header's first line
    # a statement going on inside a bracket is one statement, its lines at column 0 no end
    ("def f(n):\n    ", "return (\nNone)\n", True, None),
    ("def f(n):\n    ", "x = [\n]\n    return\n", True, None),
    ("class A:\n    ", 'pass\n    """\ncolumn 0\n"""\n', True, None),
]


@pytest.mark.parametrize("start, completion, stopped, statement", TRIVIAL)
def test_a_body_of_only_return_or_pass_is_marked_outside_an_if(start, completion, stopped,
                                                                  statement):
    span = U.trivial_body(start, completion, stopped)
    assert (completion[span[0]:span[1]] if span else None) == statement


def test_a_misaligned_bracket_line_is_marked_from_its_line_break():
    """`def __init__(self,` then `):` at the def's column: the line break that chose the
    column and the closer are marked, in the completion's offsets; a line the start holds
    never is, and a formatter's layout is not marked."""
    start = "class A:\n    "
    comp = "def __init__(self,\n    ):\n        self.x = 1\n"
    (a, b), = U.misaligned_in(start, comp)
    assert comp[a:b] == "\n    )"
    (a2, b2), = U.misaligned_in(start, comp, offset=3)
    assert (a2, b2) == (a + 3, b + 3)
    assert U.misaligned_in("class A:\n    def f(self,\n    ):\n        ", "return 1\n") == []
    assert U.misaligned_in(start, "def __init__(\n        self,\n    ):\n        pass\n") == []


@pytest.mark.parametrize("start, comp, marked", [
    # what step 34,250 wrote: the header's colon where the bracket should have closed
    ("def f(xs):\n    ", "for i in range(len(xs):\n        pass\n", [":"]),
    ("def f(x):\n    ", "if not isinstance(x, (int, str):\n        return x\n", [":"]),
    ("def f(x):\n    ", "y = 1\n    while g(x:  # loop\n        pass\n", [":"]),
    # code that parses: a slice, a dict, string annotations, a lambda, a comment's colon
    ("def f(c):\n    ", "for a in c.run[\n        1:\n    ]:\n        pass\n", []),
    ("def f(x):\n    ", "if x in {\n        'a':\n        1}:\n        pass\n", []),
    ("class A:\n    ", 'def g(\n        self, c: "C", o: "O"\n    ) -> "R":\n        pass\n', []),
    ("def f(x):\n    ", "y = sorted(x, key=lambda v:\n               v[0])\n", []),
    ("def f(x):\n    ", "if g(x,  # note:\n      x):\n        pass\n", []),
    ("def f(x):\n    ", 's = "if (a:"\n    return s\n', []),
    # a header the start holds is the developer's, never marked
    ("for i in range(len(x):\n    ", "pass\n", []),
])
def test_a_header_colon_inside_an_open_bracket_is_marked(start, comp, marked):
    spans = U.open_header_colons(start, comp)
    assert [comp[a:b] for a, b in spans] == marked
    assert U.open_header_colons(start, comp, offset=5) == [(a + 5, b + 5) for a, b in spans]
    for a, b in spans:  # every marked completion fails to parse
        with pytest.raises(SyntaxError):
            compile(start + comp, "<completion>", "exec")


def test_a_header_colon_mark_leaves_the_line_break_token_alone():
    """The shipped tokenizer writes a line break and the next line's indentation as one
    token, which ends every correct header; only the token holding the colon is marked."""
    from tokenizers import Tokenizer
    from cromwell_lsp.model import DEFAULT_WEIGHTS
    tok = Tokenizer.from_file(str(DEFAULT_WEIGHTS.with_name("tokenizer.json")))
    start, comp = "def f(x):\n    ", "if not isinstance(x, (int, str):\n        return x\n"
    pieces = [tok.decode([i]) for i in tok.encode(comp).ids]
    assert "".join(pieces) == comp
    flags = U.marked_tokens(pieces, U.open_header_colons(start, comp))
    assert [p for p, f in zip(pieces, flags) if f] == ["):"]


def test_marked_tokens_are_those_overlapping_a_repeat():
    pieces = ["x", " = x", "\n", "x", " = x", "\n", ""]
    spans = U.repeat_spans("".join(pieces))
    assert spans == [(6, 11)]
    assert U.marked_tokens(pieces, spans) == [False, False, False, True, True, False, False]


def test_the_gradient_demotes_the_marked_tokens_and_only_them():
    """One SGD step on the loss of a real (random-weight) twin: each marked token's lead
    over the best other token shrinks; the loss is the mean hinge over the marked tokens,
    and a token already `margin` below the best other costs nothing."""
    from cromwell_lsp.model.config import preset
    from cromwell_lsp.training.model import random_init

    cfg = preset("tiny").replace(vocab_size=64, max_seq_len=32)
    model = random_init(cfg, 0)
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))

    def leads():  # logit of the token at t minus the best other logit, per position
        with torch.no_grad():
            lg = model(ids[:, :-1], jepa=False).logits.float()
        own = lg.gather(-1, ids[:, 1:, None])[..., 0]
        return own - lg.scatter(-1, ids[:, 1:, None], float("-inf")).amax(-1)

    # make the marked tokens the model's greedy choice, as a loop's are
    ids[0, 6] = model(ids[:, :-1], jepa=False).logits[0, 5].argmax()
    ids[1, 9] = model(ids[:, :-1], jepa=False).logits[1, 8].argmax()
    before = leads()
    marks = torch.zeros(2, 12)
    marks[0, 6] = marks[1, 9] = 1.0
    m = marks[:, 1:] > 0
    assert bool((before[m] > 0).all())
    loss = U.unlikelihood_loss(model(ids[:, :-1], jepa=False).logits, ids, marks, margin=1.0)
    assert loss.item() == pytest.approx((before[m] + 1.0).clamp_min(0).mean().item(), rel=1e-4)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 0.05 * p.grad
    after = leads()
    assert bool((after[m] < before[m]).all())
    far_below = torch.full((2, 11, 64), 0.0)
    far_below[..., 0] = 5.0  # token 0 leads everywhere; the marked tokens are 5 nats down
    ids2 = torch.ones(2, 12, dtype=torch.long)
    assert U.unlikelihood_loss(far_below, ids2, marks, margin=1.0).item() == 0.0


def test_a_run_with_unlikelihood_steps_logs_them_and_resumes_exactly(small_tokenizer, tmp_path):
    tok, _ = small_tokenizer
    kw = dict(image_every=0, ul_every=2, ul_batch=3, ul_tokens=12)
    _straight_and_resumed(tmp_path, tok, **kw)
    rows = [json.loads(line) for line in open(tmp_path / "a" / "log.jsonl")]
    logged = [r for r in rows if "ul_marked" in r]
    # a 6-step model loops on nearly every start: the unlikelihood term is there and positive
    assert logged and all(r["ul_marked"] > 0 and r["ul"] > 0 for r in logged)


def test_ul_prompts_are_healed_as_the_server_heals_them(small_tokenizer):
    """The starts are prompted as the editor's completion prompts them (the last token
    taken back and spelled again first), so these steps push on the loops the server's
    completions fall into, not on those of a prompt it never sends."""
    from cromwell_lsp.features.completion import healed_prompt
    from cromwell_lsp.model import prompts
    from cromwell_lsp.model.healing import LeadConstraint, heal_prompt
    from cromwell_lsp.model.config import preset
    from cromwell_lsp.training.model import CromwellTwin

    tok, _ = small_tokenizer
    start = "def add(a, b):\n    "
    ids, lead = heal_prompt(prompts.encode(prompts.fim_spm(start, ""), tok, None)[0], tok)
    assert (ids, lead) == healed_prompt(start, "", tok, 10_000) and lead.strip() == ""
    torch.manual_seed(0)
    twin = CromwellTwin(preset("tiny").replace(vocab_size=tok.vocab_size, max_seq_len=64))
    stop = tok.special("endoftext")
    out, P, _ = U.greedy(twin, [ids], 6, stop, [LeadConstraint(tok, lead)])
    text = tok.decode([t for t in out[0, P:].tolist() if t != stop])
    assert text.startswith(lead)  # an untrained twin spells the lead only when made to


def test_greedy_completes_a_padded_row_as_it_would_complete_it_alone(small_tokenizer):
    """A batch's short prompts are left-padded; the padding is masked out of attention,
    so each row's logits and greedy tokens are those of its prompt alone.  Unmasked, two
    dozen end-of-text tokens before `try:` turned H3's completion into garbage."""
    from cromwell_lsp.model.config import preset
    from cromwell_lsp.training.model import CromwellTwin

    tok, _ = small_tokenizer
    torch.manual_seed(0)
    twin = CromwellTwin(preset("tiny").replace(vocab_size=tok.vocab_size, max_seq_len=128)).eval()
    stop = tok.special("endoftext")
    short = tok.encode("try:\n    ")
    long = tok.encode("if attn_output.size() != (bsz, self.num_heads, tgt_len):\n        x = 1\n    ")
    assert len(long) > len(short) + 10
    both, P, keep = U.greedy(twin, [short, long], 8, stop)
    alone, P1, _ = U.greedy(twin, [short], 8, stop)
    pad = P - len(short)
    assert keep[0, :pad].tolist() == [False] * pad and bool(keep[0, pad:].all()) and bool(keep[1].all())

    def until_stop(row):
        return row[:row.index(stop)] if stop in row else row
    assert until_stop(both[0, P:].tolist()) == until_stop(alone[0, P1:].tolist())
    with torch.no_grad():
        masked = twin(both, jepa=False, keep=keep).logits[0, pad:]
        by_itself = twin(both[:1, pad:], jepa=False).logits[0]
        seen = twin(both, jepa=False).logits[0, pad:]
    assert torch.allclose(masked, by_itself, atol=1e-4)
    assert not torch.allclose(seen, by_itself, atol=1e-2)  # unmasked, the padding is read


def test_starts_are_bare_block_starts_from_the_files():
    texts = [("stdlib/x.py", "def f(a):\n    b = a + 1\n    return b\n\n\n"
                             "class C:\n    def m(self):\n        return 1\n")]
    blocks = ["def f(a):\n    b = a + 1\n", "class C:\n    def m(self):\n",
              "def m(self):\n    return 1\n"]  # the method, dedented
    starts = U.draw_starts(texts, random.Random(0), 12)
    assert len(starts) == 12
    for s in starts:  # a block's header (or part of its first line), never its answer
        assert any(b.startswith(s) for b in blocks) and "return" not in s, s
    assert any(s.endswith(":\n    ") for s in starts)  # mostly: the body's indentation too


def test_ul_rules_choose_the_marks_and_a_misspelt_rule_is_refused(small_tokenizer):
    from cromwell_lsp.model.config import preset
    from cromwell_lsp.training.model import CromwellTwin

    assert U.parse_rules("") == U.DEFAULT_RULES == frozenset(U.RULES) - {"unfinished"}
    assert U.parse_rules("unfinished") == {"unfinished"}
    assert U.parse_rules(" repeat , trivial ") == {"repeat", "trivial"}
    with pytest.raises(ValueError, match="header_colons.*choose from"):
        U.parse_rules("repeat,header_colons")
    tok, _ = small_tokenizer
    torch.manual_seed(0)
    twin = CromwellTwin(preset("tiny").replace(vocab_size=tok.vocab_size, max_seq_len=96))
    texts = [("stdlib/x.py", "def f(a):\n    b = a + 1\n    return b\n\n\n"
                             "class C:\n    def m(self):\n        return 1\n")]

    def marks(rules):
        ids, m, share, _ = U.unlikelihood_batch(twin, tok, texts, random.Random(3), 4, 24, rules)
        return ids, m, share

    ids_all, m_all, share_all = marks(frozenset(U.RULES))
    ids_rep, m_rep, share_rep = marks(frozenset({"repeat"}))
    assert m_all is not None and share_all > 0  # an untrained twin loops on these starts
    assert torch.equal(ids_all, ids_rep)  # the same greedy completions, fewer marks
    assert bool((m_rep <= m_all).all()) and share_rep <= share_all
    assert marks(frozenset())[:2] == (None, None)  # no rule, nothing marked


def test_unfinished_marks_the_stop_where_no_code_can_end_and_a_try_left_without_handler():
    # what every shipped model wrote for a bare `try:` (the one fixed start it failed):
    # a body, then the stop token -> the stop token, one place past the completion
    body = "if not is_torch_available():\n        return False\n"
    assert U.unfinished_ends("try:\n    ", body, True) == [(len(body), len(body) + 1)]
    assert U.unfinished_ends("try:\n    ", body, False) == []  # the token limit cut it
    # a bracket or a triple-quoted string left open, a header with no body
    for start, completion in (("for i in range(", "len(items)"),
                              ("def f(a):\n    ", 'x = g(a,\n          b'),
                              ("def f(a):\n    ", '"""Return the\n    '),
                              ("def f(a):\n    ", "if a:\n")):
        assert U.unfinished_ends(start, completion, True) == [(len(completion),
                                                               len(completion) + 1)], completion
    # back at the try's column with no handler: the first character of that statement
    completion = "x = load()\ny = 2\n"
    assert U.unfinished_ends("try:\n    ", completion, True) == [(11, 12)]
    assert completion[11] == "y"
    completion = "try:\n        x = 1\n    return x\n"  # inside a def
    (a, b), = U.unfinished_ends("def f():\n    ", completion, True)
    assert completion[a:b] == "r" and completion[a - 4:a] == "    "
    # finished code, and code wrong in other ways (other marks' business), go unmarked
    for start, completion in (("try:\n    ", "import numpy\nexcept ImportError:\n    numpy = None\n"),
                              ("try:\n    ", "x = 1\nfinally:\n    close()\n"),
                              ("def f(a):\n    ", "return a + 1\n"),
                              ("def f(a):\n    ", "return a)\n"),
                              ("def f(a):\n    ", "s = '\\d'\n"),  # a SyntaxWarning, no mark
                              ("def f(a):\n    ", "return '\x00'\n"),
                              ("x = 1\n", "\x00"),
                              ("try:\n    ", "x = 1\ry = 2\n")):  # no line to point at
        assert U.unfinished_ends(start, completion, True) == [], completion


def test_ul_kinds_draws_the_steps_starts_from_those_blocks_only(small_tokenizer, tmp_path):
    from cromwell_lsp.model.config import preset
    from cromwell_lsp.training.model import CromwellTwin
    from cromwell_lsp.training.owncompletions import block_kind
    from cromwell_lsp.training.train import TrainConfig, Trainer

    texts = [("x.py", "def f(a):\n    b = a + 1\n    return b\n\n\n"
                      "try:\n    import numpy\nexcept ImportError:\n    numpy = None\n")]
    starts = U.draw_starts(texts, random.Random(2), 10, kinds=frozenset({"try"}))
    assert len(starts) == 10 and all(s.startswith("try") for s in starts)
    assert {block_kind(s + "\n") for s in U.draw_starts(texts, random.Random(2), 10)} >= {"def"}
    # --ul-kinds-share: that share from the kinds, the rest from any block; 1 draws as before
    mixed = U.draw_kind_starts(texts, random.Random(2), 10, frozenset({"try"}), 0.3)
    assert len(mixed) == 10 and all(s.startswith("try") for s in mixed[:3])
    assert any(s.startswith("def") for s in mixed[3:]), mixed
    assert U.draw_kind_starts(texts, random.Random(2), 10, frozenset({"try"}), 1.0) == starts
    tok, _ = small_tokenizer
    torch.manual_seed(0)
    twin = CromwellTwin(preset("tiny").replace(vocab_size=tok.vocab_size, max_seq_len=96))
    for kinds, header in (({"def"}, "def f(a"), ({"try"}, "try")):
        ids, marks, _, _ = U.unlikelihood_batch(twin, tok, texts, random.Random(3), 3, 24,
                                             frozenset(U.RULES), frozenset(kinds))
        assert ids is not None and ids.shape[0] == 3 and marks.any()  # the untrained twin loops
        rows = [tok.decode(r) for r in ids.tolist()]
        assert all(header in r for r in rows), rows  # each SPM prompt holds its start
    c = TrainConfig(model="tiny", corpus=str(tmp_path), tokenizer=str(tmp_path / "t.json"),
                    out=str(tmp_path / "o"), ul_kinds="try,elif")
    with pytest.raises(ValueError, match="--ul-kinds takes block statements"):
        Trainer(c, log=lambda *a: None)
    c = TrainConfig(model="tiny", corpus=str(tmp_path), tokenizer=str(tmp_path / "t.json"),
                    out=str(tmp_path / "o"), ul_kinds="try", ul_kinds_share=1.5)
    with pytest.raises(ValueError, match="--ul-kinds-share must be between 0 and 1"):
        Trainer(c, log=lambda *a: None)


def test_a_run_refuses_an_unknown_ul_rule_before_it_trains(tmp_path):
    from cromwell_lsp.training.train import TrainConfig, Trainer

    c = TrainConfig(model="tiny", corpus=str(tmp_path), tokenizer=str(tmp_path / "tokenizer.json"),
                    out=str(tmp_path / "o"),
                    ul_rules="repeat,loops")
    with pytest.raises(ValueError, match="unknown unlikelihood rule"):
        Trainer(c, log=lambda *a: None)
