"""The training loop on a small real corpus: the loss falls, a resumed run continues
exactly where an uninterrupted one would be, validation and bits per byte are reported,
and the export loads in the engine with logits matching the twin."""
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cromwell_lsp.model import CromwellVLJEPA  # noqa: E402
from cromwell_lsp.training.export import export  # noqa: E402
from cromwell_lsp.training.train import Trainer, TrainConfig, unigram_bpb  # noqa: E402


def _config(tmp, tok, **kw):
    base = dict(model="tiny", corpus=str(tok.path.parent / "corpus"), tokenizer=str(tok.path),
                out=str(tmp), seq_len=64, batch_size=4, steps=6, lr=3e-3, warmup=2,
                image_every=3, image_batch=2, image_side=32, eval_every=1000, eval_rows=2,
                bpb_bytes=6000,
                ckpt_every=3, bf16=False)
    return TrainConfig(**{**base, **kw})


def _quiet(*a):
    pass


def _straight_and_resumed(tmp, tok, **kw):
    """A 6-step run straight through (in tmp/a), and one stopped after 3 steps and resumed
    (in tmp/b), which must end bit for bit where the first does; the first is returned."""
    straight = Trainer(_config(tmp / "a", tok, **kw), log=_quiet)
    straight.run()
    Trainer(_config(tmp / "b", tok, **{**kw, "steps": 3}), log=_quiet).run()
    resumed = Trainer(_config(tmp / "b", tok, **kw), log=_quiet)
    assert resumed.step == 3
    resumed.run()
    for (name, a), (_, b) in zip(straight.model.state_dict().items(),
                                 resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    return straight


def test_resume_is_exact(small_tokenizer, tmp_path):
    tok, _ = small_tokenizer
    _straight_and_resumed(tmp_path, tok)
    log = [json.loads(line) for line in open(tmp_path / "a" / "log.jsonl")]
    assert log[0]["note"] == "untrained" and "val_bpb_stdlib" in log[0]
    assert (tmp_path / "a" / "log.csv").exists()


def test_the_mixture_draws_every_text_task(small_tokenizer):
    """The rows of the training stream carry every text task, the bare-start blocks among
    them, with loss on their tokens."""
    from cromwell_lsp.training.corpus import read_jsonl
    from cromwell_lsp.training.data import TextStream

    tok, _ = small_tokenizer
    texts = [(r["path"], r["text"]) for r in read_jsonl(tok.path.parent / "corpus" / "train.jsonl")]
    stream = TextStream(texts, tok, seq_len=256, seed=3)
    seen, masked = set(), 0.0
    for _ in range(400):
        ids, mask, row_tasks = stream.next_row()
        assert ids.shape == mask.shape == (257,)
        seen.update(row_tasks)
        masked += mask.mean() / 400
    assert seen == {"lm", "fim_spm", "fim_psm", "explain", "repair", "block"}
    assert masked > 0.5  # the prompts of explain and repair are the only unscored tokens


def test_block_share_is_a_setting(small_tokenizer):
    """--blocks-per-file sets how many bare-start blocks each file gives the stream."""
    from cromwell_lsp.training.corpus import read_jsonl
    from cromwell_lsp.training.data import TextStream

    tok, _ = small_tokenizer
    texts = [(r["path"], r["text"]) for r in read_jsonl(tok.path.parent / "corpus" / "train.jsonl")]
    counts = {}
    for n in (0, 2, 8):
        stream = TextStream(texts, tok, seq_len=256, seed=3, blocks_per_file=n)
        counts[n] = sum(ex.task == "block" for _ in range(20) for ex in stream._examples())
    assert counts[0] == 0 < counts[2] < counts[8]


def test_source_weights_repeat_a_sources_files(small_tokenizer):
    """--source-weights algorithms=3: each file of that source three times an epoch, the
    rest once; a stream restored over other weights starts a new shuffle, not stale indices."""
    from cromwell_lsp.training.data import TextStream
    from cromwell_lsp.training.train import parse_weights, weighted

    texts = [("stdlib/a.py", "a = 1\n"), ("algorithms/b.py", "b = 2\n"), ("toolz/c.py", "c = 3\n")]
    out = weighted(texts, "algorithms=3, toolz=2")
    assert [p for p, _ in out].count("algorithms/b.py") == 3
    assert [p for p, _ in out].count("toolz/c.py") == 2
    assert [p for p, _ in out].count("stdlib/a.py") == 1
    assert weighted(texts, "") == texts
    for bad in ("algorithms", "algorithms=0", "algorithms=x", "=2", "algorithms=-1",
                "algorithms=nan", "algorithms=inf", "algorithms=1e9"):
        with pytest.raises(ValueError, match="NAME=W"):
            parse_weights(bad)
    with pytest.raises(ValueError, match="nosuch"):
        weighted(texts, "nosuch=2")

    tok, _ = small_tokenizer
    before = TextStream(texts, tok, seq_len=64, seed=1)
    before._next_file()  # a third of the way through its epoch
    after = TextStream(out, tok, seq_len=64, seed=1)
    after.restore(before.state())
    after._next_file()
    assert sorted(after.order) == list(range(len(out)))  # every weighted copy in the shuffle


def test_a_fractional_source_weight_keeps_a_fixed_share_of_its_files():
    """transformers=0.3 keeps about three files in ten of that source, the same ones on
    every call (drawn by path, not by the run's seed); 2.5 is every file twice and half of
    them a third time; other sources are untouched."""
    from cromwell_lsp.training.train import parse_weights, weighted

    texts = [(f"transformers/m{i}.py", "x = 1\n") for i in range(2000)] + [("stdlib/a.py", "a\n")]
    assert parse_weights("transformers=0.3, algorithms=4") == {"transformers": 0.3, "algorithms": 4.0}
    kept = weighted(texts, "transformers=0.3")
    assert 520 <= len(kept) - 1 <= 680 and kept[-1] == ("stdlib/a.py", "a\n")
    assert kept == weighted(texts, "transformers=0.3")
    assert set(kept) <= set(weighted(texts, "transformers=0.6"))  # a larger share holds it
    more = weighted(texts, "transformers=2.5")
    counts = [[p for p, _ in more].count(f"transformers/m{i}.py") for i in range(0, 2000, 97)]
    assert set(counts) <= {2, 3} and 2 in counts and 3 in counts


BOILER = ("try:\n    if not is_torch_available():\n        raise Missing()\n"
          "except Missing:\n    pass\n")


def _boiler_files(n):
    return [(f"transformers/m{i}/__init__.py",
             f"{BOILER}\n\ndef scale_{i}(x):\n    y = x * {i}\n    return y + 1\n")
            for i in range(n)]


def test_opening_counts_count_the_blocks_sharing_a_header_and_first_line():
    from cromwell_lsp.training import tasks

    assert tasks.block_opening(BOILER) == "try:\n    if not is_torch_available():"
    assert tasks.block_opening("if x:\n    y()\n") == "if x:\n    y()"
    texts = _boiler_files(5)
    counts = tasks.opening_counts(texts)
    assert counts == {"try:\n    if not is_torch_available():": 5,
                      "if not is_torch_available():\n    raise Missing()": 5}  # unique defs: none
    # a weighted source's file listed twice counts twice
    assert tasks.opening_counts(texts + texts[:1])["try:\n    if not is_torch_available():"] == 6
    assert tasks.opening_counts(texts, above=5) == {}


def test_the_block_cap_draws_a_shared_opening_cap_over_count_of_the_time(small_tokenizer):
    """block_cap=4 over 40 files that all open the same `try:` block: that block is left in
    a file's draw about 4 times in 40, a file's own function always; block_cap=0 leaves
    every block and draws nothing from the stream's RNG (a run without the cap is the
    same as before it existed)."""
    from cromwell_lsp.training import tasks
    from cromwell_lsp.training.data import TextStream

    tok, _ = small_tokenizer
    texts = _boiler_files(40)
    counts = tasks.opening_counts(texts)
    capped = TextStream(texts, tok, seq_len=64, seed=2, block_cap=4, openings=counts)
    kept = {"boiler": 0, "own": 0}
    for _ in range(10):
        for _, text in texts:
            for code in tasks.block_snippets(text):
                if capped._keep_block(code):
                    kept["own" if code.startswith("def") else "boiler"] += 1
    assert kept["own"] == 400
    assert 2 * 400 * 4 / 40 * 0.6 <= kept["boiler"] <= 2 * 400 * 4 / 40 * 1.4  # try and its if
    plain = TextStream(texts, tok, seq_len=64, seed=2, openings=counts)
    before = plain.rng.getstate()
    assert all(plain._keep_block(code) for _, t in texts for code in tasks.block_snippets(t))
    assert plain.rng.getstate() == before


def test_a_capped_fractionally_weighted_run_resumes_exactly_and_keeps_its_counts(
        small_tokenizer, tmp_path, monkeypatch):
    from cromwell_lsp.training import tasks
    from cromwell_lsp.training.corpus import read_jsonl

    tok, _ = small_tokenizer
    straight = _straight_and_resumed(tmp_path, tok, block_cap=1, source_weights="stdlib=0.5",
                                     image_every=0)
    assert 0 < len(straight.texts) < len(list(read_jsonl(tok.path.parent / "corpus" / "train.jsonl")))
    saved = json.loads((tmp_path / "a" / "block-openings.json").read_text())
    assert saved["counts"] and min(saved["counts"].values()) >= 2  # over the cap of 1 only
    # a later run in the folder reads the counts instead of parsing the corpus again
    monkeypatch.setattr(tasks, "opening_counts", lambda *a, **k: pytest.fail("counted again"))
    again = Trainer(_config(tmp_path / "a", tok, block_cap=1, source_weights="stdlib=0.5",
                            image_every=0), log=_quiet)
    assert again.stream.openings == saved["counts"]
    with pytest.raises(ValueError, match="--block-cap -1"):
        Trainer(_config(tmp_path / "c", tok, block_cap=-1), log=_quiet)


def test_warmup_starts_where_a_warm_start_begins():
    from cromwell_lsp.training.train import lr_at

    c = TrainConfig(lr=1e-3, min_lr=1e-4, warmup=10, steps=110)
    assert lr_at(0, c) == pytest.approx(1e-4) and lr_at(9, c) == pytest.approx(1e-3)
    # a fresh optimizer at step 50: the rate rises from a tenth again, then the cosine
    # runs from there to c.steps
    assert lr_at(50, c, start=50) == pytest.approx(1e-4)
    assert lr_at(59, c, start=50) == pytest.approx(1e-3)
    assert lr_at(60, c, start=50) == pytest.approx(1e-3)
    assert lr_at(85, c, start=50) == pytest.approx(5.5e-4)
    assert lr_at(110, c, start=50) == pytest.approx(1e-4)


def test_int8_aware_steps_see_the_int8_values_and_keep_the_float_weights(small_tokenizer,
                                                                         tmp_path):
    from cromwell_lsp import kernels
    from cromwell_lsp.training.train import int8_parameters, int8_view

    w = torch.randn(6, 64) * 0.05
    w[2, :32] = 0.0  # an all-zero block: scale 0, values 0
    q, d = kernels.quantize_q8_ref(w.numpy())
    np.testing.assert_array_equal(int8_view(w).numpy(), kernels.dequantize_q8_ref(q, d))
    assert torch.equal(int8_view(int8_view(w)), int8_view(w))  # on the levels, it stays

    tok, _ = small_tokenizer
    kw = dict(image_every=0, lr=0.0, min_lr=0.0, steps=1)
    aware = Trainer(_config(tmp_path / "a", tok, int8_aware=1, **kw), log=_quiet)
    plain = Trainer(_config(tmp_path / "p", tok, **kw), log=_quiet)
    snapped = Trainer(_config(tmp_path / "s", tok, **kw), log=_quiet)
    names = {id(p): n for n, p in aware.model.named_parameters()}
    assert len(aware.int8_params) == len(int8_parameters(plain.model, plain.cfg)) > 0
    assert "lang.tok_embeddings.weight" not in {names[id(p)] for p in aware.int8_params}
    with torch.no_grad():
        for p in int8_parameters(snapped.model, snapped.cfg):
            p.copy_(int8_view(p))
    before = {n: p.detach().clone() for n, p in aware.model.named_parameters()}
    loss_aware = aware.train_step()["loss"]
    # the step's forward ran on the int8 values: the loss of the snapped model, not the float one
    assert loss_aware == pytest.approx(snapped.train_step()["loss"], rel=1e-6)
    assert loss_aware != pytest.approx(plain.train_step()["loss"], rel=1e-6)
    # and the float weights came back after it (at rate 0 the step moves nothing)
    for n, p in aware.model.named_parameters():
        assert torch.equal(p, before[n]), n
    # an int8-aware run resumes bit for bit too
    _straight_and_resumed(tmp_path / "r", tok, int8_aware=1, image_every=0)


def test_anchor_kl_holds_a_run_to_the_model_it_started_from(small_tokenizer, tmp_path):
    from cromwell_lsp.training.train import anchor_kl

    torch.manual_seed(0)
    logits, ref = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    mask = torch.tensor([[0, 1, 1, 0, 1, 1], [0, 0, 0, 0, 0, 1]])  # targets: mask[:, 1:]
    p, lp, lq = ref.softmax(-1), ref.log_softmax(-1), logits.log_softmax(-1)
    per = (p * (lp - lq)).sum(-1).numpy()
    want = (per[0, [0, 1, 3, 4]].sum() + per[1, 4]) / 5
    assert float(anchor_kl(logits, ref, mask)) == pytest.approx(want, rel=1e-5)
    assert float(anchor_kl(ref, ref, mask)) == pytest.approx(0.0, abs=1e-6)

    tok, _ = small_tokenizer
    t = Trainer(_config(tmp_path / "k", tok, anchor_kl=1.0, image_every=0), log=_quiet)
    start = {n: p.detach().clone() for n, p in t.model.named_parameters()}
    first, second = t.train_step(), t.train_step()
    assert first["kl"] == pytest.approx(0.0, abs=1e-5)  # the model is its own anchor at first
    assert second["kl"] > 1e-4  # and has moved off it after a step
    for n, p in t.anchor.named_parameters():  # the anchor itself stays where the run began
        assert torch.equal(p, start[n]) and not p.requires_grad, n
    assert Trainer(_config(tmp_path / "plain", tok), log=_quiet).anchor is None
    with pytest.raises(ValueError, match="--anchor-kl must be 0"):
        Trainer(_config(tmp_path / "neg", tok, anchor_kl=-1.0), log=_quiet)
    # a resumed run is held to the model the run began from, not to the one it resumed
    _straight_and_resumed(tmp_path / "r", tok, anchor_kl=1.0, image_every=0)


def test_loss_falls_and_export_matches_the_twin(small_tokenizer, tmp_path):
    tok, _ = small_tokenizer
    trainer = Trainer(_config(tmp_path / "run", tok, steps=60, image_every=0, eval_every=60,
                              ckpt_every=60), log=_quiet)
    trainer.run()
    rows = [json.loads(line) for line in open(tmp_path / "run" / "log.jsonl")]
    untrained, trained = rows[0], rows[-1]
    assert untrained["note"] == "untrained" and trained["step"] == 60
    # 60 small steps: held-out loss falls on every task, by 10% on whole files
    for key in ("val_lm", "val_fim_spm", "val_fim_psm", "val_explain", "val_repair",
                "val_block"):
        assert trained[key] is not None and trained[key] < untrained[key], key
    assert trained["val_lm"] < 0.9 * untrained["val_lm"]
    assert trained["val_bpb_stdlib"] < 0.9 * untrained["val_bpb_stdlib"]
    assert (tmp_path / "run" / "loss.png").exists()
    report = export(tmp_path / "run" / "ckpt.pt", tmp_path / "w", tok.path, log=_quiet)
    assert report["f32_rel_err"] < 1e-4 and report["int8_rel_err"] < 0.1
    model = CromwellVLJEPA.load(tmp_path / "w" / "model-int8.safetensors")
    assert isinstance(model.generate("def f(", max_tokens=4), str)
    assert model.screenshot_side == 32  # the training image side travels in the metadata
    from cromwell_lsp.model.weights import quantize_file
    quantize_file(tmp_path / "w" / "model.safetensors", tmp_path / "w" / "again.safetensors")
    assert CromwellVLJEPA.load(tmp_path / "w" / "again.safetensors").screenshot_side == 32
    assert unigram_bpb(tok.path.parent / "corpus", tok, trainer.val["stdlib"]) > 0
    assert model.engine.cfg.max_seq_len == 64  # the trained row length, not the preset's

    # back from the engine's int8 file to a checkpoint: re-exported, the same int8 values
    from cromwell_lsp.model import weights as W
    from cromwell_lsp.training.export import import_weights
    imported = import_weights(tmp_path / "w" / "model-int8.safetensors", tmp_path / "imp" / "ckpt.pt",
                              tok.path, log=_quiet)
    assert imported["rel_err"] < 0.1 and imported["screenshot_side"] == 32
    assert imported["step"] == 60  # the export records it
    again = export(tmp_path / "imp" / "ckpt.pt", tmp_path / "w2", tok.path, log=_quiet,
                   quants=("int8",))
    assert again["step"] == 60 and again["int8_rel_err"] < 0.1
    first = W.load(tmp_path / "w" / "model-int8.safetensors")
    second = W.load(tmp_path / "w2" / "model-int8.safetensors")
    assert set(first.tensors) == set(second.tensors)
    for name, a in first.tensors.items():
        np.testing.assert_array_equal(second.tensors[name], a, err_msg=name)
    assert second.metadata["screenshot_side"] == "32"
    warm = Trainer(_config(tmp_path / "imp", tok, steps=62, image_every=0, image_side=96),
                   log=_quiet)
    assert warm.step == 60  # a warm start: the weights and the step, a fresh optimizer
    assert warm.c.image_side == 32  # text only: the vision side keeps the side it read at
    assert warm.schedule_start == 60  # ... whose warmup starts there, not at step 0
    warm.run()
    assert warm.step == 62
    assert Trainer(_config(tmp_path / "imp", tok, steps=64, image_every=0),
                   log=_quiet).schedule_start == 60  # kept across a resume

    # a run whose stream weighted sources the evaluation corpus lacks still evaluates
    import torch
    state = torch.load(tmp_path / "run" / "ckpt.pt", map_location="cpu", weights_only=False)
    state["train_config"]["source_weights"] = "algorithms=4"
    torch.save(state, tmp_path / "run" / "ckpt.pt")
    from cromwell_lsp.training import evaluate
    ev = evaluate.run(tmp_path / "run", tmp_path / "w" / "model-int8.safetensors",
                      tok.path.parent / "corpus", tok.path, eval_rows=2, bpb_bytes=6000,
                      n_snippets=8, n_starts=8, log=_quiet)
    assert ev["step"] == 60 and ev["params"] == trainer.cfg.n_params()
    for key in ("val_lm", "val_bpb_stdlib"):
        assert ev["trained"][key] < ev["untrained"][key], key
        assert ev["unigram"][key] > 0
    # the engine on the int8 file: the twin's tasks, each within what int8 may cost
    assert ev["engine"].keys() == ev["trained"].keys()
    for key, value in ev["trained"].items():
        assert abs(ev["engine"][key] - value) < 0.02 * value, key
    assert len(ev["completions"]) == len(evaluate.STARTS)
    assert all(c["completion"] is not None and isinstance(c["parses"], bool)
               and isinstance(c["loops"], bool) for c in ev["completions"])
    assert ev["completions_parse_no_loop"].endswith(f"/{len(evaluate.STARTS)}")
    assert [c["start"] for c in ev["completions_more"]] == list(evaluate.MORE_STARTS)
    assert not set(evaluate.MORE_STARTS) & set(evaluate.STARTS)
    assert ev["completions_more_parse_no_loop"].endswith(f"/{len(evaluate.MORE_STARTS)}")
    held = evaluate.heldout_starts(tok.path.parent / "corpus", 8)
    assert [c["start"] for c in ev["completions_heldout"]] == held
    assert ev["completions_heldout_parse"].endswith(f"/{len(held)}")
    useful = sum(c["parses"] and not c["loops"] and not c["trivial"]
                 for c in ev["completions_heldout"])
    assert ev["completions_heldout_parse_no_loop_nontrivial"] == f"{useful}/{len(held)}"
    # the same starts as the editor gets them: the server's Completer, judged alike
    for key, starts in (("completions", evaluate.STARTS), ("completions_heldout", held)):
        edited = ev[f"{key}_editor"]
        assert [c["start"] for c in edited] == list(starts)
        assert all(isinstance(c["empty"], bool) and isinstance(c["parses"], bool) for c in edited)
        assert ev[f"{key}_editor_parse"] == f"{sum(c['parses'] for c in edited)}/{len(starts)}"
        assert ev[f"{key}_editor_empty"] == f"{sum(c['empty'] for c in edited)}/{len(starts)}"
        assert ev[f"{key}_editor_useful"] == \
            f"{sum(map(evaluate.useful, edited))}/{len(starts)}"
    # what the editor inserted is the server's own completion of that start
    from cromwell_lsp.features.completion import Completer
    from cromwell_lsp.features.session import Sessions
    from cromwell_lsp.settings import Settings

    model = CromwellVLJEPA.load(tmp_path / "w" / "model-int8.safetensors")
    server = Completer(model, Sessions(model.new_cache, 1 << 40))
    first = evaluate.STARTS[0]
    text = server.complete("file:///s.py", first, len(first),
                           Settings(max_tokens=evaluate.token_cap(model, 96), temperature=0.0)).text
    assert ev["completions_editor"][0]["completion"] == evaluate.judged(first, text)["completion"]
    wide = ev["completions_wide"]  # counts over many more held-out starts
    assert wide["starts"] == len(evaluate.wide_starts(tok.path.parent / "corpus", 3000)) > 8
    assert wide["useful"] + sum(wide["failures"].values()) == wide["starts"]
    assert wide["useful"] <= wide["parse_no_loop"] <= wide["parse"] <= wide["starts"]
    assert wide["parse_no_loop"] == wide["useful"] + wide["failures"]["trivial"]
    lines = ev["in_file_lines"]
    cases = evaluate.line_cases(tok.path.parent / "corpus", 400)
    assert lines["cases"] == len(cases) > 0 and 0 <= lines["exact"] <= lines["cases"]
    assert 0.0 <= lines["prefix_match"] <= 1.0
    from cromwell_lsp.training.corpus import read_jsonl
    files = {r["text"] for r in read_jsonl(tok.path.parent / "corpus" / "val.jsonl")}
    for prefix, suffix, rest in cases:  # the cursor 3 characters into a line of the file
        assert prefix + rest + suffix in files
        line = prefix.split("\n")[-1] + rest
        assert len(line.strip()) >= 8 and len(prefix.split("\n")[-1].lstrip()) == 3
        assert suffix.startswith("\n")
    r = ev["retrieval"]
    assert r["candidates"] == 8 and 0.0 <= r["top1"] <= r["top5"] <= 1.0

    # the locked-text alignment stage: only the image side moves, and it resumes
    from cromwell_lsp.training.align import AlignConfig, run as align
    cfg = AlignConfig(out=str(tmp_path / "run"), corpus=str(tok.path.parent / "corpus"),
                      tokenizer=str(tok.path), steps=2, batch=4, ckpt_every=1,
                      metric_functions=400, read_steps=1, strips=4, strip_rows=8)
    got = align(cfg, log=_quiet)
    assert got["steps"] == 2 and got["loss"] > 0
    before = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=False)["model"]
    after = torch.load(got["checkpoint"], weights_only=False)["model"]
    image_side = ("vision.", "joint.vision.", "joint.center", "joint.whiten")
    for name in before:  # the language side never moves
        if not name.startswith(image_side):
            assert torch.equal(before[name], after[name]), name
    assert not torch.equal(after["joint.whiten"], torch.eye(trainer.cfg.joint_dim))
    assert align(dataclasses.replace(cfg, steps=3), log=_quiet)["steps"] == 3  # resumed
    aligned = torch.load(got["checkpoint"], weights_only=False)
    assert aligned["train_config"]["image_side"] == 32 == aligned["align"]["side"]

    # `cromwell train metric`: the metric set again in place, nothing else touched
    from cromwell_lsp.training.align import set_metric
    set_metric(Path(got["checkpoint"]), cfg.corpus, cfg.tokenizer, n=300, seed=1, log=_quiet)
    again = torch.load(got["checkpoint"], weights_only=False)["model"]
    assert not torch.equal(again["joint.whiten"], aligned["model"]["joint.whiten"])
    assert not torch.equal(again["joint.center"], aligned["model"]["joint.center"])
    for name, t in aligned["model"].items():
        if name not in ("joint.center", "joint.whiten"):
            assert torch.equal(again[name], t), name


