"""cw_matmul_f32 on every ISA path (the `isa` fixture forces scalar, avx2, avx512):
y[M, N] = x[M, K] @ w[N, K]^T + bias[N], against the float64 numpy reference.

Tolerance: the kernels accumulate in float32, so the error of a dot product of length K
grows like K * 2^-24 in the worst case and about sqrt(K) * 2^-24 in practice; with
K <= 769 and random inputs, rel_err (max abs error / max |reference|) < 1e-5 holds with
a wide margin (observed ~1e-6).  Those bounds are of the sum of |terms|: the hypothesis
test, which draws single outputs (M = N = 1) whose few terms and bias cancel to 1e-6 of
their size, measures the error relative to the same matmul on |x|, |w|, |bias| (K <= 80:
at most ~5e-6 of it, observed < 2e-7).
"""
import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

from cromwell_lsp import kernels as K
from tests.conftest import rel_err

TOL = 1e-5  # fp32 accumulation vs float64 reference (see the module docstring)


def _case(rng, M, N, Kd, bias=True):
    x = rng.standard_normal((M, Kd), dtype=np.float32)
    w = rng.standard_normal((N, Kd), dtype=np.float32)
    b = rng.standard_normal(N, dtype=np.float32) if bias else None
    return x, w, b


def _ref(x, w, b):
    return K.matmul_ref(x.astype(np.float64), w.astype(np.float64),
                        None if b is None else b.astype(np.float64))


def _check(x, w, b, **kw):
    y = K.matmul(x, w, b, **kw)
    assert y.dtype == np.float32
    ref = _ref(x, w, b)
    assert y.shape == ref.shape
    assert rel_err(y, ref) < TOL, (x.shape, w.shape, b is not None, rel_err(y, ref))
    return y


# Paths (see native/matmul_f32_avx512.c): M = 1 decode; M <= 4, or M <= 128 with K >= 256,
# the streamed dot-product GEMM (tiles of 4 rows of x); otherwise the packed GEMM (tiles of
# 12 / 6 rows of x).  M from 2 to 17 covers every tile row count and tail; N and K are
# chosen off the vector widths (8, 16) and tiles (3, 6, 16, 32).
SHAPES = [
    (1, 1, 1), (1, 7, 3), (1, 33, 31), (1, 65, 33), (1, 100, 769), (1, 768, 768),
    (2, 5, 1), (3, 17, 3), (4, 129, 31), (4, 40, 300),            # dot path, any K
    (5, 31, 33), (6, 16, 16), (7, 32, 64), (11, 47, 100), (12, 64, 255), (13, 33, 17),
    (17, 70, 200),                                                 # packed GEMM, K < 256
    (5, 31, 256), (9, 400, 769), (13, 33, 257), (17, 70, 769),     # dot path, K >= 256
    (3, 13, 33001),                                                # dot path, K > L2 block
]
@pytest.mark.parametrize("M,N,Kd", SHAPES)
@pytest.mark.parametrize("bias", [False, True])
def test_matches_reference(isa, rng, M, N, Kd, bias):
    _check(*_case(rng, M, N, Kd, bias))


def test_vector_input_gives_vector_output(isa, rng):
    x, w, b = _case(rng, 1, 45, 37)
    y = K.matmul(x[0], w, b)
    assert y.shape == (45,)
    assert rel_err(y, _ref(x, w, b)[0]) < TOL


def test_large_shapes_cover_the_blocking(isa, rng):
    """64 x 768 x 300 (dot path, several blocks of w rows); 130 x 600 x 1100 on one thread
    (packed GEMM: three K blocks, the later ones accumulating into y, three column blocks
    per thread, a ragged last panel and a ragged last row tile)."""
    _check(*_case(rng, 64, 300, 768))
    before = K.threads()
    try:
        K.set_threads(1)
        _check(*_case(rng, 130, 1100, 600))
    finally:
        K.set_threads(before)


def test_thread_counts_agree(isa, rng):
    x, w, b = _case(rng, 9, 200, 70)
    before = K.threads()
    try:
        outs = []
        for n in (1, 2, 3, 7):
            K.set_threads(n)
            outs.append(K.matmul(x, w, b))
    finally:
        K.set_threads(before)
    for y in outs:
        assert rel_err(y, _ref(x, w, b)) < TOL
    for y in outs[1:]:  # the K loop order does not depend on the partition of N
        np.testing.assert_array_equal(y, outs[0])


