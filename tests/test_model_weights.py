"""Weights files: twin -> export -> load keeps every name, shape and value and maps the file
without copying; every kind of damage raises WeightsError naming the file; int8 files hold
the q/d pairs kernels.quantize_q8 makes."""
import json
import struct

import numpy as np
import pytest

from cromwell_lsp import kernels
from cromwell_lsp.model import weights as W
from tests.model_helpers import TINY, TINY_LLAMA, random_twin

torch = pytest.importorskip("torch")
from cromwell_lsp.training.model import export_safetensors, state_arrays  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    twin = random_twin(TINY)
    path = tmp_path_factory.mktemp("w") / "model.safetensors"
    export_safetensors(twin, path, tokenizer_sha256="ab" * 32)
    return path, state_arrays(twin)


def test_round_trip_names_shapes_values(exported):
    path, arrays = exported
    wf = W.load(path)
    assert wf.config == TINY and wf.quant == "f32" and wf.tokenizer_sha256 == "ab" * 32
    assert set(wf.tensors) == set(arrays) == set(W.fp32_tensors(TINY))
    for name, a in arrays.items():
        assert wf.tensors[name].shape == a.shape and wf.tensors[name].dtype == np.float32
        np.testing.assert_array_equal(wf.tensors[name], a)
    assert json.loads(wf.metadata["config"]) == TINY.to_dict()
    assert wf.metadata["format_version"] == W.FORMAT_VERSION


def test_load_is_zero_copy_and_read_only(exported):
    wf = W.load(exported[0])
    buf = wf.buffer()
    for a in wf.tensors.values():
        assert np.shares_memory(a, buf)
        assert not a.flags.writeable
        assert a.ctypes.data % a.itemsize == 0
    assert buf.ctypes.data % 64 == 0 and wf.tensors["output.weight"].ctypes.data % 64 == 0


def test_llama_round_trip(tmp_path):
    path = tmp_path / "llama.safetensors"
    export_safetensors(random_twin(TINY_LLAMA), path)
    wf = W.load(path)
    assert set(wf.tensors) == {n for n in W.fp32_tensors(TINY_LLAMA)}
    assert not any(n.startswith(("vision", "fusion", "jepa", "ar.", "joint")) for n in wf.tensors)


def test_int8_file_holds_q8_pairs(exported, tmp_path):
    src, arrays = exported
    dst = tmp_path / "model-int8.safetensors"
    W.quantize_file(src, dst)
    wf = W.load(dst)
    assert wf.quant == "int8" and set(wf.tensors) == set(W.expected_tensors(TINY, "int8"))
    q, d = kernels.quantize_q8(arrays["lang.layers.0.attn.wq.weight"])
    np.testing.assert_array_equal(wf.tensors["lang.layers.0.attn.wq.weight.q"], q)
    np.testing.assert_array_equal(wf.tensors["lang.layers.0.attn.wq.weight.d"], d)
    # embeddings, norms, convolutions and positions stay float32
    for name in ("lang.tok_embeddings.weight", "lang.norm.weight", "vision.pos_embed",
                 "vision.patch_embed.weight", "vision.mbconv.0.dw.weight"):
        assert wf.tensors[name].dtype == np.float32
    assert wf.nbytes < 0.45 * W.load(src).nbytes
    with pytest.raises(W.WeightsError, match="already quantized"):
        W.quantize_file(dst, tmp_path / "again.safetensors")


def test_expected_tensors_skip_rows_not_multiple_of_32():
    cfg = TINY.replace(vision_ffn_dim=80)  # vision w2 is [64, 80]: 80 % 32 != 0
    exp = W.expected_tensors(cfg, "int8")
    assert exp["vision.blocks.0.ffn.w2.weight"] == ((64, 80), np.dtype(np.float32))
    assert exp["vision.blocks.0.ffn.w1.weight.q"] == ((80, 64), np.dtype(np.int8))
    assert exp["vision.blocks.0.ffn.w1.weight.d"] == ((80, 2), np.dtype(np.float16))


# ---- damage: each case raises WeightsError naming the file -------------------------------
def _parts(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _write(path, header, data):
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)
    return path


def _edit_header(src, dst, edit):
    header, data = _parts(src)
    edit(header)
    return _write(dst, header, data)


def _first(header):
    return next(k for k in header if k != "__metadata__")


