"""numpy-facing wrappers over the native kernels, and a numpy reference of every op.

Three layers, as argon2-cffi does it: native/build.py declares the C API (kernels.h),
`cromwell_lsp._native` exports only `ffi, lib`, and this module checks every argument
(shape, dtype, contiguity, writability) before the C call, raising ValueError with a
message that names the argument, so a wrong call never reaches C.  C return codes are
checked too.

Each op `op(...)` has a numpy twin `op_ref(...)`: plain numpy, computing in the dtype it
is given (tests pass float64 to get the high-precision reference), and used as the
fallback when the native module cannot be loaded (CROMWELL_ISA=numpy forces it).

Dimension letters: M rows, N outputs, K inputs, T tokens, H heads, D head size,
C channels.  Linear weights are W[N, K] (out, in); int8 weights are q[N, K] int8 with
one float16 scale per 32 values along K, d[N, K/32].
"""
from __future__ import annotations

import math
import os
import warnings

import numpy as np

QK = 32
ISAS = ("scalar", "avx2", "avx512")
_DTYPES = {np.float32: np.dtype(np.float32), np.int8: np.dtype(np.int8),
           np.float16: np.dtype(np.float16)}

try:
    if os.environ.get("CROMWELL_ISA") == "numpy":
        raise ImportError("CROMWELL_ISA=numpy")
    from ._native import ffi, lib
except ImportError as exc:  # pragma: no cover - exercised only on broken installs
    ffi = lib = None
    if os.environ.get("CROMWELL_ISA") != "numpy":
        warnings.warn(
            f"cromwell: native kernels unavailable ({exc}); using the slow numpy path. "
            "HINT: reinstall with `pip install -e .` to compile them.",
            RuntimeWarning,
            stacklevel=2,
        )

_ERRORS = {-1: "invalid argument", -2: "out of memory", -3: "ISA not supported by this CPU"}


# ---- runtime ----------------------------------------------------------------------
def native_available() -> bool:
    return lib is not None


def isa() -> str:
    """The instruction set the kernels use now: scalar, avx2, avx512 (or numpy)."""
    return "numpy" if lib is None else ffi.string(lib.cw_isa_name(lib.cw_get_isa())).decode()


def isa_supported(name: str) -> bool:
    return lib is not None and name in ISAS and bool(lib.cw_isa_supported(ISAS.index(name)))


def supported_isas() -> list[str]:
    return [name for name in ISAS if isa_supported(name)]


def set_isa(name: str) -> None:
    """Force one kernel path (scalar, avx2 or avx512) for this process."""
    if name not in ISAS:
        raise ValueError(f"unknown ISA {name!r}; choose one of {', '.join(ISAS)}")
    if lib is None or lib.cw_set_isa(ISAS.index(name)) != 0:
        raise ValueError(f"ISA {name!r} is not supported here; supported: {supported_isas()}")


def num_cores() -> int:
    return lib.cw_num_cores() if lib is not None else (os.cpu_count() or 1)


def threads() -> int:
    return lib.cw_get_threads() if lib is not None else 1


def set_threads(n: int) -> None:
    """Threads used by every kernel (default: the cores this process may use)."""
    if not isinstance(n, (int, np.integer)) or n < 1 or n > 1024:
        raise ValueError(f"threads must be an integer in 1..1024, got {n!r}")
    if lib is not None:
        lib.cw_set_threads(int(n))


def scratch_peak_bytes() -> int:
    """High-water mark of the C kernels' own scratch memory since the last reset."""
    return int(lib.cw_scratch_peak_bytes()) if lib is not None else 0


def scratch_reset_peak() -> None:
    if lib is not None:
        lib.cw_scratch_reset_peak()


