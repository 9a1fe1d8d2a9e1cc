"""Tests of the attention kernels (cw_attention, cw_window_attention) on every ISA path.

Each result is compared with the numpy reference (`attention_ref`,
`window_attention_ref`) evaluated in float64 on float64 copies of the float32 inputs.
Tolerance: rel_err (max abs error / max |ref|) < 1e-5.  The kernels accumulate dot
products of up to D = 80 terms and softmax sums of up to ~1000 terms in float32 and use
a ~1-2 ulp exp; the observed errors are a few 1e-7, so 1e-5 leaves room for the
reassociation the blocked / split-K orders introduce while still catching any wrong
mask, block edge or rescaling (those give errors of order 1e-2 or more).  The
large-dynamic-range test uses 1e-4: there the scores reach |s| ~ 50-100, and the float32
rounding of a score (|s| * 6e-8) is amplified by exp into a relative error of the same
size in each probability.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from cromwell_lsp import kernels
from tests.conftest import rel_err

TOL = 1e-5


def _qkv(rng, Tq, Tk, Hq, Hkv, D, scale=1.0):
    q = (rng.standard_normal((Tq, Hq, D)) * scale).astype(np.float32)
    k = rng.standard_normal((Tk, Hkv, D)).astype(np.float32)
    v = rng.standard_normal((Tk, Hkv, D)).astype(np.float32)
    return q, k, v


def _ref(q, k, v, causal_offset=-1, scale=None):
    f64 = [np.asarray(a, dtype=np.float64) for a in (q, k, v)]
    return kernels.attention_ref(*f64, scale=scale, causal_offset=causal_offset)


def _check(q, k, v, causal_offset=-1, tol=TOL, **kw):
    got = kernels.attention(q, k, v, causal_offset=causal_offset, **kw)
    ref = _ref(q, k, v, causal_offset, kw.get("scale"))
    assert np.all(np.isfinite(got))
    assert rel_err(got, ref) < tol, (q.shape, k.shape, causal_offset)
    return got


# ---- decode (Tq == 1) ---------------------------------------------------------------
@pytest.mark.parametrize("Hq,Hkv", [(5, 5), (8, 4), (6, 2), (12, 4), (12, 3), (12, 1), (7, 1)])
@pytest.mark.parametrize("Tk", [1, 5, 67, 700])
def test_decode_gqa(isa, rng, Hq, Hkv, Tk):
    q, k, v = _qkv(rng, 1, Tk, Hq, Hkv, 64)
    _check(q, k, v, causal_offset=Tk - 1)  # the new token sees the whole cache
    _check(q, k, v)  # non-causal: the same keys


@pytest.mark.parametrize("D", [1, 3, 17, 40, 64, 80])
def test_decode_head_sizes(isa, rng, D):
    q, k, v = _qkv(rng, 1, 300, 6, 2, D)
    _check(q, k, v, causal_offset=299)


def test_decode_cache_longer_than_visible(isa, rng):
    """causal_offset < Tk - 1: keys past causal_offset exist but must not be seen."""
    q, k, v = _qkv(rng, 1, 1000, 12, 3, 64)
    got = _check(q, k, v, causal_offset=400)
    assert np.allclose(got, kernels.attention(q, k[:401], v[:401], causal_offset=400), atol=1e-6)


def test_decode_threads_agree(isa, rng):
    """The split-K partition changes with the thread count; results must not."""
    q, k, v = _qkv(rng, 1, 2000, 12, 3, 64)
    before = kernels.threads()
    try:
        outs = []
        for n in (1, 2, 3, 5):
            kernels.set_threads(n)
            outs.append(_check(q, k, v, causal_offset=1999))
    finally:
        kernels.set_threads(before)
    for o in outs[1:]:
        assert rel_err(o, outs[0]) < TOL


# ---- prefill (Tq > 1) ---------------------------------------------------------------
@pytest.mark.parametrize("D", [1, 3, 17, 40, 64, 80])
def test_prefill_causal_head_sizes(isa, rng, D):
    q, k, v = _qkv(rng, 150, 150, 6, 3, D)
    _check(q, k, v, causal_offset=0)


@pytest.mark.parametrize("Tq,Tk,off", [(2, 2, 0), (65, 65, 0), (129, 129, 0), (7, 100, 93),
                                       (70, 200, 130), (100, 300, 77), (5, 5, 1000)])
@pytest.mark.parametrize("Hq,Hkv", [(4, 4), (6, 2), (12, 3), (12, 1)])
def test_prefill_causal_offsets(isa, rng, Tq, Tk, off, Hq, Hkv):
    """Causal prefill of Tq new tokens after a cache of `off` tokens (off + Tq may differ
    from Tk: keys past Tk simply do not exist); sizes cross the 64-query / 64-key blocks."""
    q, k, v = _qkv(rng, Tq, Tk, Hq, Hkv, 40)
    _check(q, k, v, causal_offset=off)


@pytest.mark.parametrize("Tq,Tk", [(2, 1), (77, 5), (10, 260), (130, 63), (64, 64)])
def test_prefill_cross_attention(isa, rng, Tq, Tk):
    """Non-causal (text->image, image->text): every query sees every key, Tq != Tk."""
    q, k, v = _qkv(rng, Tq, Tk, 6, 2, 64)
    _check(q, k, v, causal_offset=-1)


def test_empty_and_single(isa, rng):
    for Tq, off in ((1, -1), (1, 0), (9, 0), (70, -1), (70, 5)):
        q, k, v = _qkv(rng, Tq, 0, 4, 2, 16)
        got = kernels.attention(q, k, v, causal_offset=off)
        assert got.shape == q.shape and np.all(got == 0)  # no key seen: zeros
    q, k, v = _qkv(rng, 1, 1, 1, 1, 1)
    assert np.allclose(kernels.attention(q, k, v, causal_offset=0), v, rtol=0, atol=0)
    q, k, v = _qkv(rng, 1, 1, 3, 1, 5)
    got = kernels.attention(q, k, v, causal_offset=0)
    assert np.array_equal(got, np.broadcast_to(v, got.shape))


@pytest.mark.parametrize("Tq", [1, 33, 100])
def test_large_dynamic_range(isa, rng, Tq):
    """Scores spanning |s| up to ~100 in one row: the running max must keep exp from
    overflowing and the rescaling must be exact enough."""
    q, k, v = _qkv(rng, Tq, 300, 4, 2, 64, scale=12.0)
    k[::7] *= 4.0  # a few dominant keys, far from the rest
    got = _check(q, k, v, causal_offset=299 if Tq == 1 else 200, tol=1e-4)
    assert np.max(np.abs(got)) <= np.max(np.abs(v)) * (1 + 1e-5)  # convex combinations
    s = np.einsum("qhd,kd->qhk", q.astype(np.float64)[:, :2], k[:, 0].astype(np.float64)) / 8
    assert np.ptp(s) > 100  # the range really is large


# ---- strided views ------------------------------------------------------------------
def test_strided_cache_and_fused_qkv(isa, rng):
    """Decode / prefill straight from a KV cache stored [Hkv, Tcap, D] and from q sliced
    out of a fused qkv projection, writing into a strided output view."""
    Hq, Hkv, D, Tcap = 12, 3, 64, 512
    cache_k = rng.standard_normal((Hkv, Tcap, D)).astype(np.float32)
    cache_v = rng.standard_normal((Hkv, Tcap, D)).astype(np.float32)
    for Tq, T in ((1, 300), (40, 300), (1, 1)):
        k = cache_k[:, :T].transpose(1, 0, 2)
        v = cache_v[:, :T].transpose(1, 0, 2)
        qkv = rng.standard_normal((Tq, (Hq + 2 * Hkv) * D)).astype(np.float32)
        q = qkv.reshape(Tq, Hq + 2 * Hkv, D)[:, :Hq]
        big = np.full((Tq, Hq, D + 8), 7.0, np.float32)
        out = big[:, :, 3:3 + D]
        got = kernels.attention(q, k, v, out=out, causal_offset=T - Tq)
        assert got is out
        assert rel_err(out, _ref(q, k, v, T - Tq)) < TOL
        assert np.all(big[:, :, :3] == 7.0) and np.all(big[:, :, 3 + D:] == 7.0)


def test_q_as_qkv_slice_prefill_matches_contiguous(isa, rng):
    T, Hq, Hkv, D = 90, 6, 2, 40
    qkv = rng.standard_normal((T, Hq + 2 * Hkv, D)).astype(np.float32)
    q, k, v = qkv[:, :Hq], qkv[:, Hq:Hq + Hkv], qkv[:, Hq + Hkv:]
    got = kernels.attention(q, k, v, causal_offset=0)
    want = kernels.attention(*(np.ascontiguousarray(a) for a in (q, k, v)), causal_offset=0)
    assert np.array_equal(got, want)
    assert rel_err(got, _ref(q, k, v, 0)) < TOL


# ---- window attention -----------------------------------------------------------------
@pytest.mark.parametrize("H,W,nh,D,ws", [(20, 37, 3, 17, 16), (16, 16, 2, 64, 8),
                                         (5, 6, 2, 8, 16), (9, 40, 1, 3, 7), (3, 3, 2, 5, 1),
                                         (33, 18, 6, 64, 16)])
def test_window_attention(isa, rng, H, W, nh, D, ws):
    q, k, v = [rng.standard_normal((H, W, nh, D)).astype(np.float32) for _ in range(3)]
    got = kernels.window_attention(q, k, v, ws=ws)
    f64 = [a.astype(np.float64) for a in (q, k, v)]
    assert rel_err(got, kernels.window_attention_ref(*f64, ws=ws)) < TOL
    if ws == 1:  # each token only sees itself
        assert np.allclose(got, v, atol=1e-6)


def test_window_attention_is_independent_per_window(isa, rng):
    """Changing tokens of one window leaves every other window's output unchanged."""
    H, W, nh, D, ws = 24, 20, 2, 16, 8
    q, k, v = [rng.standard_normal((H, W, nh, D)).astype(np.float32) for _ in range(3)]
    a = kernels.window_attention(q, k, v, ws=ws)
    k2, v2 = k.copy(), v.copy()
    k2[8:16, 8:16] += 1.0
    v2[8:16, 8:16] -= 2.0
    b = kernels.window_attention(q, k2, v2, ws=ws)
    outside = np.ones((H, W), bool)
    outside[8:16, 8:16] = False
    assert np.array_equal(a[outside], b[outside])
    assert not np.allclose(a[8:16, 8:16], b[8:16, 8:16])


