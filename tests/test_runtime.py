"""The kernel runtime: ISA choice and override, threads, alignment, the C API binding,
argument checking in the wrappers, the numpy fallback, and the CLI that reports them."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cromwell_lsp import kernels as K

ROOT = Path(__file__).resolve().parents[1]


def _run(code, **env):
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=full_env, cwd=ROOT, timeout=120)


def test_native_module_is_loaded():
    assert K.native_available(), "the cffi module did not build or load"
    assert K.isa() in K.ISAS
    assert "scalar" in K.supported_isas()


def test_every_header_function_is_bound():
    header = (ROOT / "native" / "kernels.h").read_text()
    names = re.findall(r"^\s*(?:int|void\*|void|int64_t|const char\*)\s+(cw_\w+)\(", header, re.M)
    assert len(names) > 20
    for name in names:
        assert hasattr(K.lib, name), f"{name} is declared in kernels.h but not bound"


def test_default_isa_is_the_best_supported():
    assert K.isa() == K.supported_isas()[-1] or os.environ.get("CROMWELL_ISA")


@pytest.mark.parametrize("name", K.ISAS)
def test_environment_override(name):
    out = _run("from cromwell_lsp import kernels; print(kernels.isa())", CROMWELL_ISA=name)
    assert out.returncode == 0, out.stderr
    expected = name if K.isa_supported(name) else K.supported_isas()[-1]
    assert out.stdout.strip() == expected


def test_unknown_isa_in_environment_warns_and_falls_back():
    out = _run("from cromwell_lsp import kernels; print(kernels.isa())", CROMWELL_ISA="sse9")
    assert out.returncode == 0
    assert out.stdout.strip() == K.supported_isas()[-1]
    assert "CROMWELL_ISA=sse9" in out.stderr


def test_numpy_fallback_path():
    code = ("import numpy as np; from cromwell_lsp import kernels as K;"
            "x = np.ones((2, 64), np.float32); w = np.full((3, 64), 0.5, np.float32);"
            "print(K.isa(), float(K.matmul(x, w).sum()))")
    out = _run(code, CROMWELL_ISA="numpy")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["numpy", "192.0"]


def test_set_isa_rejects_unknown_names(isa):
    with pytest.raises(ValueError, match="unknown ISA"):
        K.set_isa("avx1024")
    assert K.isa() == isa


def test_threads_default_and_setting():
    assert K.threads() >= 1
    assert K.num_cores() >= 1
    before = K.threads()
    try:
        K.set_threads(1)
        assert K.threads() == 1
        K.set_threads(3)
        assert K.threads() == 3
    finally:
        K.set_threads(before)
    for bad in (0, -1, 2.5, "2", 10_000):
        with pytest.raises(ValueError):
            K.set_threads(bad)
    assert K.threads() == before


def test_default_threads_are_the_cores():
    out = _run("from cromwell_lsp import kernels as K; print(K.threads(), K.num_cores())")
    threads, cores = out.stdout.split()
    assert threads == cores


@pytest.mark.parametrize("shape", [(1,), (3, 5), (7, 3, 2), (0,), (100, 33)])
@pytest.mark.parametrize("dtype", [np.float32, np.int8, np.float16])
def test_aligned_buffers(shape, dtype):
    a = K.aligned_empty(shape, dtype)
    assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous
    assert a.size == 0 or a.ctypes.data % 64 == 0
    z = K.aligned_zeros(shape, dtype)
    assert not z.any()


def test_c_allocator_is_aligned_and_counted():
    K.scratch_reset_peak()
    base = K.scratch_peak_bytes()
    p = K.lib.cw_alloc(1000)
    assert int(K.ffi.cast("uintptr_t", p)) % 64 == 0
    assert K.scratch_peak_bytes() >= base + 1000
    K.lib.cw_free(p)
    K.lib.cw_free(K.ffi.NULL)


def test_c_entry_points_reject_bad_arguments_without_crashing():
    f = K.ffi.NULL
    assert K.lib.cw_matmul_f32(f, f, f, f, 2, 2, 2) == -1
    assert K.lib.cw_matmul_f32(f, f, f, f, -1, 2, 2) == -1
    assert K.lib.cw_matmul_q8(f, f, f, f, f, 1, 1, 33) == -1
    assert K.lib.cw_attention(f, f, f, f, 1, 1, 3, 2, 8, 0, 0, 0, 0, 0, 0, 1.0, 0) == -1
    assert K.lib.cw_rope(f, 1, 1, 3, 0, 0, 0, 1e4, 0) == -1
    assert K.lib.cw_dwconv3x3(f, f, f, f, 2, 2, 2, 3, 0) == -1
    assert K.lib.cw_set_threads(0) == -1
    assert K.lib.cw_set_isa(7) == -3
    # empty work is fine even with null pointers
    assert K.lib.cw_matmul_f32(f, f, f, f, 0, 5, 5) == 0
    assert K.lib.cw_add(f, f, f, 0) == 0


def _bad_calls():
    x = np.ones((4, 32), np.float32)
    w = np.ones((8, 32), np.float32)
    qkv = np.ones((3, 2, 8), np.float32)
    return [
        ("not an array", lambda: K.matmul([[1.0]], w)),
        ("float64 input", lambda: K.matmul(x.astype(np.float64), w)),
        ("K mismatch", lambda: K.matmul(x, np.ones((8, 31), np.float32))),
        ("non-contiguous", lambda: K.matmul(np.ones((4, 64), np.float32)[:, ::2], w)),
        ("bad bias", lambda: K.matmul(x, w, bias=np.ones(7, np.float32))),
        ("bad out shape", lambda: K.matmul(x, w, out=np.empty((4, 7), np.float32))),
        ("q8 K % 32", lambda: K.quantize_q8(np.ones(33, np.float32))),
        ("q8 scales", lambda: K.matmul_q8(x, np.ones((8, 32), np.int8),
                                          np.ones((8, 2), np.float16))),
        ("rmsnorm width", lambda: K.rmsnorm(x, np.ones(31, np.float32))),
        ("swiglu shapes", lambda: K.swiglu(x, w)),
        ("rope odd D", lambda: K.rope_(np.ones((2, 2, 3), np.float32))),
        ("rope pos", lambda: K.rope_(qkv, pos0=-1)),
        ("gqa ratio", lambda: K.attention(np.ones((3, 3, 8), np.float32), qkv, qkv)),
        ("head size", lambda: K.attention(np.ones((3, 2, 4), np.float32), qkv, qkv)),
        ("window size", lambda: K.window_attention(*[np.ones((2, 2, 1, 4), np.float32)] * 3, ws=0)),
        ("patch size", lambda: K.patch_embed(np.ones((6, 8, 3), np.float32),
                                             np.ones((4, 4, 4, 3), np.float32))),
        ("conv stride", lambda: K.dwconv3x3(np.ones((4, 4, 2), np.float32),
                                            np.ones((3, 3, 2), np.float32), stride=3)),
        ("activation", lambda: K.dwconv3x3(np.ones((4, 4, 2), np.float32),
                                           np.ones((3, 3, 2), np.float32), act="relu")),
    ]


@pytest.mark.parametrize("label,call", _bad_calls(), ids=[b[0] for b in _bad_calls()])
def test_wrappers_raise_value_error(label, call):
    with pytest.raises(ValueError):
        call()


def test_read_only_output_is_refused():
    out = np.empty((4, 8), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        K.matmul(np.ones((4, 32), np.float32), np.ones((8, 32), np.float32), out=out)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "cromwell_lsp", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)


def test_cli_info_json():
    out = _cli("info", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["isa"] == K.isa() and data["threads"] == K.threads()
    assert set(data) >= {"version", "isa", "isas_supported", "threads", "cores", "native_kernels"}


def test_cli_bench_kernels_json_schema():
    out = _cli("bench", "kernels", "--quick", "--json", "--only", "add")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["bandwidth_gb_s"] > 0
    rows = data["results"]
    assert {r["isa"] for r in rows} == set(K.supported_isas()) | {"numpy"}
    for r in rows:
        assert set(r) >= {"kernel", "shape", "isa", "ms", "gflop_s", "gb_s"}
        assert r["ms"] > 0 and r["gb_s"] > 0


def test_empty_inner_dimension_gives_the_bias():
    bias = np.arange(3, dtype=np.float32)
    x = np.zeros((2, 0), np.float32)
    assert np.array_equal(K.matmul(x, np.zeros((3, 0), np.float32), bias), np.tile(bias, (2, 1)))
    y = K.matmul_q8(x, np.zeros((3, 0), np.int8), np.zeros((3, 0), np.float16))
    assert np.array_equal(y, np.zeros((2, 3), np.float32))