def aligned_empty(shape, dtype=np.float32, align: int = 64) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on an `align`-byte boundary."""
    dtype = _DTYPES.get(dtype) or np.dtype(dtype)
    shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(shape)
    nbytes = math.prod(shape) * dtype.itemsize
    raw = np.empty(nbytes + align, dtype=np.uint8)
    addr = int(ffi.cast("uintptr_t", ffi.from_buffer(raw))) if ffi is not None else raw.ctypes.data
    return np.ndarray(shape, dtype, raw, (-addr) % align)  # a view of raw, aligned


def aligned_zeros(shape, dtype=np.float32, align: int = 64) -> np.ndarray:
    out = aligned_empty(shape, dtype, align)
    out[...] = 0
    return out


# ---- argument checks ---------------------------------------------------------------
def _arr(name, a, dtype, ndim=None, writable=False, contiguous=True):
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != dtype:
        raise ValueError(f"{name} must have dtype {np.dtype(dtype).name}, got {a.dtype.name}"
                         f" (convert with .astype(np.{np.dtype(dtype).name}))")
    if ndim is not None and a.ndim not in (ndim if isinstance(ndim, tuple) else (ndim,)):
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    if contiguous and not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray)")
    if writable and not a.flags.writeable:
        raise ValueError(f"{name} must be writable")
    return a


def _shape(name, a, shape):
    if a.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {a.shape}")


def _out(name, out, shape, dtype=np.float32):
    if out is None:
        return aligned_empty(shape, dtype)
    _arr(name, out, dtype, writable=True)
    _shape(name, out, shape)
    return out


def _elem_strides(name, a, last_contiguous=True):
    """Strides of `a` in elements; the last axis must be unit-stride."""
    itemsize = a.itemsize
    if any(s % itemsize or s < 0 for s in a.strides):
        raise ValueError(f"{name} has strides {a.strides} that are not non-negative "
                         f"multiples of its item size")
    strides = tuple(s // itemsize for s in a.strides)
    if last_contiguous and a.ndim and a.shape[-1] > 1 and strides[-1] != 1:
        raise ValueError(f"{name} must be contiguous along its last axis")
    return strides


_ARRAY_TYPE = {"float*": "float[]", "int8_t*": "int8_t[]", "uint16_t*": "uint16_t[]"}


def _p(ctype, a):
    """A C pointer to a's data (a must stay alive during the call).  Contiguous arrays go
    through ffi.from_buffer (about 0.2 us); strided views through the array interface
    (about 1.3 us), since from_buffer refuses them."""
    if a.size == 0:
        return ffi.NULL
    if a.flags.c_contiguous:
        return ffi.from_buffer(_ARRAY_TYPE[ctype], a)
    return ffi.cast(ctype, a.__array_interface__["data"][0])


def _check_rc(op, rc):
    if rc != 0:
        raise ValueError(f"{op}: native kernel refused the call ({_ERRORS.get(rc, rc)})")


def _act(act):
    if act in (None, "none", 0):
        return 0
    if act in ("silu", 1):
        return 1
    raise ValueError(f"act must be None or 'silu', got {act!r}")


# ---- matrix multiply -----------------------------------------------------------------


def matmul(x, w, bias=None, out=None):
    """y[M, N] = x[M, K] @ w[N, K]^T + bias[N]; x may be a vector [K] (returns [N])."""
    _arr("x", x, np.float32, (1, 2))
    _arr("w", w, np.float32, 2)
    N, K = w.shape
    x2 = x.reshape(1, -1) if x.ndim == 1 else x
    M = x2.shape[0]
    if x2.shape[1] != K:
        raise ValueError(f"x has {x2.shape[1]} columns but w expects K={K} (w is {w.shape})")
    if bias is not None:
        _arr("bias", bias, np.float32, 1)
        _shape("bias", bias, (N,))
    y = _out("out", out, (M, N) if x.ndim == 2 else (N,))
    if lib is None:
        y[...] = matmul_ref(x, w, bias)
        return y
    _check_rc("matmul", lib.cw_matmul_f32(_p("float*", x2), _p("float*", w),
                                          _p("float*", bias) if bias is not None else ffi.NULL,
                                          _p("float*", y), M, N, K))
    return y


class BoundLinear:
    """y[M, N] = x[M, K] @ W^T with the weights checked and bound once (fp32 `w`, or int8
    `q` with float16 scales `d`), for the engine's hot path: each call checks only that x
    is a C-contiguous float32 [M, K] and calls the kernel directly (about 1 us of Python,
    against about 5 us through matmul / matmul_q8).  The weights must outlive the object
    (they do: it keeps references to them)."""

    def __init__(self, w=None, q=None, d=None):
        if w is not None:
            _arr("w", w, np.float32, 2)
            self.N, self.K = w.shape
            self.arrays = (w,)
        else:
            _arr("q", q, np.int8, 2)
            _arr("d", d, np.float16, 2)
            self.N, self.K = q.shape
            if self.K % QK or d.shape != (self.N, self.K // QK):
                raise ValueError(f"q {q.shape} and d {d.shape} do not form blocks of {QK}")
            self.arrays = (q, d)
        self.quant = w is None
        if lib is not None:
            self._fn = lib.cw_matmul_q8 if self.quant else lib.cw_matmul_f32
            types = ("int8_t*", "uint16_t*") if self.quant else ("float*",)
            self._w = tuple(_p(t, a) for t, a in zip(types, self.arrays))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if (lib is None or x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != self.K
                or not x.flags.c_contiguous):
            if self.quant:
                return matmul_q8(x, *self.arrays)
            return matmul(x, self.arrays[0])
        M = x.shape[0]
        y = aligned_empty((M, self.N))
        if M and self.N:
            _check_rc("matmul", self._fn(_p("float*", x), *self._w, ffi.NULL, _p("float*", y),
                                         M, self.N, self.K))
        return y


def matmul_ref(x, w, bias=None):
    y = x @ w.T
    return y + bias if bias is not None else y


def quantize_q8(x, q=None, d=None):
    """Quantize a float32 array (last axis a multiple of 32) into int8 blocks of 32 with
    float16 scales.  Returns (q int8 with x's shape, d float16 with the last axis / 32)."""
    _arr("x", x, np.float32)
    if x.ndim == 0 or x.shape[-1] % QK:
        raise ValueError(f"the last axis of x must be a multiple of {QK}, got shape {x.shape}")
    q = _out("q", q, x.shape, np.int8)
    d = _out("d", d, x.shape[:-1] + (x.shape[-1] // QK,), np.float16)
    if lib is None:
        q[...], d[...] = quantize_q8_ref(x)
        return q, d
    _check_rc("quantize_q8", lib.cw_quantize_q8(_p("float*", x), _p("int8_t*", q),
                                                _p("uint16_t*", d), x.size))
    return q, d


def quantize_q8_ref(x):
    x = np.asarray(x, dtype=np.float32)
    blocks = x.reshape(-1, QK)
    amax = np.abs(blocks).max(axis=1, keepdims=True)
    dscale = amax / np.float32(127)
    with np.errstate(divide="ignore"):
        inv = np.where(dscale > 0, np.float32(1) / dscale, np.float32(0)).astype(np.float32)
    q = np.rint(blocks * inv).astype(np.int8)
    return q.reshape(x.shape), dscale.astype(np.float16).reshape(x.shape[:-1] + (-1,))


def dequantize_q8(q, d, out=None):
    _arr("q", q, np.int8)
    _arr("d", d, np.float16)
    if q.ndim == 0 or q.shape[-1] % QK or d.shape != q.shape[:-1] + (q.shape[-1] // QK,):
        raise ValueError(f"q {q.shape} and d {d.shape} do not form blocks of {QK}")
    x = _out("out", out, q.shape)
    if lib is None:
        x[...] = dequantize_q8_ref(q, d)
        return x
    _check_rc("dequantize_q8", lib.cw_dequantize_q8(_p("int8_t*", q), _p("uint16_t*", d),
                                                    _p("float*", x), q.size))
    return x


def dequantize_q8_ref(q, d, dtype=np.float32):
    blocks = q.reshape(-1, QK).astype(dtype) * d.reshape(-1, 1).astype(dtype)
    return blocks.reshape(q.shape)


def matmul_q8(x, wq, wd, bias=None, out=None):
    """y[M, N] = x[M, K] @ dequant(wq, wd)^T + bias, with x quantized to int8 blocks on the
    fly (fp32 scales) and integer dot products; x may be a vector [K]."""
    _arr("x", x, np.float32, (1, 2))
    _arr("wq", wq, np.int8, 2)
    _arr("wd", wd, np.float16, 2)
    N, K = wq.shape
    if K % QK:
        raise ValueError(f"K={K} must be a multiple of {QK} for int8 weights")
    _shape("wd", wd, (N, K // QK))
    x2 = x.reshape(1, -1) if x.ndim == 1 else x
    M = x2.shape[0]
    if x2.shape[1] != K:
        raise ValueError(f"x has {x2.shape[1]} columns but wq expects K={K}")
    if bias is not None:
        _arr("bias", bias, np.float32, 1)
        _shape("bias", bias, (N,))
    y = _out("out", out, (M, N) if x.ndim == 2 else (N,))
    if lib is None:
        y[...] = matmul_q8_ref(x, wq, wd, bias)
        return y
    _check_rc("matmul_q8", lib.cw_matmul_q8(_p("float*", x2), _p("int8_t*", wq),
                                            _p("uint16_t*", wd),
                                            _p("float*", bias) if bias is not None else ffi.NULL,
                                            _p("float*", y), M, N, K))
    return y


def matmul_q8_ref(x, wq, wd, bias=None, dtype=np.float64):
    """What matmul_q8 computes, in `dtype`: x rows quantized exactly as the kernel does
    (float32 arithmetic, scales kept in float32), then dequantized products summed."""
    x = np.asarray(x, dtype=np.float32)
    blocks = x.reshape(-1, QK)
    amax = np.abs(blocks).max(axis=1, keepdims=True)
    dx = amax / np.float32(127)
    with np.errstate(divide="ignore"):
        inv = np.where(dx > 0, np.float32(1) / dx, np.float32(0)).astype(np.float32)
    xq = np.rint(blocks * inv) * dx.astype(dtype)
    xdq = xq.astype(dtype).reshape(x.shape)
    y = xdq @ dequantize_q8_ref(wq, wd, dtype).T
    return y + bias if bias is not None else y


# ---- element-wise and row ops ----------------------------------------------------------
def rmsnorm(x, w, eps=1e-6, out=None):
    """out = x / sqrt(mean(x^2, last axis) + eps) * w; out may be x."""
    _arr("x", x, np.float32)
    _arr("w", w, np.float32, 1)
    if x.ndim == 0 or x.shape[-1] != w.shape[0]:
        raise ValueError(f"x {x.shape} and w {w.shape} disagree on the last axis")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    y = _out("out", out, x.shape)
    if lib is None:
        y[...] = rmsnorm_ref(x, w, eps)
        return y
    N = x.shape[-1]
    M = x.size // N if N else 0
    _check_rc("rmsnorm", lib.cw_rmsnorm(_p("float*", x), _p("float*", w), _p("float*", y),
                                        M, N, float(eps)))
    return y


def rmsnorm_ref(x, w, eps=1e-6):
    ms = np.mean(x * x, axis=-1, keepdims=True)
    return x / np.sqrt(ms + eps) * w


def _same_shape_pair(a, b):
    _arr("a", a, np.float32)
    _arr("b", b, np.float32)
    if a.shape != b.shape:
        raise ValueError(f"a {a.shape} and b {b.shape} must have the same shape")


def swiglu(a, b, out=None):
    """out = silu(a) * b; out may be a or b."""
    _same_shape_pair(a, b)
    y = _out("out", out, a.shape)
    if lib is None:
        y[...] = swiglu_ref(a, b)
        return y
    _check_rc("swiglu", lib.cw_swiglu(_p("float*", a), _p("float*", b), _p("float*", y), a.size))
    return y


def silu_ref(a):
    with np.errstate(over="ignore"):
        return a / (1 + np.exp(-a))


def swiglu_ref(a, b):
    return silu_ref(a) * b


def silu_(x):
    """x = silu(x) in place; returns x."""
    _arr("x", x, np.float32, writable=True)
    if lib is None:
        x[...] = silu_ref(x)
        return x
    _check_rc("silu", lib.cw_silu(_p("float*", x), x.size))
    return x


def rope_(x, pos0=0, theta=10000.0, neox=False):
    """Rotary position embedding in place on x[T, H, D] (a view with a unit-stride last
    axis is fine, e.g. the q part of a fused projection); token t is at position pos0 + t.
    neox=False rotates pairs (2i, 2i+1); neox=True rotates (i, i + D/2).  Returns x."""
    _arr("x", x, np.float32, 3, writable=True, contiguous=False)
    T, H, D = x.shape
    if D % 2:
        raise ValueError(f"head size D={D} must be even for RoPE")
    if not isinstance(pos0, (int, np.integer)) or pos0 < 0:
        raise ValueError(f"pos0 must be a non-negative integer, got {pos0!r}")
    if not theta > 0:
        raise ValueError(f"theta must be > 0, got {theta}")
    if x.size == 0:  # numpy gives empty arrays zero strides, which _elem_strides refuses
        return x
    ts, hs, _ = _elem_strides("x", x)
    if lib is None:
        x[...] = rope_ref(x, pos0, theta, neox)
        return x
    _check_rc("rope", lib.cw_rope(_p("float*", x), T, H, D, ts, hs, int(pos0), float(theta),
                                  int(bool(neox))))
    return x


def rope_ref(x, pos0=0, theta=10000.0, neox=False):
    T, H, D = x.shape
    pos = np.arange(pos0, pos0 + T, dtype=np.float64)[:, None]
    inv = np.float64(theta) ** (-np.arange(0, D, 2, dtype=np.float64) / D)
    ang = pos * inv[None, :]  # (T, D/2)
    cos, sin = np.cos(ang)[:, None, :].astype(x.dtype), np.sin(ang)[:, None, :].astype(x.dtype)
    if neox:
        a, b = x[..., : D // 2], x[..., D // 2:]
    else:
        a, b = x[..., 0::2], x[..., 1::2]
    ra, rb = a * cos - b * sin, a * sin + b * cos
    out = np.empty_like(x)
    if neox:
        out[..., : D // 2], out[..., D // 2:] = ra, rb
    else:
        out[..., 0::2], out[..., 1::2] = ra, rb
    return out


def softmax_(x):
    """Softmax over the last axis, in place; returns x."""
    _arr("x", x, np.float32, writable=True)
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension")
    if lib is None:
        x[...] = softmax_ref(x)
        return x
    N = x.shape[-1]
    M = x.size // N if N else 0
    _check_rc("softmax", lib.cw_softmax(_p("float*", x), M, N))
    return x


def softmax_ref(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def add(a, b, out=None):
    """out = a + b; out may be a or b (the residual add)."""
    _same_shape_pair(a, b)
    y = _out("out", out, a.shape)
    if lib is None:
        np.add(a, b, out=y)
        return y
    _check_rc("add", lib.cw_add(_p("float*", a), _p("float*", b), _p("float*", y), a.size))
    return y


def add_ref(a, b):
    return a + b


# ---- attention -----------------------------------------------------------------------
def attention(q, k, v, out=None, scale=None, causal_offset=-1):
    """Grouped-query scaled dot-product attention.

    q: [Tq, Hq, D]; k, v: [Tk, Hkv, D] with the same strides (views are fine, e.g. a KV
    cache stored [Hkv, Tcap, D] seen as cache[:, :T].transpose(1, 0, 2)); every last axis
    unit-stride.  Hq % Hkv == 0; query head h reads kv head h // (Hq // Hkv).
    causal_offset >= 0: query t sees keys j <= causal_offset + t (causal_offset earlier
    tokens sit in the cache); -1: non-causal (cross-attention).  Returns out [Tq, Hq, D].
    """
    _arr("q", q, np.float32, 3, contiguous=False)
    _arr("k", k, np.float32, 3, contiguous=False)
    _arr("v", v, np.float32, 3, contiguous=False)
    Tq, Hq, D = q.shape
    Tk, Hkv, Dk = k.shape
    if v.shape != k.shape:
        raise ValueError(f"k {k.shape} and v {v.shape} must have the same shape")
    if Dk != D:
        raise ValueError(f"q head size {D} differs from k head size {Dk}")
    if Hkv < 1 or Hq % Hkv:
        raise ValueError(f"query heads {Hq} must be a multiple of key/value heads {Hkv}")
    if not isinstance(causal_offset, (int, np.integer)):
        raise ValueError(f"causal_offset must be an integer, got {causal_offset!r}")
    # An empty array is never read, so its strides (numpy may report 0) are not checked.
    # The kernel reads v with k's strides: they must agree on every axis longer than 1.
    q_ts, q_hs, _ = _elem_strides("q", q) if q.size else (0, 0, 1)
    kv_ts, kv_hs, _ = _elem_strides("k", k) if k.size else (0, 0, 1)
    v_ts, v_hs, _ = _elem_strides("v", v) if v.size else (0, 0, 1)
    if (Tk > 1 and v_ts != kv_ts) or (Tk and Hkv > 1 and v_hs != kv_hs):
        raise ValueError("k and v must have the same strides")
    if out is None:
        out = aligned_empty((Tq, Hq, D))
    else:
        _arr("out", out, np.float32, 3, writable=True, contiguous=False)
        _shape("out", out, (Tq, Hq, D))
    o_ts, o_hs, _ = _elem_strides("out", out) if out.size else (0, 0, 1)
    scale = float(1.0 / np.sqrt(D)) if scale is None else float(scale)
    if lib is None:
        out[...] = attention_ref(q, k, v, scale, causal_offset)
        return out
    _check_rc("attention", lib.cw_attention(
        _p("float*", q), _p("float*", k), _p("float*", v), _p("float*", out),
        Tq, Tk, Hq, Hkv, D, q_ts, q_hs, kv_ts, kv_hs, o_ts, o_hs, scale, int(causal_offset)))
    return out


def attention_ref(q, k, v, scale=None, causal_offset=-1):
    Tq, Hq, D = q.shape
    Tk, Hkv, _ = k.shape
    scale = 1.0 / np.sqrt(D) if scale is None else scale
    group = Hq // Hkv
    out = np.zeros(q.shape, dtype=np.result_type(q, k, v))
    if Tk == 0:
        return out
    if causal_offset >= 0:
        visible = np.arange(Tk)[None, :] <= (causal_offset + np.arange(Tq))[:, None]
    else:
        visible = np.ones((Tq, Tk), dtype=bool)
    seen = visible.any(axis=1)
    for h in range(Hq):
        g = h // group
        s = (q[:, h, :] @ k[:, g, :].T) * scale  # (Tq, Tk)
        s = np.where(visible, s, -np.inf)
        s[~seen] = 0.0
        p = np.exp(s - s.max(axis=1, keepdims=True))
        p = np.where(visible, p, 0.0)
        denom = p.sum(axis=1, keepdims=True)
        denom[denom == 0] = 1.0
        out[:, h, :] = (p / denom) @ v[:, g, :]
    return out


def window_attention(q, k, v, ws=16, scale=None, out=None):
    """2D windowed self-attention: q, k, v [H, W, nh, D]; windows of ws x ws tokens tile the
    grid from (0, 0) (edge windows are smaller); returns out [H, W, nh, D]."""
    for name, a in (("q", q), ("k", k), ("v", v)):
        _arr(name, a, np.float32, 4)
    if not (q.shape == k.shape == v.shape):
        raise ValueError(f"q {q.shape}, k {k.shape}, v {v.shape} must have the same shape")
    H, W, nh, D = q.shape
    if not isinstance(ws, (int, np.integer)) or ws < 1:
        raise ValueError(f"window size must be a positive integer, got {ws!r}")
    y = _out("out", out, q.shape)
    scale = float(1.0 / np.sqrt(D)) if scale is None else float(scale)
    if lib is None:
        y[...] = window_attention_ref(q, k, v, ws, scale)
        return y
    _check_rc("window_attention", lib.cw_window_attention(
        _p("float*", q), _p("float*", k), _p("float*", v), _p("float*", y), H, W, nh, D,
        int(ws), scale))
    return y


def window_attention_ref(q, k, v, ws=16, scale=None):
    H, W, nh, D = q.shape
    out = np.zeros_like(q)
    for y0 in range(0, H, ws):
        for x0 in range(0, W, ws):
            win = (slice(y0, y0 + ws), slice(x0, x0 + ws))
            wh, ww = q[win].shape[:2]
            flat = [a[win].reshape(wh * ww, nh, D) for a in (q, k, v)]
            out[win] = attention_ref(*flat, scale).reshape(wh, ww, nh, D)
    return out


# ---- convolutions (NHWC, one image) -------------------------------------------------
def patch_embed(x, w, bias=None, act=None, out=None):
    """4x4 stride-4 convolution: x[H, W, Cin] (H, W multiples of 4), w[Cout, 4, 4, Cin],
    bias[Cout]; act None or 'silu'.  Returns out[H/4, W/4, Cout]."""
    _arr("x", x, np.float32, 3)
    _arr("w", w, np.float32, 4)
    H, W, Cin = x.shape
    Cout = w.shape[0]
    if H % 4 or W % 4:
        raise ValueError(f"image height and width must be multiples of 4, got {H}x{W} (pad it)")
    _shape("w", w, (Cout, 4, 4, Cin))
    if bias is not None:
        _arr("bias", bias, np.float32, 1)
        _shape("bias", bias, (Cout,))
    a = _act(act)
    y = _out("out", out, (H // 4, W // 4, Cout))
    if lib is None:
        y[...] = patch_embed_ref(x, w, bias, act)
        return y
    _check_rc("patch_embed", lib.cw_patch_embed(
        _p("float*", x), _p("float*", w), _p("float*", bias) if bias is not None else ffi.NULL,
        _p("float*", y), H, W, Cin, Cout, a))
    return y


def patch_embed_ref(x, w, bias=None, act=None):
    H, W, Cin = x.shape
    patches = x.reshape(H // 4, 4, W // 4, 4, Cin).transpose(0, 2, 1, 3, 4)
    y = patches.reshape(H // 4, W // 4, 16 * Cin) @ w.reshape(w.shape[0], -1).T
    if bias is not None:
        y = y + bias
    return silu_ref(y) if _act(act) else y


def dwconv3x3(x, w, bias=None, stride=1, act=None, out=None):
    """3x3 depthwise convolution, zero padding 1: x[H, W, C], w[3, 3, C], bias[C];
    stride 1 or 2; act None or 'silu'.  Returns out[(H-1)//stride+1, (W-1)//stride+1, C]."""
    _arr("x", x, np.float32, 3)
    _arr("w", w, np.float32, 3)
    H, W, C = x.shape
    _shape("w", w, (3, 3, C))
    if bias is not None:
        _arr("bias", bias, np.float32, 1)
        _shape("bias", bias, (C,))
    if stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, got {stride!r}")
    a = _act(act)
    Ho, Wo = ((H - 1) // stride + 1, (W - 1) // stride + 1) if H and W else (0, 0)
    y = _out("out", out, (Ho, Wo, C))
    if lib is None:
        y[...] = dwconv3x3_ref(x, w, bias, stride, act)
        return y
    _check_rc("dwconv3x3", lib.cw_dwconv3x3(
        _p("float*", x), _p("float*", w), _p("float*", bias) if bias is not None else ffi.NULL,
        _p("float*", y), H, W, C, int(stride), a))
    return y


def dwconv3x3_ref(x, w, bias=None, stride=1, act=None):
    H, W, C = x.shape
    xp = np.zeros((H + 2, W + 2, C), dtype=np.result_type(x, w))
    xp[1:H + 1, 1:W + 1] = x
    y = np.zeros((H, W, C), dtype=xp.dtype)
    for dy in range(3):
        for dx in range(3):
            y += xp[dy:dy + H, dx:dx + W] * w[dy, dx]
    y = y[::stride, ::stride]
    if bias is not None:
        y = y + bias
    return silu_ref(y) if _act(act) else y
