"""Tests of the convolution kernels (patch_embed, dwconv3x3) on every ISA path, against
the numpy references evaluated in float64.

Tolerances, as rel_err (max |got - ref| / max |ref|):
  patch_embed  1e-5: each output is a float32 sum of K = 16 Cin products (K <= 80 here)
               plus the bias, error at most ~K ulp of the sum of |terms| (about 3e-7 in
               practice), and SiLU adds a few ulp (vector exp within ~2 ulp).
  dwconv3x3    2e-6: at most 9 products and the bias per output, then optionally SiLU.
Both bounds are of the sum of |terms|.  The hypothesis tests draw single outputs (one
patch, Cout = 1; a 1 x 1 image, whose output is one product plus the bias) whose terms
cancel to 1e-4 of their size, so they scale rel_err by the same computation on |x|, |w|,
|bias| instead of |ref| (which would measure the cancellation): that bounds the rounding
(SiLU's slope is at most 1.1 and silu(s) >= s / 2 for s >= 0).
"""
import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

from cromwell_lsp import kernels
from tests.conftest import rel_err

PE_TOL = 1e-5
DW_TOL = 2e-6


def each_isa():
    """Every supported ISA name in turn, with that path forced (for the hypothesis tests);
    restores the ISA afterwards."""
    before = kernels.isa()
    try:
        for name in kernels.supported_isas():
            kernels.set_isa(name)
            yield name
    finally:
        kernels.set_isa(before)


def f32(r, *shape):
    return r.standard_normal(shape).astype(np.float32)


def f64(a):
    return None if a is None else a.astype(np.float64)


def f64abs(a):
    return None if a is None else np.abs(a.astype(np.float64))