def _corrupt_cases():
    def meta(key, value):
        return lambda h: h["__metadata__"].__setitem__(key, value)

    def entry(field, value):
        return lambda h: h[_first(h)].__setitem__(field, value)

    def overlap(h):
        a, b = [k for k in h if k != "__metadata__"][:2]
        h[b]["data_offsets"] = h[a]["data_offsets"]
        h[b]["shape"], h[b]["dtype"] = h[a]["shape"], h[a]["dtype"]

    def rename(h):
        h["lang.extra.weight"] = h.pop("lang.norm.weight")

    return {
        "out of range": (entry("data_offsets", [0, 10**9]), "do not fit"),
        "overlap": (overlap, "overlap"),
        "unknown dtype": (entry("dtype", "F8_E4M3"), "dtype F8_E4M3"),
        "malformed entry": (entry("shape", "big"), "malformed"),
        "names": (rename, r"missing \['lang.norm.weight'\], unexpected \['lang.extra.weight'\]"),
        "missing": (lambda h: h.pop("output.weight"), r"missing \['output.weight'\]"),
        "version": (meta("format_version", "0"), "format_version is '0'"),
        "config": (meta("config", json.dumps({"d_model": 64})), "not a valid model config"),
        "config json": (meta("config", "{"), "not a valid model config"),
        "quant": (meta("quant", "q4"), "'quant' is 'q4'"),
    }


@pytest.mark.parametrize("case", list(_corrupt_cases()))
def test_damaged_header_raises(exported, tmp_path, case):
    edit, message = _corrupt_cases()[case]
    bad = _edit_header(exported[0], tmp_path / "bad.safetensors", edit)
    with pytest.raises(W.WeightsError, match=message) as err:
        W.load(bad)
    assert str(bad) in str(err.value) and "HINT" in str(err.value)


def test_wrong_shape_and_dtype(exported, tmp_path):
    arrays = dict(exported[1])
    meta = W.metadata_for(TINY, "f32")
    arrays["lang.norm.weight"] = np.ones(65, np.float32)
    W.save(tmp_path / "shape.safetensors", arrays, meta)
    with pytest.raises(W.WeightsError, match=r"'lang.norm.weight' is float32\[65\].*float32\[64\]"):
        W.load(tmp_path / "shape.safetensors")
    arrays["lang.norm.weight"] = np.ones(64, np.float16)
    W.save(tmp_path / "dtype.safetensors", arrays, meta)
    with pytest.raises(W.WeightsError, match="float16"):
        W.load(tmp_path / "dtype.safetensors")


def test_truncated_and_garbage_files(exported, tmp_path):
    raw = exported[0].read_bytes()
    cases = {"tiny.safetensors": (raw[:5], "too short"),
             "cut.safetensors": (raw[:200], "runs past the end"),
             "json.safetensors": (struct.pack("<Q", 4) + b"{{{{", "not valid JSON"),
             "list.safetensors": (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
             "data.safetensors": (raw[:len(raw) - 100], "do not fit")}
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(W.WeightsError, match=message) as err:
            W.load(tmp_path / name)
        assert name in str(err.value)
    with pytest.raises(W.WeightsError, match="cannot open"):
        W.load(tmp_path / "absent.safetensors")
    assert issubclass(W.WeightsError, ValueError)


def test_file_without_the_later_parts_loads_with_their_defaults(exported, tmp_path):
    """Files written before the retrieval metric and the reading head existed compare
    pooled vectors by plain cosine and read nothing."""
    path, arrays = exported
    wf = W.load(path)
    later = {k for part in W.later_parts(TINY) for k in part}
    assert later == {"joint.center", "joint.whiten", "vision.read.weight", "vision.read.bias"}
    old = tmp_path / "old.safetensors"
    W.save(old, {k: v for k, v in wf.tensors.items() if k not in later}, wf.metadata)
    got = W.load(old)
    np.testing.assert_array_equal(got.tensors["joint.center"], np.zeros(TINY.joint_dim))
    np.testing.assert_array_equal(got.tensors["joint.whiten"], np.eye(TINY.joint_dim))
    assert not got.tensors["vision.read.weight"].any() and not got.tensors["vision.read.bias"].any()
    assert not np.array_equal(arrays["joint.whiten"], np.eye(TINY.joint_dim))
    half = tmp_path / "half.safetensors"  # one of a part's tensors alone is damage
    W.save(half, {k: v for k, v in wf.tensors.items() if k != "joint.whiten"}, wf.metadata)
    with pytest.raises(W.WeightsError, match="joint.whiten"):
        W.load(half)
