"""The model's own working completions (`cromwell train own`): which completions count as
working (the eval's tests, cut at the block's end), which one is kept, that the starts are
training files' bare starts, that the packaged model really completes them through the
engine, and that a run trains on them (the "own" task) and still resumes exactly."""
import json
import random

import pytest

from cromwell_lsp.training import owncompletions as O
from cromwell_lsp.training import tasks
from cromwell_lsp.training.corpus import read_jsonl


@pytest.mark.parametrize("start,text,kept", [
    # works: cut at the end of its block, the rest (a new top-level statement) dropped
    ("def add(a, b):\n    ", "return a + b\n\n\nprint(add(1, 2))\n", "return a + b\n"),
    ("for i in range(", "10):\n    total += i\n", "10):\n    total += i\n"),
    ("class Point:\n    def __init__(self, x, y):\n        ",
     "self.x = x\n        self.y = y\n", "self.x = x\n        self.y = y\n"),
    # does not parse
    ("def add(a, b):\n    ", "return a +\n", None),
    ("def f(x):\n    ", "if x\n        return 1\n", None),
    # loops: a line three times
    ("def f(x):\n    ", "x = x\n    x = x\n    x = x\n", None),
    # does nothing
    ("def fibonacci(n):\n    ", "return\n", None),
    ("def f(x):\n    ", "pass\n", None),
    # nothing at all
    ("def f(x):\n    ", "\n\n", None),
    # parses, but lays out a bracket as no formatter would: what rounds 1-4 kept more of
    ("def ", "__init__(self,\n):\n    self.x = 1\n", None),
    ("def ", "__init__(\n    self,\n):\n    self.x = 1\n",
     "__init__(\n    self,\n):\n    self.x = 1\n"),
])
def test_works_is_the_evals_three_tests_on_the_cut_completion(start, text, kept):
    assert O.works(start, text) == kept


def test_load_drops_misaligned_rows_written_before_works_refused_them(tmp_path):
    rows = [{"path": "a.py", "start": "def ", "completion": "f(self,\n):\n    return 1\n",
             "ratio": 0.5},
            {"path": "a.py", "start": "def ", "completion": "f(self):\n    return 1\n",
             "ratio": 0.5},
            {"path": "a.py", "start": "def ", "completion": "g(self):\n    return 2\n",
             "ratio": 0.1}]
    path = tmp_path / "own.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert O.load(path) == [("def ", "f(self):\n    return 1\n"), ("def ", "g(self):\n    return 2\n")]
    assert O.load(path, min_ratio=0.2) == [("def ", "f(self):\n    return 1\n")]


def test_nearest_keeps_the_completion_most_like_the_real_block():
    rest = "if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n"
    cands = ["return 1\n", "if n < 2:\n        return n\n    return n\n", "x = [n]\n"]
    comp, ratio = O.nearest(rest, cands)
    assert comp == cands[1] and 0.5 < ratio < 1.0
    assert O.nearest(rest, [rest, "x\n"]) == (rest, 1.0)
    assert O.nearest(rest, []) is None


def test_cuts_are_bare_starts_and_the_real_rest_of_training_blocks():
    texts = [("stdlib/x.py", "def f(a):\n    \"\"\"Doc.\"\"\"\n    b = a + 1\n    return b\n\n\n"
                             "class C:\n    def m(self):\n        return 1\n")]
    blocks = ["def f(a):\n    b = a + 1\n    return b\n",  # its docstring dropped
              "class C:\n    def m(self):\n        return 1\n", "def m(self):\n    return 1\n"]
    cuts = O.draw_cuts(texts, random.Random(0), 12)
    assert len(cuts) == 12
    for path, start, rest in cuts:
        assert path == "stdlib/x.py" and start and rest and start + rest in blocks
    # the same draws as the unlikelihood steps' starts, from the same seed
    from cromwell_lsp.training import unlikelihood as U
    assert U.draw_starts(texts, random.Random(0), 12) == [s for _, s, _ in cuts]


def test_kinds_draws_only_blocks_of_those_statements(tmp_path):
    texts = [("x.py", "@dataclass\nclass P:\n    x: int\n    y: int\n\n\n"
                      "def f(a):\n    b = a + 1\n    return b\n\n\n"
                      "try:\n    import numpy\nexcept ImportError:\n    numpy = None\n")]
    assert [O.block_kind(b) for b in tasks.block_snippets(texts[0][1])] == ["class", "def", "try"]
    for kinds in ({"class"}, {"try"}, {"class", "def"}):
        cuts = O.draw_cuts(texts, random.Random(1), 20, kinds=frozenset(kinds))
        assert len(cuts) == 20
        assert {O.block_kind(start + rest) for _, start, rest in cuts} == kinds
    # a file with no block of the kind asked gives nothing, and `train own` says so
    assert O.draw_cuts(texts, random.Random(1), 5, kinds=frozenset({"while"})) == []
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "train.jsonl").write_text(json.dumps({"path": "x.py", "text": texts[0][1]}) + "\n")
    (tmp_path / "tokenizer.json").write_text("{}")  # past the tokenizer check; no model loads
    with pytest.raises(ValueError, match="no block of while in"):
        O.build(tmp_path / "none.safetensors", corpus, tmp_path / "own.jsonl", 5,
                kinds=frozenset({"while"}))
    assert not (tmp_path / "own.jsonl").exists()