def check_patch(r, H, W, Cin, Cout, use_bias, act, abs_scaled=False):
    x, w = f32(r, H, W, Cin), f32(r, Cout, 4, 4, Cin)
    bias = f32(r, Cout) if use_bias else None
    ref = kernels.patch_embed_ref(f64(x), f64(w), f64(bias), act)
    got = kernels.patch_embed(x, w, bias, act)
    assert got.shape == (H // 4, W // 4, Cout)
    scale = (kernels.patch_embed_ref(f64abs(x), f64abs(w), f64abs(bias), act)
             if abs_scaled else None)
    assert rel_err(got, ref, scale) < PE_TOL  # abs_scaled: see the module docstring


def check_dw(r, H, W, C, stride, use_bias, act, abs_scaled=False):
    x, w = f32(r, H, W, C), f32(r, 3, 3, C)
    bias = f32(r, C) if use_bias else None
    ref = kernels.dwconv3x3_ref(f64(x), f64(w), f64(bias), stride, act)
    got = kernels.dwconv3x3(x, w, bias, stride, act)
    assert got.shape == ((H - 1) // stride + 1, (W - 1) // stride + 1, C)
    scale = (kernels.dwconv3x3_ref(f64abs(x), f64abs(w), f64abs(bias), stride, act)
             if abs_scaled else None)
    assert rel_err(got, ref, scale) < DW_TOL  # abs_scaled: see the module docstring


# ---- patch_embed -------------------------------------------------------------------
@pytest.mark.parametrize("Cin", [1, 3, 5])
@pytest.mark.parametrize("Cout", [1, 5, 17, 40, 192])
@pytest.mark.parametrize("use_bias,act", [(True, None), (False, "silu"), (True, "silu")])
def test_patch_embed(isa, rng, Cin, Cout, use_bias, act):
    check_patch(rng, 12, 20, Cin, Cout, use_bias, act)  # 5 output columns: tile + tail


def test_patch_embed_threaded(isa, rng):
    check_patch(rng, 64, 48, 3, 96, True, "silu")  # 16 x 12 x 96 x 48 work: two threads


def test_patch_embed_edges(isa, rng):
    check_patch(rng, 4, 4, 3, 7, True, None)  # one output pixel
    assert kernels.patch_embed(np.zeros((0, 8, 3), np.float32),
                               np.zeros((6, 4, 4, 3), np.float32)).shape == (0, 2, 6)


# ---- dwconv3x3 ---------------------------------------------------------------------
@pytest.mark.parametrize("H,W", [(1, 1), (1, 6), (5, 1), (7, 9), (8, 8)])
@pytest.mark.parametrize("C", [1, 7, 17, 33, 100])
@pytest.mark.parametrize("stride", [1, 2])
def test_dwconv3x3(isa, rng, H, W, C, stride):
    check_dw(rng, H, W, C, stride, True, None)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("use_bias,act", [(False, None), (False, "silu"), (True, "silu")])
def test_dwconv3x3_bias_act_threaded(isa, rng, stride, use_bias, act):
    check_dw(rng, 15, 13, 96, stride, use_bias, act)  # 15 x 13 x 96 x 9 work: two threads


def test_dwconv3x3_empty(isa):
    assert kernels.dwconv3x3(np.zeros((0, 4, 3), np.float32),
                             np.zeros((3, 3, 3), np.float32)).shape == (0, 0, 3)


# ---- hypothesis ---------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(hb=st.integers(1, 4), wb=st.integers(1, 6), Cin=st.integers(1, 5), Cout=st.integers(1, 70),
       use_bias=st.booleans(), act=st.sampled_from([None, "silu"]), seed=st.integers(0, 2**31 - 1))
@example(hb=1, wb=1, Cin=5, Cout=1, use_bias=True, act="silu", seed=1245)  # cancels to 1e-4
def test_patch_embed_property(hb, wb, Cin, Cout, use_bias, act, seed):
    for _ in each_isa():
        check_patch(np.random.default_rng(seed), 4 * hb, 4 * wb, Cin, Cout, use_bias, act,
                    abs_scaled=True)


@settings(max_examples=30, deadline=None)
@given(H=st.integers(1, 12), W=st.integers(1, 12), C=st.integers(1, 80), stride=st.sampled_from([1, 2]),
       use_bias=st.booleans(), act=st.sampled_from([None, "silu"]), seed=st.integers(0, 2**31 - 1))
@example(H=1, W=1, C=1, stride=1, use_bias=True, act=None, seed=2386)  # x w + b cancels to 1e-4
def test_dwconv3x3_property(H, W, C, stride, use_bias, act, seed):
    for _ in each_isa():
        check_dw(np.random.default_rng(seed), H, W, C, stride, use_bias, act, abs_scaled=True)


# ---- argument checks ----------------------------------------------------------------
def test_bad_arguments():
    x = np.zeros((8, 8, 3), np.float32)
    with pytest.raises(ValueError, match="multiples of 4"):
        kernels.patch_embed(np.zeros((6, 8, 3), np.float32), np.zeros((4, 4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="w"):
        kernels.patch_embed(x, np.zeros((4, 4, 4, 2), np.float32))
    with pytest.raises(ValueError, match="bias"):
        kernels.patch_embed(x, np.zeros((4, 4, 4, 3), np.float32), np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="dtype"):
        kernels.patch_embed(x.astype(np.float64), np.zeros((4, 4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="act"):
        kernels.patch_embed(x, np.zeros((4, 4, 4, 3), np.float32), act="relu")
    with pytest.raises(ValueError, match="stride"):
        kernels.dwconv3x3(x, np.zeros((3, 3, 3), np.float32), stride=3)
    with pytest.raises(ValueError, match="w"):
        kernels.dwconv3x3(x, np.zeros((3, 3, 4), np.float32))
    with pytest.raises(ValueError, match="bias"):
        kernels.dwconv3x3(x, np.zeros((3, 3, 3), np.float32), np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="dimensions"):
        kernels.dwconv3x3(np.zeros((8, 8), np.float32), np.zeros((3, 3, 3), np.float32))
    with pytest.raises(ValueError, match="out"):
        kernels.dwconv3x3(x, np.zeros((3, 3, 3), np.float32), out=np.zeros((8, 8, 4), np.float32))