def test_heldout_starts_are_block_headers_of_validation_files(small_tokenizer):
    """Each held-out start is a block of a validation file (its docstring dropped) cut
    right where its body's first statement begins: after the indentation, before the code."""
    import re

    from cromwell_lsp.training import evaluate, tasks
    from cromwell_lsp.training.corpus import read_jsonl

    tok, _ = small_tokenizer
    corpus = tok.path.parent / "corpus"
    starts = evaluate.heldout_starts(corpus, 50)
    assert starts == evaluate.heldout_starts(corpus, 50)  # seeded
    blocks = [tasks._drop_docstring(b) for r in read_jsonl(corpus / "val.jsonl")
              for b in tasks.block_snippets(r["text"])]
    assert len(starts) >= 5
    wide = evaluate.wide_starts(corpus, 10_000)
    assert wide == evaluate.wide_starts(corpus, 10_000)  # seeded
    assert len(set(wide)) == len(wide) > len(starts)  # distinct, several per file
    assert set(starts) <= set(wide)  # every block start, so the one-per-file ones too
    assert evaluate.wide_starts(corpus, 7) == wide[:7]
    for s in starts + wide:
        assert re.search(r":[^\n]*\n([ \t]*(#[^\n]*)?\n)*[ \t]+$", s), s
        assert any(b.startswith(s) and not b[len(s)].isspace() for b in blocks), s


