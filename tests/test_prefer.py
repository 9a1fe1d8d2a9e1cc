"""Preference pairs from the model's own greedy failures, and the DPO steps that train on
them (cromwell_lsp/training/prefer.py, `train run --prefer-data`)."""
from __future__ import annotations

import json
import math
import random

import pytest

torch = pytest.importorskip("torch")

from cromwell_lsp.training import prefer as P  # noqa: E402


def _rows(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps({"path": "stdlib/x.py", "ratio": 0.5, **r}) + "\n")


def test_pairs_are_the_failing_greedy_path_against_a_working_one(tmp_path):
    data = tmp_path / "own.jsonl"
    _rows(data, [
        # greedy failed, a sample worked: a pair, the greedy side cut at its block's end
        {"start": "def f(a):\n    ", "completion": "return a + 1\n", "greedy_works": False,
         "greedy": "return a +\n\nx = 1\n"},
        # greedy worked: no pair
        {"start": "def g(a):\n    ", "completion": "return a\n", "greedy_works": True,
         "greedy": "return a\n"},
        # a row written before `train own` kept the greedy completion: skipped
        {"start": "def h(a):\n    ", "completion": "return a * 2\n"},
        # the two sides the same text once cut: no pair
        {"start": "def k(a):\n    ", "completion": "return -a\n", "greedy_works": False,
         "greedy": "return -a\n"},
        # greedy gave nothing at all: the empty completion is the rejected side
        {"start": "def m(a):\n    ", "completion": "return a - 1\n", "greedy_works": False,
         "greedy": ""},
    ])
    assert P.load(data) == [("def f(a):\n    ", "return a + 1\n", "return a +\n"),
                            ("def m(a):\n    ", "return a - 1\n", "")]


def test_real_pairs_are_the_files_block_over_a_greedy_one_line_return(tmp_path):
    """--prefer-real: a greedy completion that works but is a one-line return of a bare
    value gives way to the file's real block, when that is a useful body of another kind
    and short enough; failing greedy completions make their pairs as before."""
    data = tmp_path / "own.jsonl"
    start = "def f(a):\n    "
    _rows(data, [
        # a stock return where the file computes something: a pair
        {"start": start, "completion": "return False\n", "greedy_works": True,
         "greedy": "return False\n\nx = 1\n", "real": "b = a * 2\n    return b\n"},
        # the real block is a one-line return too: no pair
        {"start": start, "completion": "return a\n", "greedy_works": True,
         "greedy": "return a\n", "real": "return self.a\n"},
        # the greedy completion computes something: no pair
        {"start": start, "completion": "return a + 1\n", "greedy_works": True,
         "greedy": "return a + 1\n", "real": "b = a\n    return b\n"},
        # the real block does nothing, does not parse alone, or is too long: no pair
        {"start": start, "completion": "return a\n", "greedy_works": True,
         "greedy": "return a\n", "real": "pass\n"},
        {"start": start, "completion": "return a\n", "greedy_works": True,
         "greedy": "return a\n", "real": "else:\n    return 1\n"},
        {"start": start, "completion": "return a\n", "greedy_works": True,
         "greedy": "return a\n", "real": "b = [\n" + "        1,\n" * 60 + "    ]\n"},
        # written before rows kept the real block: no pair
        {"start": start, "completion": "return a\n", "greedy_works": True, "greedy": "return a\n"},
        # failed: the working sample over it, with or without --prefer-real
        {"start": start, "completion": "return a - 1\n", "greedy_works": False,
         "greedy": "return (a\n", "real": "return a - 1\n"},
    ])
    failing = [(start, "return a - 1\n", "return (a\n")]
    assert P.load(data) == failing
    assert P.load(data, real=True) == [(start, "b = a * 2\n    return b\n", "return False\n")] + failing


def test_a_side_is_the_own_example_with_the_loss_on_the_completion_only(small_tokenizer):
    from cromwell_lsp.training import tasks

    tok, _ = small_tokenizer
    ids, mask = P.encode(tok, "def f(a):\n    ", "return a\n", seq_len=512)
    full, _ = tasks.encode(tasks.start_example("own", "def f(a):\n    ", "return a\n"), tok)
    assert ids == full
    answer = tok.encode("return a\n")
    n = len(answer) + 1  # and the end of text
    assert mask == [0] * (len(ids) - n) + [1] * n
    assert ids[-1] == tok.special("endoftext") and ids[-n:-1] == answer
    short, short_mask = P.encode(tok, "def f(a):\n    ", "return a\n", seq_len=len(ids) - 4)
    assert short == ids[3:] and short_mask == mask[3:]


