"""The vision encoder: a resolution-agnostic image -> grid of vision tokens.

image [H, W, C] (NHWC, one image, padded to multiples of 4) -> 4x4 patch embedding ->
MBConv blocks (EfficientNet's inverted residual, with RMSNorm instead of batch norm:
x + project(dwconv3x3(silu(expand(norm(x))))) ) -> linear projection to the vision width ->
+ 2D positional embeddings (stored for the base grid, bilinearly resized to any other grid,
like ViTDet / SAM do for windowed ViTs) -> ViT blocks with windowed attention (Swin-style
non-shifted windows) and SwiGLU -> RMSNorm.  Nothing here is causal or tied to 256x256,
so a screenshot is read near its native resolution.

Dimension letters: Gh, Gw grid rows/columns (H/4, W/4), N = Gh*Gw tokens, P patch width,
E expanded width, dv vision width, nh heads, D head size, G base grid side.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import kernels
from .layers import MLP, Linear, RMSNorm


@dataclass
class VisionState:
    """One encoded image: vision tokens [N, dv] on a Gh x Gw grid.  Cache it per image."""
    tokens: np.ndarray
    grid: tuple[int, int]

    @property
    def nbytes(self) -> int:
        return self.tokens.nbytes


def preprocess(image) -> np.ndarray:
    """An image array -> float32 [H, W, C] in [-1, 1] (uint8 input) or as given (float),
    padded with zeros on the bottom and right to multiples of 4."""
    x = np.asarray(image)
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3:
        raise ValueError(f"image must be [H, W, C], got shape {x.shape}")
    if x.dtype == np.uint8:
        x = x.astype(np.float32) * np.float32(1 / 127.5) - np.float32(1)
    x = np.asarray(x, dtype=np.float32)
    H, W, C = x.shape
    if H < 1 or W < 1:
        raise ValueError(f"image is empty ({H}x{W})")
    out = kernels.aligned_zeros((-(-H // 4) * 4, -(-W // 4) * 4, C))
    out[:H, :W] = x
    return out


def interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """R [n_out, n_in]: 1D linear resampling with half-pixel centres (what
    torch.nn.functional.interpolate(mode='bilinear', align_corners=False) does per axis)."""
    src = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = src - i0
    R = np.zeros((n_out, n_in))
    np.add.at(R, (np.arange(n_out), i0), 1.0 - frac)
    np.add.at(R, (np.arange(n_out), i1), frac)
    return R


def resize_pos_embed(pos: np.ndarray, gh: int, gw: int) -> np.ndarray:
    """pos [G, G, dv] -> [gh, gw, dv] by bilinear interpolation (identity on the base grid)."""
    if pos.shape[:2] == (gh, gw):
        return pos
    ry, rx = interp_matrix(gh, pos.shape[0]), interp_matrix(gw, pos.shape[1])
    out = np.einsum("yi,ijc,xj->yxc", ry, pos.astype(np.float64), rx)
    return np.ascontiguousarray(out, dtype=np.float32)


class MBConv:
    def __init__(self, t, prefix, eps):
        self.norm = RMSNorm(t, f"{prefix}.norm.weight", eps)
        self.expand, self.project = Linear(t, f"{prefix}.expand.weight"), Linear(t, f"{prefix}.project.weight")
        self.dw_w, self.dw_b = t[f"{prefix}.dw.weight"], t[f"{prefix}.dw.bias"]

    def __call__(self, x: np.ndarray, gh: int, gw: int) -> np.ndarray:
        e = kernels.silu_(self.expand(self.norm(x)))  # (N, E)
        e = kernels.dwconv3x3(e.reshape(gh, gw, -1), self.dw_w, self.dw_b, act="silu")
        return kernels.add(x, self.project(e.reshape(gh * gw, -1)), out=x)  # (N, P)


class WindowBlock:
    """ViT block: windowed multi-head self-attention + SwiGLU, both pre-norm."""

    def __init__(self, t, prefix, heads, window, eps):
        self.attn_norm = RMSNorm(t, f"{prefix}.attn_norm.weight", eps)
        self.wq, self.wk = Linear(t, f"{prefix}.attn.wq.weight"), Linear(t, f"{prefix}.attn.wk.weight")
        self.wv, self.wo = Linear(t, f"{prefix}.attn.wv.weight"), Linear(t, f"{prefix}.attn.wo.weight")
        self.ffn_norm = RMSNorm(t, f"{prefix}.ffn_norm.weight", eps)
        self.ffn = MLP(t, f"{prefix}.ffn")
        self.heads, self.window = heads, window

    def __call__(self, x: np.ndarray, gh: int, gw: int) -> np.ndarray:
        N, dv = x.shape
        h = self.attn_norm(x)
        shape = (gh, gw, self.heads, dv // self.heads)
        q, k, v = (w(h).reshape(shape) for w in (self.wq, self.wk, self.wv))
        o = kernels.window_attention(q, k, v, self.window)  # (Gh, Gw, nh, D)
        x = kernels.add(x, self.wo(o.reshape(N, dv)), out=x)
        return kernels.add(x, self.ffn(self.ffn_norm(x)), out=x)


class VisionEncoder:
    def __init__(self, t: dict, cfg):
        eps = cfg.norm_eps
        self.patch_w, self.patch_b = t["vision.patch_embed.weight"], t["vision.patch_embed.bias"]
        self.mbconv = [MBConv(t, f"vision.mbconv.{i}", eps) for i in range(cfg.mbconv_blocks)]
        self.proj = Linear(t, "vision.proj.weight")
        self.pos = t["vision.pos_embed"]  # (G, G, dv)
        self.blocks = [WindowBlock(t, f"vision.blocks.{i}", cfg.vision_heads, cfg.window_size, eps)
                       for i in range(cfg.vision_layers)]
        self.norm = RMSNorm(t, "vision.norm.weight", eps)
        self.read_w, self.read_b = t["vision.read.weight"], t["vision.read.bias"]  # (96, dv), (96,)
        self._pos_cache: dict[tuple[int, int], np.ndarray] = {}

    def pos_embed(self, gh: int, gw: int) -> np.ndarray:
        if (gh, gw) not in self._pos_cache:
            self._pos_cache[(gh, gw)] = resize_pos_embed(self.pos, gh, gw).reshape(gh * gw, -1)
        return self._pos_cache[(gh, gw)]

    def __call__(self, image) -> VisionState:
        x = preprocess(image)  # (H, W, C)
        gh, gw = x.shape[0] // 4, x.shape[1] // 4
        x = kernels.patch_embed(x, self.patch_w, self.patch_b).reshape(gh * gw, -1)  # (N, P)
        for block in self.mbconv:
            x = block(x, gh, gw)
        x = self.proj(x)  # (N, dv)
        kernels.add(x, self.pos_embed(gh, gw), out=x)
        for block in self.blocks:
            x = block(x, gh, gw)
        return VisionState(self.norm(x), (gh, gw))

    def read(self, state: VisionState) -> np.ndarray:
        """The reading head's scores for the character under each patch [Gh, Gw, 96]
        (model/reading.py)."""
        logits = state.tokens @ self.read_w.T + self.read_b  # (N, 96)
        return logits.reshape(*state.grid, -1)