def test_kinds_option_is_checked():
    from cromwell_lsp.training.evaluate import parse_kinds

    assert parse_kinds(None) is None and parse_kinds("class, try") == {"class", "try"}
    for bad in ("", "klass", "class,elif"):
        with pytest.raises(ValueError, match="--kinds takes block statements"):
            parse_kinds(bad)


def test_the_packaged_model_completes_training_starts_through_the_engine(small_tokenizer,
                                                                        tmp_path):
    """Real model, real kernels: every kept completion works with its start, comes from a
    training file (never a validation one), and the counts add up."""
    from cromwell_lsp.model import DEFAULT_WEIGHTS

    tok, _ = small_tokenizer
    corpus = tok.path.parent / "corpus"
    out = tmp_path / "own.jsonl"
    report = O.build(DEFAULT_WEIGHTS, corpus, out, n=6, samples=2, seed=3, workers=1,
                     log=lambda *a: None)
    rows = [json.loads(line) for line in open(out)]
    assert report["starts"] == 6 and report["samples_per_start"] == 3
    assert report["some_sample_works"] == len(rows) <= 6
    assert report["greedy_works"] <= len(rows) and len(rows) <= report["working_completions"] <= 18
    texts = {r["path"]: r["text"] for r in read_jsonl(corpus / "train.jsonl")}
    for r in rows:
        assert r["path"] in texts
        assert O.works(r["start"], r["completion"]) == r["completion"]
        assert 0.0 <= r["ratio"] <= 1.0
        # the real block after the start, as the file has it: its ratio is the one kept
        assert O.cut_at_block_end(r["start"] + r["real"], r["start"]) == r["start"] + r["real"]
        assert round(O.nearest(r["real"], [r["completion"]])[1], 3) == r["ratio"]
        assert any(O.tasks._drop_docstring(b).startswith((r["start"] + r["real"]).rstrip("\n"))
                   for b in O.tasks.block_snippets(texts[r["path"]]))
    assert O.load(out) == [(r["start"], r["completion"]) for r in rows]
    assert O.load(out, min_ratio=1.01) == []


def test_own_example_is_laid_out_as_the_real_block_is():
    """The server's prompt of the start, the completion, the end of text: what a block
    example is with the file's real rest in the completion's place."""
    from cromwell_lsp.model import prompts
    from cromwell_lsp.training import tasks

    rng = random.Random(0)
    while True:  # a block example cut after its header
        real = tasks.block_example("def f(a):\n    return a\n", rng)
        if real.segments[-2] == ("text", "return a\n"):
            break
    own = tasks.start_example("own", "def f(a):\n    ", "return a\n")
    assert own.task == "own" and real.task == "block"
    assert own.segments == real.segments == prompts.fim_spm("def f(a):\n    ", "") + [
        ("text", "return a\n"), ("special", "endoftext")]


torch = pytest.importorskip("torch")


def test_a_run_with_own_completions_trains_on_them_and_resumes_exactly(small_tokenizer,
                                                                      tmp_path):
    from cromwell_lsp.training.train import Trainer
    from tests.test_training import _config, _quiet, _straight_and_resumed

    tok, _ = small_tokenizer
    data = tmp_path / "own.jsonl"
    with open(data, "w") as f:
        for i in range(5):
            f.write(json.dumps({"path": "stdlib/x.py", "start": f"def f{i}(a):\n    ",
                                "completion": f"return a + {i}\n", "ratio": 0.1 * i}) + "\n")
    kw = dict(image_every=0, own_data=str(data), own_per_file=3, own_min_ratio=0.15)
    trainer = Trainer(_config(tmp_path / "a", tok, **kw), log=_quiet)
    assert sorted(trainer.stream.own) == [(f"def f{i}(a):\n    ", f"return a + {i}\n")
                                          for i in (2, 3, 4)]
    examples = trainer.stream._examples()  # a file's examples end with three of them
    assert [e.task for e in examples[-3:]] == ["own"] * 3
    assert "own" not in {e.task for e in examples[:-3]}
    _straight_and_resumed(tmp_path / "run", tok, **kw)
    with pytest.raises(ValueError, match="no completions"):
        Trainer(_config(tmp_path / "c", tok, **{**kw, "own_min_ratio": 0.9}), log=_quiet)


def test_train_own_needs_a_model_and_a_jsonl_out(capsys):
    from cromwell_lsp.cli import main

    assert main(["train", "own", "--out", "runs/x.jsonl"]) == 2
    assert "needs --weights" in capsys.readouterr().err