def test_failure_categories():
    from cromwell_lsp.training.evaluate import FAILURES, failure, judged, tally
    start = "def f(n):\n    "
    cases = {"return n + 1\n": None, "return\n": "trivial", "return (n\n": "syntax",
             "return g(g(g(g(g(g(g(g(g(g(g(g(n))))))))))))\n": "loop_parses",
             "return g(g(g(g(g(g(g(g(g(g(g(g(n\n": "loop_noparse",
             "return g(n,\n    )\n": "misaligned"}
    comps = []
    for text, want in cases.items():
        comps.append(judged(start, text))
        assert failure(comps[-1]) == want, text
    t = tally(comps)
    assert t == {"starts": 6, "parse": 4, "parse_no_loop": 3, "useful": 1,
                 "useful_one_line_return": 0, "failures": {f: 1 for f in FAILURES}}


def test_one_line_returns_of_a_bare_value_are_counted_apart_among_the_useful():
    """`return False`, `return n`, `return self._value`: useful, and counted apart, since
    a small model falls back on them for any start (a comment line beside one changes
    nothing); a return that computes something, or a second statement, is not such a
    body."""
    from cromwell_lsp.training.evaluate import judged, one_line_return, tally
    bare = ["return False\n", "return n\n", "return self._value\n", "return 0\n",
            "return 'x'\n", "# the value\n    return b\"\"\n", "return -1.5\n"]
    other = ["return n + 1\n", "return f(n)\n", "x = n\n    return x\n",
             "return (n)\n", "if n:\n        return n\n", "return\n"]
    assert all(map(one_line_return, bare)) and not any(map(one_line_return, other))
    start = "def f(n):\n    "
    t = tally([{**judged(start, c), "start": start} for c in bare + other])
    # `return` alone does nothing (not useful), so it is not counted among the useful ones
    assert (t["useful"], t["useful_one_line_return"]) == (12, 7)