def test_dpo_loss_is_log_two_at_the_reference_and_falls_as_the_ranking_grows():
    lp = torch.tensor([-5.0, -7.0])
    loss, parts = P.dpo_loss(lp, lp, lp, lp, beta=0.1)
    assert loss.item() == pytest.approx(math.log(2)) and parts["pref_acc"] == 0.0
    better, _ = P.dpo_loss(lp + 2, lp - 2, lp, lp, beta=0.1)
    assert better.item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.4))), rel=1e-6)
    worse, parts = P.dpo_loss(lp - 2, lp + 2, lp, lp, beta=0.1)
    assert worse.item() > math.log(2) > better.item() and parts["pref_acc"] == 0.0


def test_sequence_logp_sums_the_masked_targets_and_ignores_padding(small_tokenizer):
    from cromwell_lsp.model.config import preset
    from cromwell_lsp.training.model import random_init

    tok, _ = small_tokenizer
    model = random_init(preset("tiny").replace(vocab_size=tok.vocab_size), 0).eval()
    a = P.encode(tok, "def f(a):\n    ", "return a\n", 64)
    b = P.encode(tok, "class C:\n    ", "pass\n", 64)
    ids, mask = P.batch_tensors([a, b], "cpu")
    with torch.no_grad():
        both = P.sequence_logp(model, ids, mask)
        alone = P.sequence_logp(model, *P.batch_tensors([b], "cpu"))
        logits = model(torch.tensor([a[0][:-1]]), jepa=False).logits[0].float()
    want = sum(torch.log_softmax(logits[t - 1], -1)[a[0][t]].item()
               for t in range(1, len(a[0])) if a[1][t])
    assert both[0].item() == pytest.approx(want, abs=1e-3)
    assert both[1].item() == pytest.approx(alone[0].item(), abs=1e-3)


def _pairs_file(path):
    rng = random.Random(0)
    rows = []
    for i in range(12):
        good = f"return a + {i}\n"
        bad = rng.choice(["return a, a, a, a, a\n", "pass\n", "return (a\n"])
        rows.append({"start": f"def f{i}(a):\n    ", "completion": good, "greedy_works": False,
                     "greedy": bad})
    _rows(path, rows)


def test_a_run_on_pairs_alone_ranks_them_and_resumes_exactly(small_tokenizer, tmp_path):
    """The reference is the starting model's, kept in the checkpoint; training on the
    pairs alone makes the model rank chosen above rejected; a run stopped and resumed
    ends bit for bit where a straight one does."""
    from cromwell_lsp.training.train import Trainer
    from tests.test_training import _config, _quiet, _straight_and_resumed

    tok, _ = small_tokenizer
    data = tmp_path / "own.jsonl"
    _pairs_file(data)
    kw = dict(image_every=0, prefer_data=str(data), prefer_only=True, prefer_batch=4,
              prefer_beta=0.5, lr=3e-3)
    straight = _straight_and_resumed(tmp_path / "run", tok, **kw)
    saved = torch.load(tmp_path / "run" / "a" / "ckpt.pt", weights_only=False)["prefer"]
    assert saved["key"] == straight.pairs.key and torch.equal(saved["ref"], straight.pairs.ref)
    # longer, the pairs get ranked: the DPO loss falls well below log 2
    t = Trainer(_config(tmp_path / "long", tok, **{**kw, "steps": 30}), log=_quiet)
    ref = t.pairs.ref.clone()
    assert t.train_step()["prefer"] == pytest.approx(math.log(2), abs=1e-4)
    t.run()
    assert torch.equal(t.pairs.ref, ref)  # the reference never moves
    with torch.no_grad():
        loss, parts = t.pairs.loss(t.model.eval(), list(range(12)), 0.5, "cpu")[:2]
    assert loss.item() < 0.3 and parts["pref_acc"] == 1.0


def test_a_dpo_term_beside_the_text_steps_and_its_errors(small_tokenizer, tmp_path):
    from cromwell_lsp.training.train import Trainer
    from tests.test_training import _config, _quiet

    tok, _ = small_tokenizer
    data = tmp_path / "own.jsonl"
    _pairs_file(data)
    t = Trainer(_config(tmp_path / "a", tok, image_every=0, prefer_data=str(data),
                        prefer_every=2, prefer_batch=3, steps=4), log=_quiet)
    steps = [t.train_step() for _ in range(4)]
    assert [("prefer" in m) for m in steps] == [True, False, True, False]
    assert all("lm" in m for m in steps)
    with pytest.raises(ValueError, match="prefer-every"):
        Trainer(_config(tmp_path / "b", tok, prefer_data=str(data)), log=_quiet)
    empty = tmp_path / "none.jsonl"
    _rows(empty, [{"start": "def g(a):\n    ", "completion": "return a\n",
                   "greedy_works": True, "greedy": "return a\n"}])
    with pytest.raises(ValueError, match="no preference pairs"):
        Trainer(_config(tmp_path / "c", tok, prefer_data=str(empty), prefer_every=1), log=_quiet)
    # --prefer-real: the same file's stock return against its real block is a pair too
    stock = tmp_path / "stock.jsonl"
    _rows(stock, [{"start": "def g(a):\n    ", "completion": "return a\n", "greedy_works": True,
                   "greedy": "return a\n", "real": "b = a + 1\n    return b\n"}])
    with pytest.raises(ValueError, match="no preference pairs"):
        Trainer(_config(tmp_path / "d", tok, prefer_data=str(stock), prefer_every=1), log=_quiet)
    t = Trainer(_config(tmp_path / "e", tok, image_every=0, prefer_data=str(stock),
                        prefer_every=1, prefer_real=True, steps=1), log=_quiet)
    assert t.pairs.pairs == [("def g(a):\n    ", "b = a + 1\n    return b\n", "return a\n")]
    assert "prefer" in t.train_step()


