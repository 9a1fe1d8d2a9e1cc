"""GPTQ rounding for the int8 export: weights on their int8 levels come back unchanged,
off-grid weights keep what the layer computes closer than nearest rounding, and an export
rounded this way loads in the engine, within the int8 bound, closer to its twin."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cromwell_lsp import kernels  # noqa: E402
from cromwell_lsp.training.gptq import gptq_q8, on_levels  # noqa: E402


def _inputs(rng, k, n=3000):
    """Correlated inputs with an offset, as a layer's activations are."""
    return rng.normal(size=(n, k)) @ rng.normal(size=(k, k)) * 0.3 + rng.normal(size=(1, k))


def _out_err(x, q, d, w):
    return np.linalg.norm(x @ (kernels.dequantize_q8_ref(q, d) - w).T) / np.linalg.norm(x @ w.T)


def test_weights_on_their_int8_levels_come_back_unchanged():
    rng = np.random.default_rng(0)
    q, d = kernels.quantize_q8_ref(rng.normal(size=(64, 128)).astype(np.float32) * 0.05)
    x = _inputs(rng, 128)
    q2, d2 = gptq_q8(kernels.dequantize_q8_ref(q, d), x.T @ x)
    np.testing.assert_array_equal(q2, q)
    np.testing.assert_array_equal(d2, d)
    # levels whose largest value is under 127 (as GPTQ may leave a block): the same values
    small = (q // 2).astype(np.int8)
    q3, d3 = gptq_q8(kernels.dequantize_q8_ref(small, d), x.T @ x)
    np.testing.assert_array_equal(kernels.dequantize_q8_ref(q3, d3),
                                  kernels.dequantize_q8_ref(small, d))
    assert on_levels(kernels.dequantize_q8_ref(small, d) + np.float32(1e-4)) is None


def test_the_layer_output_is_kept_closer_than_by_nearest_rounding():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(96, 128)).astype(np.float32)
    x = _inputs(rng, 128)
    q, d = gptq_q8(w, x.T @ x)
    assert q.dtype == np.int8 and d.dtype == np.float16 and d.shape == (96, 4)
    assert np.abs(q.astype(int)).max() <= 127
    nearest = _out_err(x, *kernels.quantize_q8_ref(w), w)
    assert _out_err(x, q, d, w) < 0.8 * nearest

    # a small move off the levels (a fifth of a level, a short leg's): nearest rounding
    # puts most weights back where they were; GPTQ still lands closer
    q0, d0 = kernels.quantize_q8_ref(w)
    w0 = kernels.dequantize_q8_ref(q0, d0)
    moved = w0 + rng.normal(size=w.shape).astype(np.float32) * float(d0.astype(np.float32).mean()) * 0.2
    qn, dn = kernels.quantize_q8_ref(moved)
    qg, dg = gptq_q8(moved, x.T @ x)
    assert _out_err(x, qg, dg, moved) < 0.95 * _out_err(x, qn, dn, moved)


def test_inputs_never_seen_leave_no_nan_and_a_bad_shape_is_an_error():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(8, 64)).astype(np.float32)
    x = _inputs(rng, 64)
    x[:, 40:] = 0  # the last 24 inputs are never non-zero
    q, d = gptq_q8(w, x.T @ x)
    assert np.isfinite(d.astype(np.float32)).all()
    assert np.abs(kernels.dequantize_q8_ref(q, d) - w)[:, 40:].max() <= d.astype(np.float32).max()
    with pytest.raises(ValueError, match="blocks of 32"):
        gptq_q8(w[:, :48], np.eye(48))


def test_calibration_without_a_corpus_is_a_clear_error(small_tokenizer, tmp_path):
    from cromwell_lsp.training.gptq import calibration_rows

    tok, _ = small_tokenizer
    with pytest.raises(ValueError, match="has no train.jsonl"):
        calibration_rows(tmp_path / "nothing", tok, 64, 4)
    with pytest.raises(ValueError, match="at least one"):
        calibration_rows(tok.path.parent / "corpus", tok, 64, 0)


def test_a_gptq_export_loads_in_the_engine_closer_to_its_twin(small_tokenizer, twenty_step_run,
                                                            tmp_path):
    from cromwell_lsp.model import CromwellVLJEPA
    from cromwell_lsp.model import weights as W
    from cromwell_lsp.training.export import export, import_weights, load_checkpoint
    from tests.test_training import _quiet

    tok, _ = small_tokenizer
    corpus = tok.path.parent / "corpus"
    ckpt = twenty_step_run / "ckpt.pt"
    near = export(ckpt, tmp_path / "near", tok.path, log=_quiet,
                  quants=("int8",))
    gptq = export(ckpt, tmp_path / "gptq", tok.path, log=_quiet,
                  quants=("int8",), gptq_corpus=corpus, gptq_rows=16)
    assert near["int8_rounding"] == "nearest" and gptq["int8_rounding"] == "gptq"
    assert gptq["int8_rel_err"] < 0.1

    # on held-out text the engine's logits from the GPTQ file are closer to the twin's
    twin, _ = load_checkpoint(ckpt)
    text = (corpus / "val.jsonl").read_text()[:20_000]
    ids = tok.encode(text)[:60]
    with torch.no_grad():
        ref = twin(torch.as_tensor([ids]), jepa=False).logits[0].double().numpy()

    def err(path):
        model = CromwellVLJEPA.load(path)
        return np.abs(model.forward(ids, model.new_cache(len(ids))) - ref).mean()

    assert err(tmp_path / "gptq" / "model-int8.safetensors") < \
        err(tmp_path / "near" / "model-int8.safetensors")

    # an int8 file imported and exported again through GPTQ: the same weights for the
    # engine (a block whose largest level GPTQ left under 127 may come back on the
    # finer grid of the same values)
    import_weights(tmp_path / "gptq" / "model-int8.safetensors", tmp_path / "imp" / "ckpt.pt",
                   tok.path, log=_quiet)
    export(tmp_path / "imp" / "ckpt.pt", tmp_path / "again", tok.path, log=_quiet,
           quants=("int8",), gptq_corpus=corpus, gptq_rows=16)
    first = W.load(tmp_path / "gptq" / "model-int8.safetensors")
    second = W.load(tmp_path / "again" / "model-int8.safetensors")
    assert set(first.tensors) == set(second.tensors)
    for name, a in first.tensors.items():
        if name.endswith(".q"):
            base = name[:-2]
            np.testing.assert_array_equal(
                kernels.dequantize_q8_ref(second.tensors[name], second.tensors[base + ".d"]),
                kernels.dequantize_q8_ref(a, first.tensors[base + ".d"]), err_msg=base)
        elif not name.endswith(".d"):
            np.testing.assert_array_equal(second.tensors[name], a, err_msg=name)
