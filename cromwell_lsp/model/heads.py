"""The heads on the joint space z [T, J]:

JEPA head (after I-JEPA / V-JEPA, predicting embeddings instead of tokens): a causal
context encoder (pre-norm blocks with RoPE, multi-head) over z, a final RMSNorm giving the
context c, and one SwiGLU predictor per step k = 1..n_future with p_k = c + mlp_k(norm(c)),
trained to match z[t + k] (MSE, step weights).  The engine runs it lazily: the z history is
cached, and the context encoder catches up only when predictions are asked for.

AR head: in_proj J -> d, causal blocks with grouped-query attention and their own KV
cache, final RMSNorm, LM head d -> V.

Dimension letters: T new tokens, J joint width, d model width, V vocabulary.
"""
from __future__ import annotations

import numpy as np

from .. import kernels
from .layers import MLP, Block, Linear, RMSNorm, run_stack


class JEPAHead:
    def __init__(self, t: dict, cfg):
        self.blocks = [Block(t, f"jepa.layers.{i}", cfg.jepa_heads, cfg.jepa_heads, cfg.rope_theta,
                             cfg.norm_eps) for i in range(cfg.jepa_layers)]
        self.norm = RMSNorm(t, "jepa.norm.weight", cfg.norm_eps)
        self.pred_norms = [RMSNorm(t, f"jepa.pred.{k}.norm.weight", cfg.norm_eps)
                           for k in range(cfg.n_future)]
        self.preds = [MLP(t, f"jepa.pred.{k}") for k in range(cfg.n_future)]

    def __call__(self, cache, n_last: int) -> np.ndarray:
        """Bring the context encoder up to date with cache.z; return the predictions for
        the last n_last tokens, [n_future, n_last, J]."""
        start, end = cache.jepa.length, cache.z.length
        if end - start < n_last:
            raise ValueError("JEPA cache is ahead of the joint states; was the cache truncated "
                             "between calls of one forward?")
        c = np.ascontiguousarray(cache.z.rows[start:end])  # (T', J)
        c = self.norm(run_stack(self.blocks, c, cache.jepa))[end - start - n_last:]
        c = np.ascontiguousarray(c)  # (n_last, J)
        out = np.empty((len(self.preds), n_last, c.shape[1]), dtype=np.float32)
        for k, (norm, mlp) in enumerate(zip(self.pred_norms, self.preds)):
            out[k] = kernels.add(c, mlp(norm(c)))
        return out


class ARHead:
    def __init__(self, t: dict, cfg):
        self.in_proj = Linear(t, "ar.in_proj.weight")
        self.blocks = [Block(t, f"ar.layers.{i}", cfg.ar_heads, cfg.ar_kv_heads, cfg.rope_theta,
                             cfg.norm_eps) for i in range(cfg.ar_layers)]
        self.norm = RMSNorm(t, "ar.norm.weight", cfg.norm_eps)

    def __call__(self, z: np.ndarray, stack) -> np.ndarray:
        """z [T, J] -> normed hidden states [T, d] (the LM head is applied by the caller)."""
        return self.norm(run_stack(self.blocks, self.in_proj(z), stack))
