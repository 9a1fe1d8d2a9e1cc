"""Tests of the q8 kernels (quantize_q8, dequantize_q8, matmul_q8) on every ISA path.

quantize and dequantize must match the numpy references bit for bit.  matmul_q8 is
compared with matmul_q8_ref in float64: the kernels quantize x exactly as the reference
does and their integer block dot products are exact (|dot| <= 32 * 128 * 127 < 2**24, so
even its float conversion is exact; the SIMD decode paths convert a block's dot in two
exact partial sums); what remains is float32 rounding of dx * dw, of each scaled (partial)
block term, of the sum over the K/32 blocks and of the bias, at most about
(2 K/32 + 3) * 2**-24 of the sum of |terms|.  For K <= 800 (25 blocks) that is ~3e-6 of
sum |terms|, so the error stays below 1e-5 of that scale: the hypothesis test measures it
as max |diff| / max (the same matmul on |x|, |w|, |bias|), which bounds sum |terms|.  A
plain rel_err (max |diff| / max |ref|) measures cancellation instead when one output's
terms (or the bias) cancel: M = N = 1 outputs down to 3e-6 of their terms occur.
"""
import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

from cromwell_lsp import kernels
from tests.conftest import rel_err

MATMUL_TOL = 1e-5


def bits(d):
    return np.asarray(d).view(np.uint16)