@pytest.mark.parametrize("M,N", [(0, 5), (4, 0), (0, 0), (1, 0)])
def test_empty_outputs(isa, rng, M, N):
    x, w, b = _case(rng, M, N, 8)
    y = K.matmul(x, w, b)
    assert y.shape == (M, N)


@pytest.mark.parametrize("M", [1, 3, 20])
def test_k_zero_gives_bias_or_zeros(isa, rng, M):
    x, w, b = _case(rng, M, 37, 0)
    np.testing.assert_array_equal(K.matmul(x, w, b), np.broadcast_to(b, (M, 37)))
    out = np.full((M, 37), np.nan, np.float32)
    K.matmul(x, w, None, out=out)
    np.testing.assert_array_equal(out, np.zeros((M, 37), np.float32))


def test_writes_into_out_only_inside_it(isa, rng):
    x, w, b = _case(rng, 13, 45, 40)
    out = np.full((13, 45), np.nan, np.float32)
    res = K.matmul(x, w, b, out=out)
    assert res is out
    assert rel_err(out, _ref(x, w, b)) < TOL
    # A padded buffer: the kernel must not touch the guard values around the output.
    buf = np.full(13 * 45 + 64, 7.0, np.float32)
    view = buf[32:32 + 13 * 45].reshape(13, 45)
    K.matmul(x, w, b, out=view)
    assert np.all(buf[:32] == 7.0) and np.all(buf[32 + 13 * 45:] == 7.0)
    assert rel_err(view, _ref(x, w, b)) < TOL


@settings(max_examples=30, deadline=None)
@given(M=st.integers(1, 20), N=st.integers(1, 70), Kd=st.integers(0, 80),
       bias=st.booleans(), isa_name=st.sampled_from(K.ISAS), seed=st.integers(0, 2**31))
@example(M=1, N=1, Kd=2, bias=False, isa_name="scalar", seed=1348)  # cancels to 7e-7
def test_property_random_shapes(M, N, Kd, bias, isa_name, seed):
    if not K.isa_supported(isa_name):
        return
    before = K.isa()
    K.set_isa(isa_name)
    try:
        x, w, b = _case(np.random.default_rng(seed), M, N, Kd, bias)
        y = K.matmul(x, w, b)
        ref = _ref(x, w, b)
        if Kd == 0:
            np.testing.assert_array_equal(y, ref)
        else:
            # Error relative to the same matmul on |x|, |w|, |b| (sum |x_k w_k| + |b|), the
            # scale the float32 rounding is bounded by: a single output's terms can cancel,
            # and the error relative to that result measures the cancellation, not the kernel.
            scale = _ref(np.abs(x), np.abs(w), None if b is None else np.abs(b))
            assert rel_err(y, ref, scale) < TOL
    finally:
        K.set_isa(before)


def test_argument_errors(rng):
    x, w, b = _case(rng, 3, 8, 5)
    with pytest.raises(ValueError, match="dtype"):
        K.matmul(x.astype(np.float64), w)
    with pytest.raises(ValueError, match="dtype"):
        K.matmul(x, w.astype(np.float16))
    with pytest.raises(ValueError, match="dtype"):
        K.matmul(x, w, b.astype(np.float64))
    with pytest.raises(ValueError, match="columns"):
        K.matmul(x[:, :4].copy(), w)
    with pytest.raises(ValueError, match="shape"):
        K.matmul(x, w, b[:7].copy())
    with pytest.raises(ValueError, match="contiguous"):
        K.matmul(np.asfortranarray(x), w)
    with pytest.raises(ValueError, match="contiguous"):
        K.matmul(x, np.ones((16, 5), np.float32)[::2])
    with pytest.raises(ValueError, match="shape"):
        K.matmul(x, w, out=np.empty((3, 9), np.float32))
    with pytest.raises(ValueError, match="dtype"):
        K.matmul(x, w, out=np.empty((3, 8), np.float64))
    with pytest.raises(ValueError, match="dimensions"):
        K.matmul(x[None], w)
    with pytest.raises(ValueError, match="numpy array"):
        K.matmul(x.tolist(), w)
    ro = np.empty((3, 8), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        K.matmul(x, w, out=ro)