# ---- property test --------------------------------------------------------------------
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(Tq=st.integers(1, 140), Tk=st.integers(0, 200), Hkv=st.integers(1, 3),
       G=st.sampled_from([1, 2, 3, 4]), D=st.integers(1, 70),
       off=st.integers(-1, 150), seed=st.integers(0, 2**31 - 1))
@example(Tq=1, Tk=140, Hkv=1, G=1, D=1, off=34, seed=1)  # a sum that cancels to 4e-4
def test_attention_property(isa, Tq, Tk, Hkv, G, D, off, seed):
    rng = np.random.default_rng(seed)
    q, k, v = _qkv(rng, Tq, Tk, G * Hkv, Hkv, D)
    got = kernels.attention(q, k, v, causal_offset=off)
    if Tk == 0:
        assert np.all(got == 0)
        return
    # Error relative to the attention of |v| (sum_i p_i |v_i|), the scale an fp32 weighted
    # sum's rounding error is bounded by: with one output value (Tq = Hq = D = 1) the
    # weighted values can cancel to 1e-4 of their size, and the error relative to that
    # result measures the cancellation, not the kernel.  Without cancellation this is
    # the plain relative error.
    assert rel_err(got, _ref(q, k, v, off), scale=_ref(q, k, np.abs(v), off)) < TOL