def test_the_chosen_sides_next_token_loss_is_added_at_its_weight(small_tokenizer):
    """--prefer-nll: the DPO loss plus the weight times the chosen sides' mean next-token
    loss (their summed log-probability over their masked tokens)."""
    from cromwell_lsp.model.config import preset
    from cromwell_lsp.training.model import random_init

    tok, _ = small_tokenizer
    model = random_init(preset("tiny").replace(vocab_size=tok.vocab_size), 0).eval()
    pairs = P.Pairs([("def f(a):\n    ", "return a\n", "pass\n"),
                     ("class C:\n    ", "x = 1\n", "")], tok, 64)
    pairs.reference(model, "cpu", lambda: torch.autocast("cpu", enabled=False))
    with torch.no_grad():
        plain, parts = pairs.loss(model, [0, 1], 0.1, "cpu")[:2]
        both, parts2 = pairs.loss(model, [0, 1], 0.1, "cpu", nll=0.5)[:2]
        ids, mask = P.batch_tensors([pairs.sides[0][0], pairs.sides[1][0]], "cpu")
        lp = P.sequence_logp(model, ids, mask)
    nll = -lp.sum().item() / mask[:, 1:].sum().item()
    assert plain.item() == pytest.approx(math.log(2), abs=1e-5)  # the model is its reference
    assert parts["pref_nll"] == pytest.approx(nll, rel=1e-5) == parts2["pref_nll"]
    assert both.item() == pytest.approx(math.log(2) + 0.5 * nll, rel=1e-5)


def test_handler_pairs_are_real_try_statements_over_their_bodies_alone():
    """--prefer-handlers: a training file's `try` statement, started as a developer opens
    one, chosen over its body alone (which does not compile); the body and the statement
    as the file has them, each body once, one a file, too long or not useful ones left
    out, and the same pairs for the same seed."""
    files = [
        ("a.py", "import os\n\n\ndef f(p):\n    try:\n        return os.stat(p)\n"
                 "    except OSError:  # gone\n        return None\n"),
        # the same body as a.py's: its statement is not taken again
        ("b.py", "try:\n    return os.stat(p)\nexcept OSError:\n    raise\n"),
        ("c.py", "try:\n    x = load()\n\n    y = x + 1\nfinally:\n    close()\n"
                 "try:\n    z = 2\nexcept ValueError:\n    z = 3\n"),  # the second: not taken
        ("d.py", "try:\n    x = [\n" + "        1,\n" * 200 + "    ]\nexcept Exception:\n    pass\n"),
        ("e.py", "try:\n    pass\nexcept Exception:\n    pass\n"),  # does nothing
        ("f.py", "def g():\n    return 1\n"),  # no try at all
    ]
    pairs = P.handler_pairs(files, 10, random.Random(0))
    assert sorted(pairs) == sorted([
        ("try:\n    ", "return os.stat(p)\nexcept OSError:  # gone\n    return None\n",
         "return os.stat(p)\n"),
        ("try:\n    ", "x = load()\n\n    y = x + 1\nfinally:\n    close()\n",
         "x = load()\n\n    y = x + 1\n"),
    ])
    for start, chosen, rejected in pairs:  # the chosen side parses, the rejected one not
        assert P.useful(P.judged(start, chosen)) and not P.judged(start, rejected)["parses"]
    assert P.handler_pairs(files, 10, random.Random(0)) == pairs
    assert len(P.handler_pairs(files, 1, random.Random(0))) == 1


def test_handler_pairs_alone_make_a_run_of_dpo_steps(small_tokenizer, tmp_path):
    """--prefer-handlers without --prefer-data: the pairs come from the run's corpus."""
    from cromwell_lsp.training.train import Trainer
    from tests.test_training import _config, _quiet

    tok, _ = small_tokenizer
    c = _config(tmp_path / "a", tok, image_every=0, prefer_only=True, prefer_handlers=3,
                prefer_batch=2, steps=1)
    t = Trainer(c, log=_quiet)
    want = P.handler_pairs(t.texts, 3, random.Random(f"handlers:{c.seed}"))
    assert want and t.pairs.pairs == want
    assert all(s == "try:\n    " for s, _, _ in want)
    assert "prefer" in t.train_step()
    with pytest.raises(ValueError, match="prefer-handlers need"):
        Trainer(_config(tmp_path / "b", tok, prefer_handlers=3), log=_quiet)