def check_quantize(x):
    q, d = kernels.quantize_q8(x)
    with np.errstate(over="ignore"):  # huge blocks: d is inf in fp16, on purpose
        qr, dr = kernels.quantize_q8_ref(x)
    assert q.shape == x.shape and d.shape == x.shape[:-1] + (x.shape[-1] // 32,)
    np.testing.assert_array_equal(q, qr)
    np.testing.assert_array_equal(bits(d), bits(dr))
    return q, d


def random_weights(rng, N, K, scale=0.02):
    wq = rng.integers(-128, 128, size=(N, K), dtype=np.int8)  # -128 included on purpose
    wd = (rng.random((N, K // 32)) * scale + 1e-4).astype(np.float16)
    return wq, wd


# ---- quantize -------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(32,), (1, 64), (7, 800), (3, 4096), (2100, 32)])
def test_quantize_random(isa, rng, shape):
    check_quantize(rng.standard_normal(shape).astype(np.float32) * 3)


def test_quantize_large_threaded(isa, rng):
    # 256 Ki values: above the threading threshold
    check_quantize((rng.standard_normal((64, 4096)) * rng.random((64, 1)) * 10).astype(np.float32))


@pytest.mark.parametrize("exp", [-20, -3, 0, 5, 30])
def test_quantize_ties(isa, rng, exp):
    # max|x| = 127 * 2**exp makes d = 2**exp and 1/d exact, so x * id = k + 0.5 exactly:
    # round-half-to-even must pick the even neighbour (0.5 -> 0, 1.5 -> 2, -2.5 -> -2).
    halves = np.arange(-126, 127, dtype=np.float32) + np.float32(0.5)
    x = np.empty((len(halves) // 31 + 1) * 32, dtype=np.float32)
    x[:] = 0.5
    x[0::32] = 127.0
    x[np.arange(len(x)) % 32 != 0] = np.resize(halves, len(x) - len(x) // 32)
    x = (x * np.float32(2.0 ** exp)).astype(np.float32)
    x[32::64] *= -1  # negative maxima too
    q, d = check_quantize(x)
    with np.errstate(over="ignore"):  # 2**30 is inf in fp16
        assert np.all(bits(d) == bits(np.float32(2.0 ** exp).astype(np.float16)))
    assert q[1] == -126 and q[2] == -124  # -125.5 -> -126, -124.5 -> -124


def test_quantize_scale_ties_fp16(isa):
    # d lands exactly halfway between two fp16 values: stored d rounds to nearest even
    for frac in (1, 3, 5, 2047):
        dval = np.float32(1 + frac * 2.0 ** -11)
        x = np.zeros(32, dtype=np.float32)
        x[5] = dval * np.float32(127)
        assert np.float32(x[5]) / np.float32(127) == dval
        check_quantize(x)


def test_quantize_zero_and_signed_zero_blocks(isa):
    x = np.zeros((4, 64), dtype=np.float32)
    x[1] = -0.0
    x[2, 40] = -3.0  # second block of row 2 non-zero, the first all zero
    q, d = check_quantize(x)
    assert np.all(q[:2] == 0) and np.all(bits(d[:2]) == 0)
    assert q[2, 40] == -127 and np.all(q[2, :32] == 0)


@pytest.mark.parametrize("mag", [1e38, 3e6, 65504 * 127, 1e-3, 1e-6, 1e-9, 1e-30])
def test_quantize_extreme_magnitudes(isa, rng, mag):
    # huge: d overflows fp16 to inf; tiny: d becomes an fp16 subnormal or zero
    # (1 / d stays finite in float32 for all of these)
    x = (rng.standard_normal((5, 96)) * mag).astype(np.float32)
    check_quantize(x)


def test_quantize_negative_only(isa, rng):
    q, _ = check_quantize(-np.abs(rng.standard_normal((3, 128))).astype(np.float32))
    assert q.max() <= 0 and q.min() == -127


# ---- dequantize -------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(32,), (5, 96), (3000, 32), (100, 1024)])
def test_dequantize_exact(isa, rng, shape):
    q = rng.integers(-128, 128, size=shape, dtype=np.int8)
    d = (rng.standard_normal(shape[:-1] + (shape[-1] // 32,)) * 0.1).astype(np.float16)
    special = np.array([6e-8, -0.0, 65504], np.float16)  # subnormal, -0, largest
    d.reshape(-1)[:3] = special[:d.size]
    got = kernels.dequantize_q8(q, d)
    np.testing.assert_array_equal(got, kernels.dequantize_q8_ref(q, d))


def test_quantize_dequantize_roundtrip(isa, rng):
    x = rng.standard_normal((8, 256)).astype(np.float32)
    q, d = kernels.quantize_q8(x)
    back = kernels.dequantize_q8(q, d)
    d32 = np.abs(x).reshape(-1, 32).max(axis=1).repeat(32).reshape(x.shape) / 127
    # rounding to q loses <= d/2; the fp16 scale adds <= 127 * d * 2**-11
    assert np.all(np.abs(back - x) <= d32 * (0.5 + 127 * 2.0 ** -11) * 1.001)


# ---- matmul_q8 ----------------------------------------------------------------------
@pytest.mark.parametrize("K", [32, 64, 96, 800])
@pytest.mark.parametrize("N", [1, 5, 13, 33])
@pytest.mark.parametrize("M", [1, 2, 3, 5, 8, 17])
def test_matmul_q8_matches_ref(isa, rng, M, N, K):
    x = rng.standard_normal((M, K)).astype(np.float32)
    wq, wd = random_weights(rng, N, K)
    bias = rng.standard_normal(N).astype(np.float32) if (M + N) % 2 else None
    y = kernels.matmul_q8(x, wq, wd, bias)
    assert y.shape == (M, N)
    assert rel_err(y, kernels.matmul_q8_ref(x, wq, wd, bias)) < MATMUL_TOL


@pytest.mark.parametrize("M,N,K", [(1, 300, 4096), (4, 1027, 256), (40, 37, 8192), (130, 70, 2048)])
def test_matmul_q8_larger(isa, rng, M, N, K):
    # long rows (K/32 up to 256 blocks: tolerance scaled) and more rows than one chunk
    x = rng.standard_normal((M, K)).astype(np.float32)
    wq, wd = random_weights(rng, N, K)
    bias = rng.standard_normal(N).astype(np.float32)
    y = kernels.matmul_q8(x, wq, wd, bias)
    assert rel_err(y, kernels.matmul_q8_ref(x, wq, wd, bias)) < MATMUL_TOL * 4


def test_matmul_q8_vector_x_and_out(isa, rng):
    x = rng.standard_normal(64).astype(np.float32)
    wq, wd = random_weights(rng, 9, 64)
    out = kernels.aligned_empty(9)
    y = kernels.matmul_q8(x, wq, wd, out=out)
    assert y is out and y.shape == (9,)
    assert rel_err(y, kernels.matmul_q8_ref(x, wq, wd)) < MATMUL_TOL


def test_matmul_q8_bias_only_and_zero_x(isa, rng):
    wq, wd = random_weights(rng, 6, 64)
    bias = rng.standard_normal(6).astype(np.float32)
    y = kernels.matmul_q8(np.zeros((3, 64), np.float32), wq, wd, bias)
    np.testing.assert_array_equal(y, np.broadcast_to(bias, (3, 6)))


@pytest.mark.parametrize("M,N", [(0, 5), (3, 0), (0, 0)])
def test_matmul_q8_empty(isa, rng, M, N):
    x = rng.standard_normal((M, 64)).astype(np.float32)
    wq, wd = random_weights(rng, N, 64)
    assert kernels.matmul_q8(x, wq, wd).shape == (M, N)


def test_matmul_q8_extreme_weights(isa, rng):
    # every product at its largest: |x| quantizes to 127, w = -128 or 127
    x = np.where(rng.random((3, 256)) < 0.5, -1.0, 1.0).astype(np.float32)
    wq = np.where(rng.random((7, 256)) < 0.5, -128, 127).astype(np.int8)
    wd = np.full((7, 8), 0.5, np.float16)
    y = kernels.matmul_q8(x, wq, wd)
    assert rel_err(y, kernels.matmul_q8_ref(x, wq, wd)) < MATMUL_TOL


def test_matmul_q8_same_bits_any_thread_count(isa, rng):
    x = rng.standard_normal((6, 320)).astype(np.float32)
    wq, wd = random_weights(rng, 45, 320)
    before = kernels.threads()
    try:
        outs = []
        for t in (1, 2, 3):
            kernels.set_threads(t)
            outs.append(kernels.matmul_q8(x, wq, wd))
    finally:
        kernels.set_threads(before)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


def test_matmul_q8_scratch_bounded(isa, rng):
    M, K, N = 600, 1024, 8
    x = rng.standard_normal((M, K)).astype(np.float32)
    wq, wd = random_weights(rng, N, K)
    kernels.scratch_reset_peak()
    before = kernels.scratch_peak_bytes()
    kernels.matmul_q8(x, wq, wd)
    # one chunk of int8 rows (<= 256 KiB + a tile) and its scales, not M * K
    assert kernels.scratch_peak_bytes() - before < 400 * 1024 < M * K


def test_matmul_q8_quantization_error(isa, rng):
    # end to end vs float32 weights: both x and w lose ~ d/sqrt(12) per value with
    # d = max|block| / 127 (~0.6% of the std for Gaussian data), so a K=1024 dot
    # product is off by ~0.8% of its typical size; we bound the rms error by 2% and the
    # worst one by 5% of max |y|.
    M, K, N = 16, 1024, 64
    x = rng.standard_normal((M, K)).astype(np.float32)
    w = rng.standard_normal((N, K)).astype(np.float32)
    wq, wd = kernels.quantize_q8(w)
    y = kernels.matmul_q8(x, wq, wd)
    ref = x.astype(np.float64) @ w.astype(np.float64).T
    assert np.sqrt(np.mean((y - ref) ** 2) / np.mean(ref ** 2)) < 0.02
    assert rel_err(y, ref) < 0.05


@settings(max_examples=30, deadline=None)
@given(M=st.integers(1, 9), N=st.integers(1, 20), nb=st.integers(1, 10),
       use_bias=st.booleans(), scale=st.sampled_from([1e-3, 1.0, 1e3]),
       seed=st.integers(0, 2**31 - 1))
@example(M=1, N=1, nb=10, use_bias=False, scale=1.0, seed=571)  # blocks cancel to 3e-6
@example(M=1, N=1, nb=1, use_bias=True, scale=1.0, seed=313)  # bias cancels to 4e-5
def test_matmul_q8_property(M, N, nb, use_bias, scale, seed):
    r = np.random.default_rng(seed)
    K = 32 * nb
    x = (r.standard_normal((M, K)) * scale).astype(np.float32)
    wq, wd = random_weights(r, N, K)
    bias = r.standard_normal(N).astype(np.float32) if use_bias else None
    ref = kernels.matmul_q8_ref(x, wq, wd, bias)
    # Error relative to the same matmul on |x|, |w|, |bias| (|x| quantizes to exactly |xq|;
    # int16 so that |-128| fits), the sum of |terms| that bounds the float32 rounding: with
    # one output the terms can cancel to 1e-6 of their size, and the error relative to that
    # result measures the cancellation, not the kernel (see the module docstring).
    scale = kernels.matmul_q8_ref(np.abs(x), np.abs(wq.astype(np.int16)), wd,
                                  None if bias is None else np.abs(bias))
    before = kernels.isa()
    try:
        for name in kernels.supported_isas():
            kernels.set_isa(name)
            assert rel_err(kernels.matmul_q8(x, wq, wd, bias), ref, scale) < MATMUL_TOL, name
    finally:
        kernels.set_isa(before)


# ---- argument errors ------------------------------------------------------------------
def test_q8_bad_arguments(rng):
    x = rng.standard_normal((2, 64)).astype(np.float32)
    wq, wd = random_weights(rng, 3, 64)
    with pytest.raises(ValueError, match="multiple of 32"):
        kernels.matmul_q8(rng.standard_normal((2, 48)).astype(np.float32),
                          np.zeros((3, 48), np.int8), np.zeros((3, 1), np.float16))
    with pytest.raises(ValueError, match="wq"):
        kernels.matmul_q8(x, wq.astype(np.float32), wd)
    with pytest.raises(ValueError, match="wd"):
        kernels.matmul_q8(x, wq, wd.astype(np.float32))
    with pytest.raises(ValueError, match="wd"):
        kernels.matmul_q8(x, wq, np.zeros((3, 3), np.float16))
    with pytest.raises(ValueError, match="x"):
        kernels.matmul_q8(x.astype(np.float64), wq, wd)
    with pytest.raises(ValueError, match="columns"):
        kernels.matmul_q8(x[:, :32].copy(), wq, wd)
    with pytest.raises(ValueError, match="bias"):
        kernels.matmul_q8(x, wq, wd, np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="multiple of 32"):
        kernels.quantize_q8(np.zeros((2, 40), np.float32))
    with pytest.raises(ValueError, match="x"):
        kernels.quantize_q8(np.zeros(64, np.float64))
    with pytest.raises(ValueError, match="blocks"):
        kernels.dequantize_q8(np.zeros(64, np.int8), np.zeros(3, np.float16))
    with pytest.raises(ValueError, match="d"):
        kernels.dequantize_q8(np.zeros(64, np.int8), np.zeros(2, np.float32))