def test_block_cut_and_parse_check():
    from cromwell_lsp.training.evaluate import cut_at_block_end, parses
    text = "def f(n):\n    return n\n\n\nprint(f(2))\nmore = (\n"
    assert cut_at_block_end(text) == "def f(n):\n    return n\n"
    assert parses(cut_at_block_end(text))
    assert not parses(cut_at_block_end("for i in range(3):\nx = 1\n"))


def test_block_cut_goes_on_through_the_clauses_of_its_statement():
    """A column-0 clause that may go on the block's statement (a `try:`'s handlers, an
    `if`'s elif / else, a loop's else) goes on the block; any other column-0 line ends
    it, as does a clause the statement may not have."""
    from cromwell_lsp.training.evaluate import cut_at_block_end, judged, parses

    start = "try:\n    "
    body = "x = f()\nexcept ValueError:\n    x = None\nelse:\n    y = 1\nfinally:\n    z()\n"
    assert cut_at_block_end(start + body + "print(x)\n", start) == start + body
    j = judged(start, body + "\n\nprint(x)\n")
    assert (j["completion"], j["parses"]) == (body, True)
    for start, text, kept in (
            ("if x:\n    ", "a()\nelif y:\n    b()\nelse:\n    c()\nelse:\n    d()\n",
             "a()\nelif y:\n    b()\nelse:\n    c()\n"),
            ("for i in range(", "3):\n    a()\nelse:\n    b()\nx = 1\n",
             "3):\n    a()\nelse:\n    b()\n"),
            ("async def g():\n    ", "a()\nelse:\n    b()\n", "a()\n"),
            ("try:\n    ", "a()\nelse:\n    b()\n", "a()\n"),
            ("try:\n    ", "a()\nfinally:\n    b()\nexcept E:\n    c()\n",
             "a()\nfinally:\n    b()\n"),
            # a clause the developer typed is the statement's last one
            ("try:\n    a()\nexcept E:\n    ", "b()\nelse:\n    c()\nprint(1)\n",
             "b()\nelse:\n    c()\n"),
            # the start's own lines stay whole, and a clause with no body ends there
            ("with open(p) as f:\n    ", "a()\nexcept E:\n    b()\n", "a()\n"),
            ("while x:\n    ", "a()\nelse:\nx = 1\n", "a()\nelse:\n")):
        assert cut_at_block_end(start + text, start) == start + kept
    assert not parses(cut_at_block_end("try:\n    a()\nelse:\n    b()\n", "try:\n    "))


def test_block_cut_keeps_a_header_typed_over_several_lines():
    """`):` or `)` at column 0 inside the typed header (a signature one parameter per line,
    a decorator's argument list) does not end the block; the body after it is judged."""
    from cromwell_lsp.training.evaluate import cut_at_block_end, judged
    for start in ("def f(\n    a,\n    b,\n):\n    ",
                  "@pytest.mark.parametrize(\n    'a', [1, 2],\n)\ndef test_a(a):\n    "):
        text = start + "return a\n\n\nprint(1)\n"
        assert cut_at_block_end(text, start) == start + "return a\n"
        j = judged(start, "return a\n\nx = (\n")
        assert (j["completion"], j["parses"], j["loops"], j["trivial"]) == \
            ("return a\n", True, False, False)
        # a body that never comes is still a syntax error, judged on the whole header
        assert not judged(start, "\nx = 1\n")["parses"]


