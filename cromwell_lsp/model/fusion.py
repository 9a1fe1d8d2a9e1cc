"""Fusion blocks: cross-attention between the text stream and the vision tokens.

Each block (pre-norm, residual):
    v = v + i2t(norm(v), norm(h_prompt))   image reads the prompt tokens; prefill only
    h = h + t2i(norm(h), kv(norm(v)))      text reads the image; prefill and decode
    h = h + ffn(norm(h))                   SwiGLU; always (also without an image)
The image->text step reads only the prompt span [p0, p1) (the tokens of the forward call
that attached the image) and runs once; the text->image keys/values of every block are
then fixed and cached (kvcache.ImageAttachment), so decoding is exact with a cache.  Tokens
before p0 (processed before the image was attached) do not see the image.

Dimension letters: T text tokens, N vision tokens, d text width, dv vision width.
"""
from __future__ import annotations

import numpy as np

from .. import kernels
from .kvcache import ImageAttachment
from .layers import MLP, CrossAttention, RMSNorm


class FusionBlock:
    def __init__(self, t: dict, i: int, cfg):
        p, eps = f"fusion.{i}", cfg.norm_eps
        self.i2t_norm = RMSNorm(t, f"{p}.i2t_norm.weight", eps)
        self.i2t_text_norm = RMSNorm(t, f"{p}.i2t_text_norm.weight", eps)
        self.i2t = CrossAttention(t, f"{p}.i2t", cfg.vision_heads, cfg.vision_heads)
        self.t2i_norm = RMSNorm(t, f"{p}.t2i_norm.weight", eps)
        self.t2i_vision_norm = RMSNorm(t, f"{p}.t2i_vision_norm.weight", eps)
        self.t2i = CrossAttention(t, f"{p}.t2i", cfg.n_heads, cfg.n_kv_heads)
        self.ffn_norm = RMSNorm(t, f"{p}.ffn_norm.weight", eps)
        self.ffn = MLP(t, f"{p}.ffn")

    def image_reads_text(self, v: np.ndarray, h: np.ndarray) -> np.ndarray:
        """v [N, dv], prompt states h [T, d] -> updated v [N, dv] (new array)."""
        k, val = self.i2t.keys_values(self.i2t_text_norm(h))  # (T, Hv, Dv)
        return kernels.add(v, self.i2t(self.i2t_norm(v), k, val))

    def image_keys_values(self, v: np.ndarray):
        return self.t2i.keys_values(self.t2i_vision_norm(v))  # (N, Hkv, D) each

    def __call__(self, h: np.ndarray, kv) -> np.ndarray:
        if kv is not None:
            h = kernels.add(h, self.t2i(self.t2i_norm(h), *kv))
        return kernels.add(h, self.ffn(self.ffn_norm(h)), out=h)


class Fusion:
    def __init__(self, t: dict, cfg):
        self.blocks = [FusionBlock(t, i, cfg) for i in range(cfg.fusion_layers)]
        self.norm = RMSNorm(t, "fusion.norm.weight", cfg.norm_eps) if self.blocks else None

    def attach(self, h: np.ndarray, vision_state, p0: int) -> tuple[np.ndarray, ImageAttachment]:
        """Prefill with a new image: the T prompt tokens h [T, d] at p0.. and the image fuse
        both ways; returns the text states and the attachment to cache."""
        v, kvs = vision_state.tokens, []
        for block in self.blocks:
            v = block.image_reads_text(v, h)
            kvs.append(block.image_keys_values(v))
            h = block(h, kvs[-1])
        return self._norm(h), ImageAttachment(vision_state, p0, p0 + h.shape[0], kvs)

    def __call__(self, h: np.ndarray, image: ImageAttachment | None) -> np.ndarray:
        for i, block in enumerate(self.blocks):
            h = block(h, image.kv[i] if image is not None else None)
        return self._norm(h)

    def _norm(self, h):
        return self.norm(h) if self.norm is not None else h