# ---- memory ------------------------------------------------------------------------------
def test_prefill_scratch_is_not_quadratic(isa, rng):
    """A causal prefill at T = 2048 never holds a T x T score matrix: its scratch stays
    far below T*T*4 bytes and does not grow from T = 1024 to T = 2048."""
    peaks = {}
    for T in (1024, 2048):
        q, k, v = _qkv(rng, T, T, 2, 1, 64)
        kernels.scratch_reset_peak()
        kernels.attention(q, k, v, causal_offset=0)
        peaks[T] = kernels.scratch_peak_bytes()
    assert 0 < peaks[2048] < 2048 * 2048 * 4 // 32
    assert peaks[2048] <= peaks[1024]


# ---- argument errors -------------------------------------------------------------------
def test_argument_errors(rng):
    q, k, v = _qkv(rng, 3, 5, 6, 4, 16)
    with pytest.raises(ValueError, match="multiple"):
        kernels.attention(q, k, v)  # 6 query heads, 4 kv heads
    q, k, v = _qkv(rng, 3, 5, 6, 3, 16)
    with pytest.raises(ValueError, match="head size"):
        kernels.attention(q[..., :8], k, v)
    with pytest.raises(ValueError, match="same shape"):
        kernels.attention(q, k, v[:4])
    with pytest.raises(ValueError):
        kernels.attention(q.astype(np.float64), k, v)
    with pytest.raises(ValueError):
        kernels.attention(q, k, v, out=np.empty((3, 6, 15), np.float32))
    with pytest.raises(ValueError):
        kernels.window_attention(q, k, v)  # 3-D inputs
    # D == 1: k and v views with different token/head strides are refused (the kernel
    # reads v with k's strides)
    k1 = rng.standard_normal((5, 3, 1)).astype(np.float32)
    v1 = np.ascontiguousarray(rng.standard_normal((3, 5, 1)).astype(np.float32)).transpose(1, 0, 2)
    with pytest.raises(ValueError, match="strides"):
        kernels.attention(q[..., :1], k1, v1)