@pytest.mark.parametrize("code, lines", [
    # a closer back at its opener's line, the opener not ending that line: no formatter
    ("def __init__(self,\n):\n    pass\n", ["):"]),
    ("class A:\n    def f(self,\n):\n        pass\n", ["):"]),
    ("class A:\n    def f(self, a,\n    ):\n        pass\n", ["    ):"]),
    # a continuation no deeper than the line that opened its bracket
    ("def f(self,\nx):\n    pass\n", ["x):"]),
    ("d = {'a': (1,\n2)}\n", ["2)}"]),
    ("f(a,\n  b,\nc)\n", ["c)"]),
    # what formatters and PEP 8 write
    ("def f(\n    self,\n):\n    pass\n", []),
    ("x = foo(a,\n        b)\n", []),
    ("x = [\n    1,\n]\ny = [\n    1,\n    ]\n", []),
    ("foo(bar(\n    x\n))\n", []),
    ("f(a,  # a comment\n  b)\nd = {\n}\n", []),
    ("if (a and\n        b):\n    pass\n", []),
    # strings and comments are not code: a line inside a string is never judged
    ("s = f('''\n(\nx''')\n", []),
    ("x = ('#', \"(\",\n     1)  # )\n", []),
    ("f(1)\n# (\nx = 1\n", []),
])
def test_misaligned_lines_are_brackets_laid_out_as_no_formatter_would(code, lines):
    from cromwell_lsp.training.evaluate import misaligned_spans
    spans = misaligned_spans(code)
    assert [code[a + 1:].split("\n")[0] for a, _ in spans] == lines
    for a, b in spans:  # from the line break before the line through its first character
        assert code[a] == "\n" and code[b - 1].strip()


def test_misaligned_is_judged_in_the_completion_and_is_not_useful():
    """A start the developer typed is never held against the completion; a completion
    judged before the flag existed is judged on it from its start and completion."""
    from cromwell_lsp.training.evaluate import judged, misaligned_after, tally
    assert misaligned_after("def ", "f(self,\n):\n    return 1\n")
    assert not misaligned_after("class A:\n    def f(self,\n):\n        ", "return 1\n")
    bad = judged("def ", "f(self,\n):\n    return 1\n")
    good = judged("def ", "f(self):\n    return 1\n")
    assert bad["misaligned"] and bad["parses"] and not good["misaligned"]
    comps = [{**bad, "start": "def "}, {**good, "start": "def "}]
    for c in comps:
        del c["misaligned"]
    t = tally(comps)
    assert (t["parse"], t["useful"], t["failures"]["misaligned"]) == (2, 1, 1)


def test_block_cut_goes_on_inside_brackets_and_strings():
    """Lines that begin inside a bracket or a string continue their statement, as they do
    for Python: a signature the completion writes one parameter per line, closed by `):`
    at column 0, or a docstring line at column 0, does not end the block."""
    from cromwell_lsp.training.evaluate import cut_at_block_end, judged
    start = "def "
    text = "f(\n    a,\n    b,\n):\n    return a\n\n\nprint(1)\n"
    assert cut_at_block_end(start + text, start) == start + "f(\n    a,\n    b,\n):\n    return a\n"
    assert judged(start, text)["parses"]
    start = "def f():\n    "
    text = '"""Doc.\n\nat column 0\n"""\n    return (1,\n2)\nprint(2)\n'
    assert cut_at_block_end(start + text, start) == start + text[:-len("print(2)\n")]
    # an unclosed bracket never lets the block end: what follows is judged with it
    j = judged("def f():\n    ", "return g(1,\n\nx = 1\n")
    assert j["completion"] == "return g(1,\n\nx = 1\n" and not j["parses"]


def test_loop_check_flags_repetition_not_code():
    from cromwell_lsp.training.evaluate import loops
    assert loops('"""\n    """\n    """\n    """\n')  # parses, yet a loop
    assert loops("x, 2, 2, 2, 2, 2, 2, 2, 2\n")
    assert loops("    return self._name\n\n    return self._name\n    return self._name\n")
    assert not loops("    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n")
    assert not loops("    a = []\n    b = []\n    )\n    )\n    )\n")  # brackets: not lines


def test_two_processes_through_torchrun(small_tokenizer, tmp_path):
    """DistributedDataParallel on two CPU processes (gloo), started by torchrun exactly as
    on several GPUs: text and image steps (each leaves some parameters unused) run, every
    rank's data position is checkpointed, the run resumes on two processes and refuses
    to resume on one."""
    import subprocess
    import sys

    tok, _ = small_tokenizer
    out = tmp_path / "ddp"

    def torchrun(steps, nproc=2):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "-m", "cromwell_lsp", "train", "run",
               "--config", "tiny", "--corpus", str(tok.path.parent / "corpus"),
               "--tokenizer", str(tok.path), "--out", str(out), "--steps", str(steps),
               "--seq-len", "64", "--batch-size", "2", "--image-every", "2",
               "--image-batch", "2", "--image-side", "32", "--eval-every", "1000",
               "--ckpt-every", "2"]
        env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)

    done = torchrun(4)
    assert done.returncode == 0, done.stderr[-3000:]
    state = torch.load(out / "ckpt.pt", weights_only=False)
    assert state["step"] == 4 and len(state["ranks"]) == 2
    a, b = (r["stream"] for r in state["ranks"])
    assert (a["order"], a["index"]) != (b["order"], b["index"])  # each rank its own files
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    again = torchrun(6)
    assert again.returncode == 0, again.stderr[-3000:]
    assert torch.load(out / "ckpt.pt", weights_only=False)["step"] == 6
    alone = torchrun(8, nproc=1)
    assert alone.returncode != 0 and "resume it on as many" in alone.stderr


def test_retrieval_metric_whitens_reading_noise(small_tokenizer, tmp_path):
    """The retrieval metric, set from functions and misread copies of them, centres the
    functions and maps the noise a misreading adds (with a tenth of the code's own
    spread and the floor) to unit covariance; misread copies then find their own function
    more often than by the plain cosine."""
    import random

    import numpy as np

    from cromwell_lsp.training import data as D
    from cromwell_lsp.training.align import (CODE_SPREAD, FLOOR, reading_noise, text_means,
                                             whitening)
    from cromwell_lsp.training.corpus import read_jsonl
    from cromwell_lsp.training.model import random_init

    tok, _ = small_tokenizer
    model = random_init(Trainer(_config(tmp_path, tok), log=_quiet).cfg, 0).eval()
    texts = [(r["path"], r["text"]) for r in read_jsonl(tok.path.parent / "corpus" / "train.jsonl")]
    pool = D.snippet_pool(texts, random.Random(4), 50)
    assert pool and all(D.fits_screenshot(c) for c in pool)
    center, whiten = whitening(model, pool, tok, random.Random(5), n=300)
    rng = random.Random(5)  # the same functions and misreadings again
    codes = [rng.choice(pool) for _ in range(300)]
    misread = [reading_noise(c, rng) for c in codes]
    assert sum(a != b for a, b in zip(codes, misread)) > 290

    def means(rows):
        ids, mask = D.pad_rows([tok.encode(c)[:512] for c in rows], tok.special("pad"))
        return text_means(model, ids, mask).double().numpy()

    m, q = means(codes), means(misread)
    c, w = center.double().numpy(), whiten.double().numpy()
    assert np.abs(((m - c) @ w.T).mean(0)).max() < 1e-3
    noise = np.cov((q - m).T)
    cov = noise + CODE_SPREAD * np.cov(m.T) + FLOOR * noise.diagonal().mean() * np.eye(len(c))
    np.testing.assert_allclose(w @ cov @ w.T, np.eye(len(c)), atol=1e-3)

    def top1(f):
        a, b = f(q), f(m)
        a /= np.linalg.norm(a, axis=1, keepdims=True)
        b /= np.linalg.norm(b, axis=1, keepdims=True)
        return float(np.mean((a @ b.T).argmax(1) == np.arange(len(a))))
    distinct = len(set(codes))
    assert top1(lambda x: (x - c) @ w.T) > top1(lambda x: x) and distinct > 20


