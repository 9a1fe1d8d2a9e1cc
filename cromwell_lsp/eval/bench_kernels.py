"""`cromwell bench kernels`: every kernel on the shapes the `base` model uses, timed on each
ISA path this CPU supports and with numpy (OpenBLAS for matrix products) side by side in
the same run, plus the machine's copy bandwidth measured in that run.

Shapes (base config, DESIGN.md): d_model 768, 12 query / 3 key-value heads of 64, FFN 3072,
vocabulary 16384; vision width 384 (6 heads of 64) on a 64x64 token grid with 16x16
windows; patch embedding 256x256x3 -> 192 channels; MBConv depthwise on 768 channels.

Timing: one warm-up call, then repeated calls until `min_s` seconds or `max_reps` calls;
`ms` is the median call, `ms_min` the fastest.  GFLOP/s and GB/s are computed from the
median with the FLOP and byte counts stated per kernel below (bytes: every array read or
written once; int8 weights count their int8 values and float16 scales).

What is timed: the C function itself, called through cffi with its pointers bound once
(the checked Python wrappers in kernels.py add about 2 us per call; `wrapper_overhead_us`
reports that separately), against the numpy expression a numpy engine would use.
Decode (one-row) matrix products rotate through enough copies of the weights to exceed
the 32 MiB L3 cache, as a model's layers do: each call reads its weights from memory.
"""
from __future__ import annotations

import itertools
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .. import kernels as K


@dataclass
class Case:
    kernel: str
    shape: str
    setup: Callable  # rng -> (native_fn, numpy_fn)
    flop: float
    nbytes: float
    isas: tuple = K.ISAS  # paths worth timing (scalar is skipped where it takes seconds)


def _time(fn, min_s, max_reps):
    fn()  # warm-up
    times = []
    start = time.perf_counter()
    while len(times) < max_reps and (time.perf_counter() - start < min_s or len(times) < 3):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), float(np.min(times))


