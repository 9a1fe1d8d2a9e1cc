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


def test_an_edit_raises_the_handler_changes_one_layer_and_exports(small_tokenizer,
                                                                 twenty_step_run, tmp_path):
    from cromwell_lsp.training.export import export
    from tests.test_training import _quiet

    tok, _ = small_tokenizer
    corpus = tok.path.parent / "corpus"
    report = E.edit(twenty_step_run / "ckpt.pt", tmp_path / "edited", corpus, tok.path,
                    contexts=24, rows=8, log=_quiet)
    assert report["handler_contexts"] > 5 and report["kept_contexts"] > 5
    # held-out `try` bodies (validation files, never edited on) now lead to their handler
    before, after = report["before"]["handler"], report["after"]["handler"]
    assert after["p"] > before["p"] + 0.05, report
    assert report["kl_per_token"] > 0

    old = torch.load(twenty_step_run / "ckpt.pt", weights_only=False)
    new = torch.load(tmp_path / "edited" / "ckpt.pt", weights_only=False)
    changed = [k for k in old["model"] if not torch.equal(old["model"][k], new["model"][k])]
    assert changed == [E.LAYER + ".weight"]
    assert [e["layer"] for e in new["edits"]] == [E.LAYER] and new["step"] == old["step"]

    # an edited checkpoint exports as any other (the engine's logits checked against it;
    # the int8 file of an edit this large on a 20-step model is past the int8 bound)
    got = export(tmp_path / "edited" / "ckpt.pt", tmp_path / "export", tok.path, log=_quiet,
                 quants=("f32",))
    assert got["f32_rel_err"] < 1e-4


def test_bad_requests_are_clear_errors(small_tokenizer, twenty_step_run, tmp_path, capsys):
    from cromwell_lsp.cli import main
    from tests.test_training import _quiet

    tok, _ = small_tokenizer
    corpus = tok.path.parent / "corpus"
    ckpt = twenty_step_run / "ckpt.pt"
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
    assert main(["train", "edit", "--ckpt", str(ckpt), "--out", str(twenty_step_run),
                 "--tokenizer", str(tok.path), "--corpus", str(corpus)]) == 2
    assert "must not hold --ckpt" in capsys.readouterr().err
    assert main(["train", "edit", "--out", str(tmp_path / "e"), "--tokenizer", str(tok.path),
                 "--corpus", str(corpus)]) == 2
    assert "needs --ckpt" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()