def test_reading_strips_hold_text_at_window_rows(small_tokenizer):
    """The reading phase's strips: cut at window boundaries where the screenshot has
    text, labelled as the whole canvas is, and read with the whole grid's positions."""
    import random

    from cromwell_lsp.model.config import preset
    from cromwell_lsp.training import data as D
    from cromwell_lsp.training.align import strip_batch
    from cromwell_lsp.training.corpus import read_jsonl
    from cromwell_lsp.training.model import random_init

    tok, _ = small_tokenizer
    texts = [(r["path"], r["text"]) for r in read_jsonl(tok.path.parent / "corpus" / "train.jsonl")]
    pool = D.snippet_pool(texts, random.Random(1), 30)
    images, labels, starts = strip_batch(pool, random.Random(2), 7, side=128, rows=8, window=8)
    assert images.shape == (7, 32, 128, 3) and labels.shape == (7, 8, 32)
    assert all(r % 8 == 0 and 0 <= r <= 32 - 8 for r in starts)
    assert all(lab.any() for lab in labels)  # every strip holds characters
    model = random_init(preset("tiny").replace(vocab_size=tok.vocab_size), 0)
    x = torch.as_tensor(images[:2])
    with torch.no_grad():
        same = model.vision(x, strip=(32, [0, 0]))
        moved = model.vision(x, strip=(32, [8, 0]))
        whole = model.vision.pos(32, 32)
    assert same.shape == (2, 8 * 32, model.cfg.vision_dim)
    assert not torch.equal(same[0], moved[0]) and torch.equal(same[1], moved[1])
    assert not torch.equal(whole[:8], whole[8:16])  # the rows' positions differ


@pytest.mark.parametrize("completion, expected", [
    ("return\n", True), ("# nothing to do\n    pass\n", True), ("return None\n", True),
    ("...\n", True), ("return n\n", False), ("if x:\n        return\n    return y\n", False),
    ("", False), ("# only a comment\n", False)])
def test_a_completion_that_does_nothing_is_trivial(completion, expected):
    from cromwell_lsp.training import evaluate
    assert evaluate.trivial(completion) is expected


def test_starts_are_counted_by_the_statement_they_open():
    from cromwell_lsp.training import evaluate

    assert [evaluate.start_kind(s) for s in (
        "class Stack:\n    ", "import os\n\n\n@cache\ndef f(x):\n    ", "for i in range(",
        "    async def run(self):\n        ", "try:\n    ", "x = 1\n", "")] == \
        ["class", "def", "for", "async", "try", "other", "other"]
    good = {"completion": "return 1\n", "parses": True, "loops": False, "trivial": False,
            "misaligned": False}
    bad = {**good, "parses": False}
    comps = [{**good, "start": "class A:\n    "}, {**bad, "start": "class B:\n    "},
             {**good, "start": "def f():\n    "}]
    other = [{**bad, "start": "class A:\n    "}, {**good, "start": "class B:\n    "},
             {**good, "start": "def f():\n    "}]
    assert evaluate.by_kind(comps) == {"class": {"starts": 2, "useful": 1},
                                       "def": {"starts": 1, "useful": 1}}
    assert evaluate.by_kind(comps, other) == {
        "class": {"starts": 2, "useful": 1, "useful_only_this": 1, "useful_only_other": 1},
        "def": {"starts": 1, "useful": 1, "useful_only_this": 0, "useful_only_other": 0}}