def copy_bandwidth_gb_s(n_bytes: int = 256 << 20, reps: int = 5) -> float:
    """Best threaded copy rate, counting bytes read plus bytes written (STREAM's Copy)."""
    src = K.aligned_empty(n_bytes // 4)
    src[...] = 1.0
    dst = K.aligned_empty(n_bytes // 4)
    if K.lib is not None:
        copy = lambda: K.lib.cw_copy(K._p("float*", dst), K._p("float*", src), src.size)  # noqa: E731
    else:
        copy = lambda: np.copyto(dst, src)  # noqa: E731
    copy()
    best = min(_time(copy, 0.0, 1)[1] for _ in range(reps))
    return 2 * n_bytes / best / 1e9


# ---- cases ----------------------------------------------------------------------------
COLD_BYTES = 96 << 20  # decode weights rotate through this much memory (3x the L3)
_CTYPE = {np.dtype(np.float32): "float*", np.dtype(np.int8): "int8_t*",
          np.dtype(np.float16): "uint16_t*"}


def _bind(name, *args):
    """A zero-argument call of lib.<name> with every array argument already a pointer
    (arrays may be strided views: their first element's address is passed)."""
    fn = getattr(K.lib, name)
    bound = [K.ffi.NULL if a is None else
             K.ffi.cast(_CTYPE[a.dtype], a.__array_interface__["data"][0])
             if isinstance(a, np.ndarray) else a for a in args]
    keep = args  # the arrays must outlive the pointers

    def call():
        rc = fn(*bound)
        if rc:
            raise ValueError(f"{name} refused the call ({rc}); {len(keep)} arguments")
    return call


def _rotating(calls):
    it = itertools.cycle(calls)
    return lambda: next(it)()


def _copies(nbytes: int) -> int:
    return max(2, min(64, -(-COLD_BYTES // max(nbytes, 1))))


def _fill(rng, shape, scale=1.0):
    a = K.aligned_empty(shape)
    a[...] = rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)
    return a


def _matmul_case(M, Kd, N, isas=K.ISAS):
    def setup(rng):
        x, y = _fill(rng, (M, Kd)), K.aligned_empty((M, N))
        ws = [_fill(rng, (N, Kd), 0.05) for _ in range(_copies(4 * N * Kd) if M == 1 else 1)]
        native = [_bind("cw_matmul_f32", x, w, None, y, M, N, Kd) for w in ws]
        numpy = [(lambda wt=w.T: np.matmul(x, wt, out=y)) for w in ws]
        return _rotating(native), _rotating(numpy)
    return Case("matmul_f32", f"{M}x{Kd}x{N}", setup, 2.0 * M * N * Kd,
                4.0 * (N * Kd + M * Kd + M * N), isas)


def _matmul_q8_case(M, Kd, N, isas=K.ISAS):
    def setup(rng):
        x, y = _fill(rng, (M, Kd)), K.aligned_empty((M, N))
        native, numpy = [], []
        for _ in range(_copies(N * Kd * 17 // 16) if M == 1 else 1):
            wq, wd = K.quantize_q8(_fill(rng, (N, Kd), 0.05))
            native.append(_bind("cw_matmul_q8", x, wq, wd, None, y, M, N, Kd))
        # numpy's int8 path: a float32 product with the dequantized weights (cold as well)
        for _ in range(_copies(4 * N * Kd) if M == 1 else 1):
            wdq_t = K.dequantize_q8(*K.quantize_q8(_fill(rng, (N, Kd), 0.05))).T
            numpy.append(lambda wt=wdq_t: np.matmul(x, wt, out=y))
        return _rotating(native), _rotating(numpy)
    return Case("matmul_q8", f"{M}x{Kd}x{N}", setup, 2.0 * M * N * Kd,
                N * Kd + N * Kd / 16 + 4.0 * (M * Kd + M * N), isas)


def _rmsnorm_case(M, N):
    def setup(rng):
        x, w = _fill(rng, (M, N)), _fill(rng, (N,))
        y = K.aligned_empty((M, N))
        return _bind("cw_rmsnorm", x, w, y, M, N, 1e-6), (lambda: K.rmsnorm_ref(x, w, 1e-6))
    return Case("rmsnorm", f"{M}x{N}", setup, 4.0 * M * N, 8.0 * M * N + 4 * N)


def _swiglu_case(n):
    def setup(rng):
        a, b = _fill(rng, (n,)), _fill(rng, (n,))
        y = K.aligned_empty((n,))
        return _bind("cw_swiglu", a, b, y, n), (lambda: K.swiglu_ref(a, b))
    return Case("swiglu", f"{n}", setup, 5.0 * n, 12.0 * n)


def _rope_case(T, H, D):
    def setup(rng):
        x = _fill(rng, (T, H, D))
        return _bind("cw_rope", x, T, H, D, H * D, D, 100, 10000.0, 0), (lambda: K.rope_ref(x, 100))
    return Case("rope", f"{T}x{H}x{D}", setup, 3.0 * T * H * D, 8.0 * T * H * D)


def _softmax_case(M, N):
    def setup(rng):
        x = _fill(rng, (M, N))
        return _bind("cw_softmax", x, M, N), (lambda: K.softmax_ref(x))
    return Case("softmax", f"{M}x{N}", setup, 4.0 * M * N, 8.0 * M * N)


def _add_case(n):
    def setup(rng):
        a, b = _fill(rng, (n,)), _fill(rng, (n,))
        y = K.aligned_empty((n,))
        return _bind("cw_add", a, b, y, n), (lambda: np.add(a, b, out=y))
    return Case("add", f"{n}", setup, 1.0 * n, 12.0 * n)


def _attn_pairs(Tq, Tk, causal_offset):
    if causal_offset < 0:
        return Tq * Tk
    return sum(min(Tk, causal_offset + t + 1) for t in range(Tq))


def _decode_attention_case(T, Hq=12, Hkv=3, D=64, cap=None):
    cap = cap or T

    def setup(rng):
        q = _fill(rng, (1, Hq, D))
        kc, vc = _fill(rng, (Hkv, cap, D)), _fill(rng, (Hkv, cap, D))
        k, v = kc[:, :T].transpose(1, 0, 2), vc[:, :T].transpose(1, 0, 2)
        y = K.aligned_empty((1, Hq, D))
        return (_bind("cw_attention", q, k, v, y, 1, T, Hq, Hkv, D, Hq * D, D, D, cap * D,
                      Hq * D, D, float(D ** -0.5), T - 1),
                lambda: K.attention_ref(q, k, v, None, T - 1))
    return Case("attention_decode", f"T{T} h{Hq}/{Hkv} d{D}", setup, 4.0 * D * Hq * T,
                4.0 * (2 * T * Hkv * D + 2 * Hq * D))


def _prefill_attention_case(T, Hq=12, Hkv=3, D=64, isas=K.ISAS, numpy_ok=True):
    def setup(rng):
        q, k, v = _fill(rng, (T, Hq, D)), _fill(rng, (T, Hkv, D)), _fill(rng, (T, Hkv, D))
        y = K.aligned_empty((T, Hq, D))
        ref = (lambda: K.attention_ref(q, k, v, None, 0)) if numpy_ok else None
        return (_bind("cw_attention", q, k, v, y, T, T, Hq, Hkv, D, Hq * D, D, Hkv * D, D,
                      Hq * D, D, float(D ** -0.5), 0), ref)
    return Case("attention_prefill", f"T{T} h{Hq}/{Hkv} d{D} causal", setup,
                4.0 * D * Hq * _attn_pairs(T, T, 0), 4.0 * T * D * (2 * Hq + 2 * Hkv), isas)


def _cross_attention_case(Tq, Tk, H=12, D=64):
    def setup(rng):
        q, k, v = _fill(rng, (Tq, H, D)), _fill(rng, (Tk, H, D)), _fill(rng, (Tk, H, D))
        y = K.aligned_empty((Tq, H, D))
        return (_bind("cw_attention", q, k, v, y, Tq, Tk, H, H, D, H * D, D, H * D, D, H * D, D,
                      float(D ** -0.5), -1), lambda: K.attention_ref(q, k, v))
    return Case("attention_cross", f"{Tq}x{Tk} h{H} d{D}", setup, 4.0 * D * H * Tq * Tk,
                4.0 * D * H * (2 * Tq + 2 * Tk))


def _window_attention_case(G=64, nh=6, D=64, ws=16):
    def setup(rng):
        q, k, v = (_fill(rng, (G, G, nh, D)) for _ in range(3))
        y = K.aligned_empty((G, G, nh, D))
        return (_bind("cw_window_attention", q, k, v, y, G, G, nh, D, ws, float(D ** -0.5)),
                lambda: K.window_attention_ref(q, k, v, ws))
    return Case("window_attention", f"{G}x{G} h{nh} d{D} w{ws}", setup,
                4.0 * D * nh * G * G * ws * ws, 16.0 * G * G * nh * D)


def _patch_embed_case(S=256, Cin=3, Cout=192):
    def setup(rng):
        x, w, b = _fill(rng, (S, S, Cin)), _fill(rng, (Cout, 4, 4, Cin), 0.1), _fill(rng, (Cout,))
        y = K.aligned_empty((S // 4, S // 4, Cout))
        return (_bind("cw_patch_embed", x, w, b, y, S, S, Cin, Cout, 1),
                lambda: K.patch_embed_ref(x, w, b, "silu"))
    return Case("patch_embed", f"{S}x{S}x{Cin}->{Cout}", setup,
                2.0 * (S // 4) ** 2 * Cout * 16 * Cin,
                4.0 * (S * S * Cin + (S // 4) ** 2 * Cout + Cout * 16 * Cin))


def _dwconv_case(S=64, C=768):
    def setup(rng):
        x, w, b = _fill(rng, (S, S, C)), _fill(rng, (3, 3, C), 0.3), _fill(rng, (C,))
        y = K.aligned_empty((S, S, C))
        return (_bind("cw_dwconv3x3", x, w, b, y, S, S, C, 1, 1),
                lambda: K.dwconv3x3_ref(x, w, b, 1, "silu"))
    return Case("dwconv3x3", f"{S}x{S}x{C}", setup, 2.0 * 9 * S * S * C, 8.0 * S * S * C)


def cases(quick: bool = False) -> list[Case]:
    fast = ("avx2", "avx512")
    if quick:
        return [_matmul_case(1, 768, 768), _matmul_case(32, 768, 768),
                _matmul_q8_case(1, 768, 768), _matmul_q8_case(32, 768, 768),
                _rmsnorm_case(1, 768), _swiglu_case(3072), _rope_case(1, 12, 64),
                _softmax_case(12, 512), _add_case(768), _decode_attention_case(512),
                _prefill_attention_case(128), _cross_attention_case(64, 256),
                _window_attention_case(32), _patch_embed_case(64), _dwconv_case(16, 96)]
    return [
        # decode: one row of activations through each weight matrix of the base model
        _matmul_case(1, 768, 768), _matmul_case(1, 768, 3072), _matmul_case(1, 3072, 768),
        _matmul_case(1, 768, 16384), _matmul_case(1, 4096, 4096),
        # prefill: many rows, register-tiled
        _matmul_case(128, 768, 768), _matmul_case(512, 768, 3072, fast),
        _matmul_q8_case(1, 768, 768), _matmul_q8_case(1, 768, 3072), _matmul_q8_case(1, 3072, 768),
        _matmul_q8_case(1, 768, 16384), _matmul_q8_case(1, 4096, 4096),
        _matmul_q8_case(128, 768, 768), _matmul_q8_case(512, 768, 3072, fast),
        _rmsnorm_case(1, 768), _rmsnorm_case(512, 768),
        _swiglu_case(3072), _swiglu_case(512 * 3072),
        _rope_case(1, 12, 64), _rope_case(512, 12, 64),
        _softmax_case(12, 4096), _add_case(768), _add_case(512 * 768),
        _decode_attention_case(512), _decode_attention_case(4096),
        _prefill_attention_case(512), _prefill_attention_case(4096, isas=fast),
        _cross_attention_case(512, 1024), _window_attention_case(),
        _patch_embed_case(), _dwconv_case(),
    ]


def run(only: str | None = None, quick: bool = False, min_s: float = 0.3,
        max_reps: int = 200) -> dict:
    """Time every case; returns the JSON document of `cromwell bench kernels --json`."""
    rng = np.random.default_rng(0)
    default_isa = K.isa()
    print("measuring copy bandwidth ...", file=sys.stderr)
    bandwidth = copy_bandwidth_gb_s(64 << 20 if quick else 256 << 20)
    results = []
    try:
        for case in cases(quick):
            if only and only not in case.kernel:
                continue
            native_fn, numpy_fn = case.setup(rng)
            paths = [i for i in case.isas if K.isa_supported(i)] + ["numpy"]
            for path in paths:
                if path == "numpy":
                    if numpy_fn is None:
                        continue
                    fn = numpy_fn
                else:
                    K.set_isa(path)
                    fn = native_fn
                print(f"{case.kernel:18s} {case.shape:28s} {path}", file=sys.stderr)
                try:
                    ms, ms_min = (t * 1e3 for t in _time(fn, 0.05 if quick else min_s, max_reps))
                except ValueError as exc:  # a path that refuses: report it, measure the rest
                    results.append({"kernel": case.kernel, "shape": case.shape, "isa": path,
                                    "error": str(exc)})
                    continue
                results.append({
                    "kernel": case.kernel, "shape": case.shape, "isa": path,
                    "ms": round(ms, 5), "ms_min": round(ms_min, 5),
                    "gflop_s": round(case.flop / ms / 1e6, 3),
                    "gb_s": round(case.nbytes / ms / 1e6, 3),
                })
    finally:
        if default_isa in K.ISAS:
            K.set_isa(default_isa)
    out = {"bandwidth_gb_s": round(bandwidth, 3), "threads": K.threads(),
           "isa_default": default_isa, "wrapper_overhead_us": wrapper_overhead_us(),
           "results": results}
    out["targets"] = targets(out)
    return out


def wrapper_overhead_us() -> float | None:
    """What the checked Python wrapper adds to one call: K.add vs the bound C call, on 16
    floats (the kernel itself takes a few nanoseconds)."""
    if K.lib is None:
        return None
    a, b, y = (K.aligned_zeros(16) for _ in range(3))
    bound = _bind("cw_add", a, b, y, 16)
    wrapped = lambda: K.add(a, b, out=y)  # noqa: E731
    t_bound = min(_time(bound, 0.1, 100000)[1] for _ in range(3))
    t_wrapped = min(_time(wrapped, 0.1, 100000)[1] for _ in range(3))
    return round((t_wrapped - t_bound) * 1e6, 3)


def targets(result: dict) -> dict:
    """The foundation issue's targets, computed from the rows of this run:
    avx2 / scalar speed-ups, int8 4096x4096 decode as % of the copy bandwidth, fp32
    prefill speed relative to numpy (> 1 means faster than OpenBLAS)."""
    ms = {(r["kernel"], r["shape"], r["isa"]): r for r in result["results"] if "ms" in r}
    out: dict = {"avx2_vs_scalar": {}, "prefill_vs_numpy": {}, "q8_decode_pct_of_copy": {}}
    for (kernel, shape, isa), row in ms.items():
        if isa == "avx2" and (kernel, shape, "scalar") in ms:
            out["avx2_vs_scalar"][f"{kernel} {shape}"] = round(
                ms[(kernel, shape, "scalar")]["ms"] / row["ms"], 2)
        if kernel == "matmul_f32" and not shape.startswith("1x") and isa in ("avx2", "avx512") \
                and (kernel, shape, "numpy") in ms:
            out["prefill_vs_numpy"][f"{shape} {isa}"] = round(ms[(kernel, shape, "numpy")]["ms"] / row["ms"], 3)
        if kernel == "matmul_q8" and shape == "1x4096x4096" and isa != "numpy":
            out["q8_decode_pct_of_copy"][isa] = round(100 * row["gb_s"] / result["bandwidth_gb_s"], 1)
    return out


def format_table(result: dict) -> str:
    import json

    lines = [f"copy bandwidth: {result['bandwidth_gb_s']:.1f} GB/s   threads: {result['threads']}"
             f"   wrapper overhead: {result.get('wrapper_overhead_us')} us per call",
             f"{'kernel':18s} {'shape':28s} {'isa':7s} {'ms':>10s} {'GFLOP/s':>9s} {'GB/s':>8s}"
             f" {'vs numpy':>9s}"]
    numpy_ms = {(r["kernel"], r["shape"]): r["ms"] for r in result["results"]
                if r["isa"] == "numpy" and "ms" in r}
    for r in result["results"]:
        if "error" in r:
            lines.append(f"{r['kernel']:18s} {r['shape']:28s} {r['isa']:7s} error: {r['error']}")
            continue
        ref = numpy_ms.get((r["kernel"], r["shape"]))
        speed = f"{ref / r['ms']:8.2f}x" if ref and r["isa"] != "numpy" else ""
        lines.append(f"{r['kernel']:18s} {r['shape']:28s} {r['isa']:7s} {r['ms']:10.4f}"
                     f" {r['gflop_s']:9.2f} {r['gb_s']:8.2f} {speed:>9s}")
    for name, values in result.get("targets", {}).items():
        lines.append(f"{name}: {json.dumps(values)}")
    return "\n".join(lines)
