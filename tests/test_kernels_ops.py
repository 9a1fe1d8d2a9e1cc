"""Tests of the element-wise and row kernels (rmsnorm, swiglu, silu_, rope_, softmax_, add)
on every ISA path, against the numpy references evaluated in float64.

Tolerances, as rel_err (max |got - ref| / max |ref|):
  add      1e-6: one float32 rounding per element (<= 6e-8).
  rmsnorm  1e-6: float32 sums of squares over several vector accumulators (N <= ~5000,
           relative error ~ 1e-7) plus three roundings per output.
  swiglu, silu, softmax  1e-6: the vector exp is within ~2 ulp (degree-5 polynomial on
           |r| <= ln2/2), then one division / multiplication / sum, a few ulp in all
           (~3e-7); softmax inputs are float32, so x - max is the same for the reference.
  rope     1e-6: cos / sin are computed in double and rounded once to float32, then two
           products and a sum per output (~3 ulp), also at positions around 50000.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cromwell_lsp import kernels
from tests.conftest import rel_err

TOL = 1e-6
LENGTHS = [1, 7, 15, 17, 33, 1000, 40_000]  # the last one runs the threaded partition


def each_isa():
    """Every supported ISA name in turn, with that path forced (for the hypothesis tests,
    which cannot use the function-scoped `isa` fixture); restores the ISA afterwards."""
    before = kernels.isa()
    try:
        for name in kernels.supported_isas():
            kernels.set_isa(name)
            yield name
    finally:
        kernels.set_isa(before)


def f32(r, *shape, scale=1.0):
    return (r.standard_normal(shape) * scale).astype(np.float32)


# ---- add --------------------------------------------------------------------------
@pytest.mark.parametrize("n", LENGTHS)
def test_add(isa, rng, n):
    a, b = f32(rng, n), f32(rng, n)
    assert rel_err(kernels.add(a, b), a.astype(np.float64) + b) < TOL


@pytest.mark.parametrize("which", ["a", "b"])
def test_add_aliasing(isa, rng, which):
    a, b = f32(rng, 3, 1001), f32(rng, 3, 1001)
    ref = a.astype(np.float64) + b
    target = a if which == "a" else b
    assert kernels.add(a, b, out=target) is target
    assert rel_err(target, ref) < TOL


def test_add_empty(isa):
    e = np.zeros((0, 5), np.float32)
    assert kernels.add(e, e).shape == (0, 5)


# ---- rmsnorm ------------------------------------------------------------------------
@pytest.mark.parametrize("N", LENGTHS[:-1] + [4099])
@pytest.mark.parametrize("M", [1, 3, 20])
def test_rmsnorm(isa, rng, M, N):
    x, w = f32(rng, M, N, scale=3.0), f32(rng, N)
    ref = kernels.rmsnorm_ref(x.astype(np.float64), w.astype(np.float64), 1e-5)
    assert rel_err(kernels.rmsnorm(x, w, eps=1e-5), ref) < TOL


def test_rmsnorm_in_place_threaded(isa, rng):
    x, w = f32(rng, 64, 768), f32(rng, 768)  # 48K elements: two threads
    ref = kernels.rmsnorm_ref(x.astype(np.float64), w.astype(np.float64))
    assert kernels.rmsnorm(x, w, out=x) is x
    assert rel_err(x, ref) < TOL


def test_rmsnorm_zero_row_and_edges(isa):
    w = np.ones(9, np.float32)
    assert np.all(kernels.rmsnorm(np.zeros((2, 9), np.float32), w, eps=1e-6) == 0)
    assert kernels.rmsnorm(np.zeros((0, 9), np.float32), w).shape == (0, 9)
    one = kernels.rmsnorm(np.array([[-3.0]], np.float32), np.array([2.0], np.float32), eps=0.0)
    assert one[0, 0] == pytest.approx(-2.0, rel=1e-6)


# ---- swiglu / silu ------------------------------------------------------------------
@pytest.mark.parametrize("n", LENGTHS)
def test_swiglu(isa, rng, n):
    a, b = f32(rng, n, scale=4.0), f32(rng, n)
    ref = kernels.swiglu_ref(a.astype(np.float64), b.astype(np.float64))
    assert rel_err(kernels.swiglu(a, b), ref) < TOL


@pytest.mark.parametrize("which", ["a", "b"])
def test_swiglu_aliasing(isa, rng, which):
    a, b = f32(rng, 1003, scale=4.0), f32(rng, 1003)
    ref = kernels.swiglu_ref(a.astype(np.float64), b.astype(np.float64))
    target = a if which == "a" else b
    kernels.swiglu(a, b, out=target)
    assert rel_err(target, ref) < TOL


@pytest.mark.parametrize("n", LENGTHS)
def test_silu(isa, rng, n):
    x = f32(rng, n, scale=6.0)
    ref = kernels.silu_ref(x.astype(np.float64))
    assert kernels.silu_(x) is x
    assert rel_err(x, ref) < TOL


def test_silu_extremes(isa):
    # 16 values + 1 so both the vector body and the tail see the extremes
    v = np.array([-1e30, -1e4, -100, -88.5, -87.2, -30, -1e-30, 0, 1e-30, 30, 87.2, 88.5,
                  100, 1e4, 1e30, 3.4e38, -3.4e38], np.float32)
    for x in (v.copy(), v[::-1].copy()):
        ref = kernels.silu_ref(x.astype(np.float64))
        got = kernels.silu_(x)
        assert np.all(np.isfinite(got))
        # relative 1e-6, or absolute 1e-30 where the true value is below float's normal range
        assert np.all(np.abs(got - ref) <= 1e-6 * np.abs(ref) + 1e-30)


def test_swiglu_empty(isa):
    e = np.zeros(0, np.float32)
    assert kernels.swiglu(e, e).shape == (0,)
    assert kernels.silu_(e).shape == (0,)


# ---- softmax ------------------------------------------------------------------------
@pytest.mark.parametrize("N", LENGTHS[:-1] + [4096])
def test_softmax(isa, rng, N):
    x = f32(rng, 5, N, scale=5.0)
    ref = kernels.softmax_ref(x.astype(np.float64))
    got = kernels.softmax_(x)
    assert rel_err(got, ref) < TOL
    assert np.allclose(got.sum(axis=-1), 1.0, atol=1e-5)


def test_softmax_large_values_and_threads(isa, rng):
    x = f32(rng, 12, 4096, scale=50.0) + np.float32(1e4)  # exp(x) alone would overflow
    x[3] = -1e30  # a constant row: uniform
    x[4, 17] = 3e38  # one dominant entry: one-hot
    ref = kernels.softmax_ref(x.astype(np.float64))
    got = kernels.softmax_(x)
    assert np.all(np.isfinite(got))
    assert rel_err(got, ref) < TOL
    assert got[4, 17] == 1.0 and got[4].sum() == 1.0


# ---- rope ---------------------------------------------------------------------------
def rope_check(x, pos0, theta, neox):
    ref = kernels.rope_ref(x.astype(np.float64), pos0, theta, neox)
    assert kernels.rope_(x, pos0, theta, neox) is x
    assert rel_err(x, ref) < TOL


@pytest.mark.parametrize("neox", [False, True])
@pytest.mark.parametrize("T,H,D", [(1, 1, 2), (1, 12, 64), (5, 3, 6), (7, 5, 34), (3, 1, 128),
                                   (300, 7, 64)])
@pytest.mark.parametrize("pos0", [0, 7, 50_000])
def test_rope(isa, rng, neox, T, H, D, pos0):
    rope_check(f32(rng, T, H, D), pos0, 10000.0, neox)


@pytest.mark.parametrize("neox", [False, True])
def test_rope_strided_view_and_large_positions(isa, rng, neox):
    # q part of a fused qkv projection [T, (Hq + 2 Hkv) * D], seen as [T, Hq, D]
    T, Hq, Hkv, D = 200, 5, 1, 48
    qkv = f32(rng, T, (Hq + 2 * Hkv) * D)
    before = qkv.copy()
    q = qkv[:, :Hq * D].reshape(T, Hq, D)
    assert not q.flags.c_contiguous
    rope_check(q, 99_800, 500000.0, neox)
    np.testing.assert_array_equal(qkv[:, Hq * D:], before[:, Hq * D:])  # k, v untouched


def test_rope_empty(isa):
    x = np.zeros((0, 3, 8), np.float32)
    assert kernels.rope_(x, 5).shape == (0, 3, 8)


# ---- hypothesis ---------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 300), scale=st.sampled_from([1e-3, 1.0, 30.0]), seed=st.integers(0, 2**31 - 1))
def test_elementwise_property(n, scale, seed):
    r = np.random.default_rng(seed)
    a, b = f32(r, n, scale=scale), f32(r, n)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    for _ in each_isa():
        assert rel_err(kernels.add(a, b), a64 + b64) < TOL
        assert rel_err(kernels.swiglu(a, b), kernels.swiglu_ref(a64, b64)) < TOL
        assert rel_err(kernels.silu_(a.copy()), kernels.silu_ref(a64)) < TOL


@settings(max_examples=30, deadline=None)
@given(M=st.integers(1, 6), N=st.integers(1, 200), scale=st.sampled_from([1e-3, 1.0, 100.0]),
       seed=st.integers(0, 2**31 - 1))
def test_row_ops_property(M, N, scale, seed):
    r = np.random.default_rng(seed)
    x, w = f32(r, M, N, scale=scale), f32(r, N)
    x64 = x.astype(np.float64)
    for _ in each_isa():
        assert rel_err(kernels.rmsnorm(x, w), kernels.rmsnorm_ref(x64, w.astype(np.float64))) < TOL
        assert rel_err(kernels.softmax_(x.copy()), kernels.softmax_ref(x64)) < TOL


@settings(max_examples=30, deadline=None)
@given(T=st.integers(1, 9), H=st.integers(1, 5), P=st.integers(1, 40), neox=st.booleans(),
       pos0=st.integers(0, 100_000), seed=st.integers(0, 2**31 - 1))
def test_rope_property(T, H, P, neox, pos0, seed):
    x0 = f32(np.random.default_rng(seed), T, H, 2 * P)
    for _ in each_isa():
        rope_check(x0.copy(), pos0, 10000.0, neox)


# ---- argument checks ----------------------------------------------------------------
def test_bad_arguments():
    x = np.zeros((2, 8), np.float32)
    with pytest.raises(ValueError, match="w"):
        kernels.rmsnorm(x, np.zeros(7, np.float32))
    with pytest.raises(ValueError, match="dtype"):
        kernels.rmsnorm(x.astype(np.float64), np.zeros(8, np.float32))
    with pytest.raises(ValueError, match="eps"):
        kernels.rmsnorm(x, np.zeros(8, np.float32), eps=-1.0)
    with pytest.raises(ValueError, match="same shape"):
        kernels.swiglu(x, np.zeros((2, 7), np.float32))
    with pytest.raises(ValueError, match="same shape"):
        kernels.add(x, np.zeros(16, np.float32))
    with pytest.raises(ValueError, match="out"):
        kernels.add(x, x, out=np.zeros((2, 9), np.float32))
    with pytest.raises(ValueError, match="contiguous"):
        kernels.silu_(np.zeros((8, 8), np.float32)[:, ::2])
    with pytest.raises(ValueError, match="even"):
        kernels.rope_(np.zeros((2, 2, 5), np.float32))
    with pytest.raises(ValueError, match="pos0"):
        kernels.rope_(np.zeros((2, 2, 4), np.float32), pos0=-1)
    with pytest.raises(ValueError, match="theta"):
        kernels.rope_(np.zeros((2, 2, 4), np.float32), theta=0.0)
    with pytest.raises(ValueError, match="dimensions"):
        kernels.rope_(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="at least one"):
        kernels.softmax_(np.zeros((), np.float32))
    with pytest.raises(ValueError, match="writable"):
        ro = np.zeros(4, np.float32)
        ro.flags.writeable = False
        kernels.silu_(ro)