def test_train_starts_completes_and_pairs_held_out_starts(small_tokenizer, tmp_path, capsys):
    """`cromwell train starts`: the packaged model's greedy completions of the held-out
    block starts, written out (with the text as decoded) and counted; a second call against the first file pairs
    them start by start (greedy on the same weights: nothing differs)."""
    import json

    from cromwell_lsp import cli
    from cromwell_lsp.model import DEFAULT_WEIGHTS as weights
    from cromwell_lsp.training import evaluate

    tok, _ = small_tokenizer
    corpus = tok.path.parent / "corpus"
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    assert cli.main(["train", "starts", "--weights", str(weights), "--corpus", str(corpus),
                     "--out", str(first), "--starts", "6", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    comps = json.loads(first.read_text())
    assert [c["start"] for c in comps] == evaluate.wide_starts(corpus, 6)
    near = report["all"].pop("closeness")
    assert report["all"] == evaluate.tally(comps) and report["all"]["starts"] == 6
    assert near == evaluate.closeness(comps, evaluate.real_rests(corpus))
    assert report["first_3000"] == report["all"]
    kinds = report.pop("by_kind")
    assert kinds == evaluate.by_kind(comps) and sum(k["starts"] for k in kinds.values()) == 6
    assert sum(k["useful"] for k in kinds.values()) == report["all"]["useful"]
    # the real blocks: each start's rest is its block's; a completion equal to it scores 1
    rests = evaluate.real_rests(corpus)
    assert set(evaluate.wide_starts(corpus, 10_000)) == set(rests)
    real = [{"start": s, "completion": rests[s]} for s in evaluate.wide_starts(corpus, 6)]
    assert evaluate.closeness(real, rests)["mean_ratio"] == 1.0
    assert evaluate.closeness(real, rests)["first_line_exact"] == sum(
        bool(rests[c["start"]].split("\n")[0].strip()) for c in real)
    none = evaluate.closeness([{**c, "completion": ""} for c in real], rests)
    assert none == {"mean_ratio": 0.0, "first_line_exact": 0, "distinct_first_lines": 0,
                    "mean_chars": 0.0}
    assert evaluate.closeness(real, rests)["distinct_first_lines"] == len(
        {rests[c["start"]].split("\n")[0].strip() for c in real} - {""})
    # each row keeps the text as decoded, which the judge counts again to the same row
    assert all({**evaluate.judged(c["start"], c["text"]), "start": c["start"],
                "text": c["text"], "ms": c["ms"]} == c for c in comps)
    assert cli.main(["train", "starts", "--weights", str(weights), "--corpus", str(corpus),
                     "--out", str(second), "--starts", "6", "--against", str(first),
                     "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert [c["completion"] for c in json.loads(second.read_text())] == \
        [c["completion"] for c in comps]
    assert again["paired"]["useful_only_this"] == again["paired"]["useful_only_other"] == 0
    assert all(k["useful_only_this"] == k["useful_only_other"] == 0
               for k in again["by_kind"].values())
    # other starts cannot be paired; a missing --out file name is a clear error
    assert cli.main(["train", "starts", "--weights", str(weights), "--corpus", str(corpus),
                     "--out", str(second), "--starts", "5", "--against", str(first)]) == 2
    assert "same starts" in capsys.readouterr().err
    assert cli.main(["train", "starts", "--weights", str(weights), "--corpus", str(corpus)]) == 2
    assert "--out FILE.json" in capsys.readouterr().err


@pytest.mark.parametrize("options", [{}, {"editor": True, "alternatives": 1}])
def test_completions_shared_out_over_processes_are_the_ones_made_in_process(small_tokenizer,
                                                                           options):
    """`train starts` and `train eval` complete their starts in one process per core: the
    rows, in their order, are what one process makes, start by start."""
    from cromwell_lsp.model import DEFAULT_WEIGHTS as weights
    from cromwell_lsp.model import CromwellVLJEPA
    from cromwell_lsp.training import evaluate

    tok, _ = small_tokenizer
    starts = evaluate.wide_starts(tok.path.parent / "corpus", 5) + list(evaluate.STARTS[:2])
    here = evaluate.completions(CromwellVLJEPA.load(weights), starts, **options)
    shared = evaluate.completions_in_workers(weights, starts, 2, **options)
    assert [r["start"] for r in shared] == starts
    assert [{k: v for k, v in r.items() if k != "ms"} for r in shared] == \
        [{k: v for k, v in r.items() if k != "ms"} for r in here]
    from cromwell_lsp import kernels

    threads = kernels.threads()
    alone = evaluate.completions_in_workers(weights, starts[:2], 1, **options)
    assert [r["completion"] for r in alone] == [r["completion"] for r in here[:2]]
    assert kernels.threads() == threads  # one worker runs here, on this process's threads


def test_train_starts_editor_judges_what_the_server_inserts(small_tokenizer, tmp_path, capsys):
    """`train starts --editor`: each start judged on the text the server's completer puts
    in the editor for it (guard on, loops stopped, finished), with the empty ones counted."""
    import json

    from cromwell_lsp import cli
    from cromwell_lsp.features.completion import Completer
    from cromwell_lsp.features.session import Sessions
    from cromwell_lsp.model import DEFAULT_WEIGHTS as weights
    from cromwell_lsp.model import CromwellVLJEPA
    from cromwell_lsp.settings import Settings
    from cromwell_lsp.training import evaluate

    tok, _ = small_tokenizer
    corpus = tok.path.parent / "corpus"
    out = tmp_path / "e.json"
    assert cli.main(["train", "starts", "--editor", "--weights", str(weights), "--corpus",
                     str(corpus), "--out", str(out), "--starts", "6", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = json.loads(out.read_text())
    assert report["editor"] and report["guard"]
    assert report["all"]["empty"] == sum(r["empty"] for r in rows)
    model = CromwellVLJEPA.load(weights)
    settings = Settings(max_tokens=96)
    for row in rows:
        completer = Completer(model, Sessions(model.new_cache, budget_bytes=64 << 20))
        start = row["start"]
        shown = completer.complete("file:///t.py", start, len(start), settings).text
        assert row["completion"] == evaluate.judged(start, shown)["completion"]
        assert row["empty"] == (not shown.strip())


def test_midline_starts_cut_inside_the_header(small_tokenizer, tmp_path, capsys):
    """`train starts --midline`: each start cut inside its header's line (after its first
    `(`, else after its colon); with --editor the server's completer finishes the line
    and adds the body it opens, judged with the line as one block."""
    import json

    from cromwell_lsp import cli
    from cromwell_lsp.model import DEFAULT_WEIGHTS as weights
    from cromwell_lsp.training import evaluate

    assert evaluate.midline("def f(x):\n    ") == "def f("
    assert evaluate.midline("x = 1\nfor i in range(3):\n        ") == "x = 1\nfor i in range("
    assert evaluate.midline("class A:\n    ") == "class A:"
    assert evaluate.midline("def f(a,\n      b):\n    ") is None  # a header over two lines
    tok, _ = small_tokenizer
    corpus = tok.path.parent / "corpus"
    wide = evaluate.wide_starts(corpus, 10_000)
    cut = evaluate.midline_starts(corpus, 10_000)
    assert cut == [m for m in map(evaluate.midline, wide) if m is not None] and len(cut) >= 6
    out = tmp_path / "m.json"
    assert cli.main(["train", "starts", "--editor", "--midline", "--weights", str(weights),
                     "--corpus", str(corpus), "--out", str(out), "--starts", "6", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = json.loads(out.read_text())
    assert report["mid_line"] and [r["start"] for r in rows] == cut[:6]
    bodies = [r for r in rows if any(l.strip() for l in r["completion"].split("\n")[1:])]
    assert report["all"]["with_body"] == len(bodies)
    for r in bodies:  # a body goes under a header its line finished
        assert (r["start"] + r["completion"].split("\n")[0]).rstrip().endswith(":"), r


@pytest.mark.parametrize("capability, fast", [("AVX512", True), ("AVX2", False),
                                              ("DEFAULT", False)])
def test_bf16_autocast_only_where_bf16_matmuls_are_fast(monkeypatch, capability, fast):
    """A CPU without AVX-512 runs PyTorch's bf16 matmul on a reference kernel (a training
    step about 50x longer than in fp32): training there runs in fp32."""
    import torch

    from cromwell_lsp.training.train import bf16_is_fast

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert bf16_is_fast("cpu") is fast
    assert bf16_is_fast("cuda:0")


def test_a_budgeted_run_ends_its_schedule_in_the_budget_and_resumes_on_it(small_tokenizer,
                                                                          tmp_path):
    """--budget-minutes: the step count is cut, after PLAN_AFTER measured steps, to what the
    budget allows at this machine's pace; the cosine ends there (the last rate is min_lr's
    neighbour, not the middle of a schedule cut off), and running the command again resumes
    that schedule (it trains no further) instead of the one --steps asked for."""
    from cromwell_lsp.training.train import PLAN_AFTER, lr_at

    tok, _ = small_tokenizer
    kw = dict(steps=100_000, warmup=PLAN_AFTER + 2, budget_minutes=0.3, image_every=0,
              ckpt_every=10, lr=3e-3, min_lr=1e-4)
    said = []
    t = Trainer(_config(tmp_path / "a", tok, **kw), log=said.append)
    out = t.run()
    planned = t.c.steps
    assert PLAN_AFTER < planned < 100_000 and out["step"] == planned
    assert any(s.startswith("budget: 0.3 min") and s.endswith(f"-> {planned}") for s in said)
    rows = [json.loads(line) for line in open(tmp_path / "a" / "log.jsonl")]
    last = [r for r in rows if "lr" in r][-1]
    assert last["step"] == planned
    # the schedule of `planned` (on from where a plan past the warmup left it)
    assert last["lr"] == pytest.approx(lr_at(planned - 1, t.c, 0, t.decay_anchor))
    if planned > kw["warmup"] + 10:  # (a loaded machine can spend the budget in the warmup)
        assert last["lr"] < 0.1 * kw["lr"]
    again = Trainer(_config(tmp_path / "a", tok, **kw), log=_quiet)
    assert (again.step, again.c.steps, again.c.warmup) == (planned, planned, t.c.warmup)
    again.run()
    assert again.step == planned


def test_a_budget_that_cuts_the_schedule_in_its_warmup_cuts_the_warmup_too(small_tokenizer,
                                                                             tmp_path):
    """A plan made while the rate still warms up keeps the warmup's share of the schedule
    (a 100-step warmup of 1,300 steps cut to 133 would leave 33 steps of cosine), at least
    twice the steps done (no jump past half the peak rate), at most the warmup asked."""
    from cromwell_lsp.training.train import PLAN_AFTER, lr_at

    tok, _ = small_tokenizer
    t = Trainer(_config(tmp_path / "w", tok, steps=1300, warmup=100, budget_minutes=60,
                        image_every=0), log=_quiet)
    t.step = PLAN_AFTER
    assert t._planned_warmup(1000) == 77
    assert t._planned_warmup(133) == 2 * PLAN_AFTER
    assert t._planned_warmup(1300) == 100
    cut = dataclasses.replace(t.c, steps=133, warmup=t._planned_warmup(133))
    before, after = lr_at(PLAN_AFTER - 1, t.c), lr_at(PLAN_AFTER, cut)
    assert before < after <= 0.55 * t.c.lr
    assert lr_at(2 * PLAN_AFTER, cut) == pytest.approx(t.c.lr, rel=0.01)  # then the cosine
    t.step = 150  # past the warmup: the warmup is what it was
    assert t._planned_warmup(600) == 100


def test_a_plan_past_the_warmup_never_raises_the_rate(small_tokenizer, tmp_path):
    """A budget that moves the cosine's end later after the warmup (the machine sped up)
    or earlier (it slowed down) leaves the rate where it was and goes on down from there
    to min_lr at the new end; the checkpoint keeps the anchor for a resumed run."""
    from cromwell_lsp.training.train import Pace, lr_at

    tok, _ = small_tokenizer
    t = Trainer(_config(tmp_path / "r", tok, steps=3000, warmup=100, budget_minutes=90,
                        image_every=0, lr=1e-3, min_lr=1e-4), log=_quiet)
    t.c = dataclasses.replace(t.c, steps=1300)  # planned early, on a slow start
    pace = Pace(recent=100)
    pace.note(0.0, 5, 0.0)
    _timeline(pace, 5, 595, 1.0)  # the machine is faster since
    t.step, t.elapsed = 600, 600.0
    before = t.c
    assert t._plan(pace).steps == 3000 and t.decay_anchor is not None
    # the old schedule's rate at the next step, and the new schedule's
    assert lr_at(600, t.c, 0, t.decay_anchor) == pytest.approx(lr_at(600, before))
    assert lr_at(600, t.c) > 1.3 * lr_at(600, before)  # without the anchor: up again
    rates = [lr_at(599, before)] + [lr_at(k, t.c, 0, t.decay_anchor) for k in range(600, 3001)]
    assert all(b <= a + 1e-15 for a, b in zip(rates, rates[1:]))
    assert rates[-1] == pytest.approx(1e-4)
    # then the machine slows down: the end moves earlier, on from the rate it has
    _timeline(pace, 600, 100, 60.0)
    t.step, t.elapsed, before, anchor = 700, 6600.0, t.c, t.decay_anchor
    cut = t._plan(pace).steps
    assert 700 < cut < 3000
    assert lr_at(700, t.c, 0, t.decay_anchor) == pytest.approx(lr_at(700, before, 0, anchor))
    rates = [lr_at(699, before, 0, anchor)] + [lr_at(k, t.c, 0, t.decay_anchor)
                                               for k in range(700, cut + 1)]
    assert all(b <= a + 1e-15 for a, b in zip(rates, rates[1:]))
    assert rates[-1] == pytest.approx(1e-4)
    t.save()
    again = Trainer(_config(tmp_path / "r", tok, steps=3000, warmup=100, budget_minutes=90,
                            image_every=0, lr=1e-3, min_lr=1e-4), log=_quiet)
    assert (again.step, again.c.steps, again.decay_anchor) == (700, cut, t.decay_anchor)


def test_train_all_gives_training_what_the_budget_leaves():
    from cromwell_lsp.cli import EXPORT_RESERVE_MIN, training_budget

    assert training_budget(55, 0) == 55 - EXPORT_RESERVE_MIN  # corpus and tokenizer were there
    assert training_budget(55, 4.5 * 60) == pytest.approx(55 - 4.5 - EXPORT_RESERVE_MIN)
    with pytest.raises(SystemExit, match="leaves 0.5 min for training"):
        training_budget(10, 8.5 * 60)


def test_eta_counts_the_pace_after_the_first_slow_steps():
    from cromwell_lsp.training.train import Pace, eta_minutes

    # 5 slow steps (60 s), then 15 at 4 s: 100 steps left take 400 s, not 100 x 120 / 20
    session, pace = (0.0, 1000), Pace()
    pace.note(60.0, 1005, 0.0)
    assert eta_minutes(60.0, 1005, 1105, session, pace) == pytest.approx(1200 / 60)  # one point
    for k in range(1006, 1021):
        pace.note(60.0 + 4 * (k - 1005), k, 0.0)
    assert eta_minutes(120.0, 1020, 1120, session, pace) == pytest.approx(400 / 60)
    # a 50 s validation pass every 250 steps adds 0.2 s a step
    assert eta_minutes(120.0, 1020, 1120, session, pace, 50.0, 250) == pytest.approx(420 / 60)


def _timeline(pace, start, steps, step_s, t=0.0, eval_s=0.0):
    for k in range(start + 1, start + steps + 1):
        t += step_s
        pace.note(t, k, eval_s)
    return t


def test_pace_sees_a_machine_that_slows_down_late_and_leaves_validation_out():
    """An hour at 4 s a step, then 50 steps at 8 s: the last 100 steps' pace (6 s) is what
    the rest of the run will be like, not the session's mean (4.2 s).  A machine slow at
    the start (other work on its cores) and fast since is held to its pace since then, and
    while fewer than 100 steps were timed the pace is theirs.  Validation passes (the
    third element: validation seconds so far) are not steps' time."""
    from cromwell_lsp.training.train import Pace

    pace = Pace(recent=100)
    pace.note(0.0, 5, 0.0)
    t = _timeline(pace, 5, 1000, 4.0)
    assert pace.step_s() == pytest.approx(4.0)
    _timeline(pace, 1005, 50, 8.0, t)
    assert pace.step_s() == pytest.approx(6.0)
    assert len(pace.points) <= 102  # only the recent steps are kept

    faster = Pace(recent=100)
    faster.note(0.0, 5, 0.0)
    t = _timeline(faster, 5, 100, 16.0)
    assert faster.step_s() == pytest.approx(16.0)
    t = _timeline(faster, 105, 50, 4.0, t)
    assert faster.step_s() == pytest.approx(10.0)
    _timeline(faster, 155, 300, 4.0, t)
    assert faster.step_s() == pytest.approx(4.0)

    with_eval = Pace(recent=100)
    with_eval.note(0.0, 5, 0.0)
    t = _timeline(with_eval, 5, 200, 4.0)
    t = _timeline(with_eval, 205, 200, 4.0, t + 90.0, eval_s=90.0)  # a 90 s validation pass
    assert with_eval.step_s() == pytest.approx(4.0)


def test_a_budgeted_run_plans_again_from_the_pace_of_its_last_steps(small_tokenizer, tmp_path):
    """The plan made when the machine slowed from 4 to 8 s a step in the last 50 of 1,050
    steps counts 6 s a step (padded by PLAN_MARGIN) for what the budget has left: the
    session's mean pace would have planned 40% more steps than the time left allows."""
    from cromwell_lsp.training.train import PLAN_MARGIN, Pace

    tok, _ = small_tokenizer
    t = Trainer(_config(tmp_path / "p", tok, steps=3000, warmup=100, budget_minutes=90,
                        image_every=0), log=_quiet)
    pace = Pace(recent=100)
    pace.note(0.0, 5, 0.0)
    _timeline(pace, 1005, 50, 8.0, _timeline(pace, 5, 1000, 4.0))
    t.step, t.elapsed = 1055, 4400.0
    planned = t._plan(pace).steps
    assert planned == 1055 + int((90 * 60 - 4400) / (6.0 * PLAN_MARGIN))
    assert t.c.warmup == 100  # past the warmup: as it was


@pytest.mark.parametrize("what", ["starts", "own", "humaneval"])
def test_completing_with_weights_that_have_no_tokenizer_beside_them_is_a_clear_error(
        what, small_tokenizer, tmp_path, capsys):
    """The engine loads weights without their tokenizer; completing cannot, and says which
    file is missing instead of failing inside a worker process."""
    import shutil

    from cromwell_lsp import cli
    from cromwell_lsp.model import DEFAULT_WEIGHTS

    tok, _ = small_tokenizer
    weights = tmp_path / "model-int8.safetensors"
    shutil.copy(DEFAULT_WEIGHTS, weights)
    out = tmp_path / ("o.jsonl" if what == "own" else "o.json")
    assert cli.main(["train", what, "--weights", str(weights), "--corpus",
                     str(tok.path.parent / "corpus"), "--out", str(out), "--starts", "2"]) == 2
    err = capsys.readouterr().err
    assert f"{weights}: no tokenizer.json beside it" in err and not out.exists()
