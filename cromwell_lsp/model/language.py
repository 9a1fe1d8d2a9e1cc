"""The causal language encoder: token embedding -> pre-norm blocks (RoPE, grouped-query
attention, SwiGLU; Llama's layout) -> final RMSNorm.  For arch "llama" it is the whole
trunk, followed only by the LM head.

Dimension letters: T new tokens, d model width, V vocabulary.
"""
from __future__ import annotations

import numpy as np

from .. import kernels
from .layers import Block, RMSNorm, run_stack


class LanguageEncoder:
    def __init__(self, t: dict, cfg):
        self.embedding = t["lang.tok_embeddings.weight"]  # (V, d)
        self.blocks = [Block(t, f"lang.layers.{i}", cfg.n_heads, cfg.n_kv_heads, cfg.rope_theta,
                             cfg.norm_eps) for i in range(cfg.n_layers)]
        self.norm = RMSNorm(t, "lang.norm.weight", cfg.norm_eps)

    def embed(self, tokens: np.ndarray) -> np.ndarray:
        V = self.embedding.shape[0]
        if tokens.size and (tokens.min() < 0 or tokens.max() >= V):
            raise ValueError(f"token ids must be in [0, {V}), got {tokens.min()}..{tokens.max()}")
        x = kernels.aligned_empty((tokens.size, self.embedding.shape[1]))
        np.take(self.embedding, tokens, axis=0, out=x)
        return x  # (T, d)

    def __call__(self, tokens: np.ndarray, stack) -> np.ndarray:
        """tokens [T] at positions stack.length... -> hidden states [T, d] (normed)."""
        return self.norm(run_stack(self.blocks, self.embed(tokens), stack))
