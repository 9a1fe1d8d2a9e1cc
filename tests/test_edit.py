"""`train edit`: the closed-form change maps each key to its target while ordinary inputs
keep their outputs, and an edit of a trained checkpoint raises the handler after `try`
bodies of held-out files, changes that one layer only, and exports like any checkpoint."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cromwell_lsp.training import edit as E  # noqa: E402


def _moments(rng, k, n=4000):
    x = rng.normal(size=(n, k)) @ rng.normal(size=(k, k)) * 0.3
    return torch.as_tensor(x), torch.as_tensor(x.T @ x / n)


def test_the_change_maps_keys_to_targets_and_holds_ordinary_inputs():
    rng = np.random.default_rng(0)
    x, C = _moments(rng, 48)
    K = torch.as_tensor(rng.normal(size=(48, 6)))
    R = torch.as_tensor(rng.normal(size=(16, 6)))
    R[:, 4:] = 0  # two kept keys

    # a weak hold: every key reaches its target, the kept ones stay where they were
    weak = E.solve(K, R, C, 1e-6)
    np.testing.assert_allclose((weak @ K).numpy(), R.numpy(), atol=1e-4)

    # the minimum-norm change that does the same, blind to C, moves ordinary inputs more
    blind = R @ torch.linalg.pinv(K)
    np.testing.assert_allclose((blind @ K).numpy(), R.numpy(), atol=1e-6)
    assert (x @ weak.T).norm() < (x @ blind.T).norm()

    # a stronger hold trades reaching the targets for a smaller change on ordinary inputs
    strong = E.solve(K, R, C, 1000.0)
    assert (x @ strong.T).norm() < 0.5 * (x @ weak.T).norm()
    assert (strong @ K - R).norm() > (weak @ K - R).norm()


@pytest.fixture
def edit_inputs(small_tokenizer, twenty_step_run):
    """(tokenizer, corpus folder, 20-step checkpoint) an edit reads."""
    tok, _ = small_tokenizer
    return tok, tok.path.parent / "corpus", twenty_step_run / "ckpt.pt"


def _edited(ckpt, out) -> tuple[list[str], dict, dict]:
    """(the names of the weights an edit changed, the checkpoint before, after)."""
    old = torch.load(ckpt, weights_only=False)
    new = torch.load(out / "ckpt.pt", weights_only=False)
    return [k for k in old["model"] if not torch.equal(old["model"][k], new["model"][k])], old, new


def test_an_edit_raises_the_handler_changes_one_layer_and_exports(edit_inputs, tmp_path):
    from cromwell_lsp.training.export import export
    from tests.test_training import _quiet

    tok, corpus, ckpt = edit_inputs
    report = E.edit(ckpt, tmp_path / "edited", corpus, tok.path, contexts=24, rows=8,
                    log=_quiet)
    assert report["edit_contexts"] > 5 and report["kept_contexts"] > 5
    assert report["task"] == "handler" and report["strength"] == 1e4
    # held-out `try` bodies (validation files, never edited on) now lead to their handler
    before, after = report["before"]["handler"], report["after"]["handler"]
    assert after["p"] > before["p"] + 0.05, report
    assert report["kl_per_token"] > 0

    changed, old, new = _edited(ckpt, tmp_path / "edited")
    assert changed == [E.LAYER + ".weight"]
    assert [e["layer"] for e in new["edits"]] == [E.LAYER] and new["step"] == old["step"]

    # an edited checkpoint exports as any other (the engine's logits checked against it;
    # the int8 file of an edit this large on a 20-step model is past the int8 bound)
    got = export(tmp_path / "edited" / "ckpt.pt", tmp_path / "export", tok.path, log=_quiet,
                 quants=("f32",))
    assert got["f32_rel_err"] < 1e-4


def test_bad_requests_are_clear_errors(edit_inputs, tmp_path, capsys):
    from cromwell_lsp.cli import main
    from tests.test_training import _quiet

    tok, corpus, ckpt = edit_inputs
    with pytest.raises(ValueError, match="not a linear layer"):
        E.edit(ckpt, tmp_path / "e", corpus, tok.path, layer="ar.layers.1.ffn", log=_quiet)
    with pytest.raises(ValueError, match="--edit-contexts 1 or more"):
        E.edit(ckpt, tmp_path / "e", corpus, tok.path, contexts=0, log=_quiet)
    with pytest.raises(ValueError, match="train.jsonl"):
        E.edit(ckpt, tmp_path / "e", tmp_path / "nothing", tok.path, log=_quiet)
    no_try = tmp_path / "no_try"
    no_try.mkdir()
    (no_try / "train.jsonl").write_text(json.dumps({"path": "a.py", "text": "x = 1\n"}) + "\n")
    with pytest.raises(ValueError, match="no `try` statement"):
        E.edit(ckpt, tmp_path / "e", no_try, tok.path, log=_quiet)
    assert main(["train", "edit", "--ckpt", str(ckpt), "--out", str(ckpt.parent),
                 "--tokenizer", str(tok.path), "--corpus", str(corpus)]) == 2
    assert "must not hold --ckpt" in capsys.readouterr().err
    assert main(["train", "edit", "--out", str(tmp_path / "e"), "--tokenizer", str(tok.path),
                 "--corpus", str(corpus)]) == 2
    assert "needs --ckpt" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


# ---- the bracket task: a header's open bracket closed before its colon -----------------
def test_a_header_left_with_a_bracket_open_is_found():
    slip = E.header_bracket_slip
    assert slip("if f(x:\n    pass\n") == (6, ")")
    assert slip("for k in sorted(d.items(:  # keys\n") == (24, ")")
    assert slip("x = f(lambda y: y)\nif g([a:\n") == (26, "]")
    assert slip("def f(\n    a,\n    b:\n") == (19, ")")
    # brackets and colons inside strings and comments are text, not code
    assert slip('if f("(" # (\n, x:  # c\n') == (16, ")")
    assert slip('if f(x) == "(:":\n    y = 1  # if (:\n') is None
    assert slip('x = """(:\n"""\nif a:\n') is None
    assert slip("if s == 'a\\'(':\n") is None
    # a colon ending a line of a dict or a slice is no header; closed brackets are fine
    assert slip('d = {"a":\n    1}\n') is None
    assert slip("if f(x):\n    return y[1:]\n") is None


def _bracket_rows():
    """Judged completions as the engine would give them: failing ones whose header leaves
    a bracket open, and working ones."""
    from cromwell_lsp.training.evaluate import judged

    rows = []
    names = ["value", "item", "key", "node", "path", "count", "name", "size", "data",
             "line", "word", "text", "row", "col", "part", "token", "entry", "field"]
    for i, a in enumerate(names):
        b = names[(i + 5) % len(names)]
        for start, text in ((f"def f({a}):\n    ", f"if isinstance({a}, (int, {b}):\n        return {a}\n"),
                            (f"def g({a}, {b}):\n    ", f"for x in sorted({a}.items(:\n        print(x, {b})\n"),
                            (f"def h({a}):\n    ", f"if len({a}) > 1:\n        return {a}[0]\n    return None\n"),
                            (f"def k({a}, {b}):\n    ", f"while {a} and ({b} or {a}):\n        {a} = {a}[1:]\n    return {b}\n")):
            rows.append({"start": start, **judged(start, text)})
    return rows


def test_bracket_contexts_are_the_models_own_text_up_to_the_colon(small_tokenizer):
    tok, _ = small_tokenizer
    rows = _bracket_rows()
    slips = E.bracket_contexts(rows)
    assert len(slips) == 36 and all(not r["parses"] for r in rows if r["start"].startswith(("def f", "def g")))
    start, text, at, closer = slips[0]
    assert text[at] == ":" and closer == ")" and text[:at].endswith("(int, count)")
    got = E.own_bracket_contexts(rows, tok, 100, seed=0)
    assert len(got["check"]["slip"]) == 18 and len(got["edit"]) == 18
    assert len(got["keep"]) == 18 and got["check"]["kept"] == []
    head = len(E.prompts.encode(E.prompts.fim_spm(start, ""), tok)[0])
    for ids, target in got["edit"] + got["check"]["slip"]:
        assert tok.decode([target]).startswith(")")
    # each slip context is its start's prompt and the completion up to the colon
    ids, target = E._context(start, text, at, closer + text[at:], tok)
    assert tok.decode(ids[head:]) + tok.decode([target]) in text[:at] + closer + text[at:]
    assert tok.decode(ids[head:]).startswith(text[:at - 4])
    for ids, target in got["keep"]:  # kept points: the text the working completion wrote
        assert tok.decode([target])[0] in ")]}:"


def test_a_bracket_edit_raises_the_closer_on_held_back_slips(edit_inputs, tmp_path):
    from tests.test_training import _quiet

    tok, corpus, ckpt = edit_inputs
    report = E.edit(ckpt, tmp_path / "edited", corpus, tok.path, task="brackets",
                    own=_bracket_rows(), strength=1e3, rows=8, log=_quiet)
    assert report["task"] == "brackets" and report["strength"] == 1e3
    assert report["edit_contexts"] == 18 and report["kept_contexts"] > 18
    before, after = report["before"]["slip"], report["after"]["slip"]
    assert after["p"] > before["p"] + 0.05, report
    changed, _, new = _edited(ckpt, tmp_path / "edited")
    assert changed == [E.LAYER + ".weight"]
    assert [e["task"] for e in new["edits"]] == ["brackets"]


def test_the_bracket_task_completes_training_starts_and_says_when_nothing_slips(
        edit_inputs, tmp_path, capsys):
    from cromwell_lsp.cli import main
    from cromwell_lsp.training.evaluate import _val_starts
    from cromwell_lsp.training.export import export
    from tests.test_training import _quiet

    tok, corpus, ckpt = edit_inputs
    with pytest.raises(ValueError, match="no task 'loops'"):
        E.edit(ckpt, tmp_path / "e", corpus, tok.path, task="loops", log=_quiet)
    with pytest.raises(ValueError, match="give --weights"):
        E.edit(ckpt, tmp_path / "e", corpus, tok.path, task="brackets", log=_quiet)
    assert main(["train", "edit", "--edit-task", "brackets", "--ckpt", str(ckpt), "--out",
                 str(tmp_path / "e"), "--tokenizer", str(tok.path), "--corpus", str(corpus)]) == 2
    assert "give --weights, the int8 export of --ckpt" in capsys.readouterr().err
    with pytest.raises(ValueError, match="nothing to edit"):
        E.edit(ckpt, tmp_path / "e", corpus, tok.path, task="brackets",
               own=[r for r in _bracket_rows() if r["parses"]], log=_quiet)

    # the engine's own completions of training starts, none of them a held-out start
    export(ckpt, tmp_path / "export", tok.path, log=_quiet, quants=("int8",))
    weights = tmp_path / "export" / "model-int8.safetensors"
    records = [json.loads(l) for l in (corpus / "train.jsonl").read_text().splitlines()]
    val = [json.loads(l) for l in (corpus / "val.jsonl").read_text().splitlines()]
    held = {s for rec in val for s in _val_starts(rec)}
    rows = E.own_completions(weights, tok, {"train": records, "val": val}, 4, 0, _quiet)
    assert len(rows) == 4 and {"start", "completion", "parses"} <= set(rows[0])
    assert not {r["start"] for r in rows} & held
    assert {r["start"] for r in rows} <= {s for rec in records for s in _val_starts(rec)}
