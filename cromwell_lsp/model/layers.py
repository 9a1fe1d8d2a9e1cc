"""The engine's building blocks over kernels.py (numpy arrays in, numpy arrays out): linear
layers in fp32 or int8, RMSNorm, the SwiGLU MLP, causal self-attention with RoPE and
grouped-query heads over a KV cache, cross-attention, and the pre-norm block
(nanoGPT's `x = x + attn(norm(x)); x = x + mlp(norm(x))`).

Each layer is built from the weights dict and a name prefix; the names are the ones in
weights.fp32_tensors.  Dimension letters: T tokens, N keys (vision tokens or prompt
tokens), d model width, H query heads, Hkv key/value heads, D head size, F MLP width.
"""
from __future__ import annotations

import numpy as np

from .. import kernels


class Linear:
    """y[T, N] = x[T, K] @ W[N, K]^T, W float32 or int8 blocks (`name.q`, `name.d`)."""

    def __init__(self, tensors: dict, name: str):
        self.w = tensors.get(name)
        self.q = tensors.get(name + ".q")
        self.d = tensors.get(name + ".d")
        if self.w is None and self.q is None:
            raise KeyError(f"no tensor {name} (or {name}.q / {name}.d) in the weights")
        self.bound = kernels.BoundLinear(self.w, self.q, self.d)  # weights checked once

    @property
    def shape(self) -> tuple[int, int]:
        return (self.w if self.w is not None else self.q).shape

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.bound(x)


class RMSNorm:
    def __init__(self, tensors: dict, name: str, eps: float):
        self.w, self.eps = tensors[name], eps

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return kernels.rmsnorm(x, self.w, self.eps)


class MLP:
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, tensors: dict, prefix: str):
        self.w1, self.w3 = Linear(tensors, f"{prefix}.w1.weight"), Linear(tensors, f"{prefix}.w3.weight")
        self.w2 = Linear(tensors, f"{prefix}.w2.weight")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        a = self.w1(x)  # (T, F)
        kernels.swiglu(a, self.w3(x), out=a)
        return self.w2(a)  # (T, d)


class _Projections:
    def __init__(self, tensors: dict, prefix: str, heads: int, kv_heads: int):
        self.wq, self.wk = Linear(tensors, f"{prefix}.wq.weight"), Linear(tensors, f"{prefix}.wk.weight")
        self.wv, self.wo = Linear(tensors, f"{prefix}.wv.weight"), Linear(tensors, f"{prefix}.wo.weight")
        self.heads, self.kv_heads = heads, kv_heads
        self.head_dim = self.wq.shape[0] // heads


class SelfAttention(_Projections):
    """Causal self-attention with RoPE (adjacent pairs) and GQA; appends to a KVStack."""

    def __init__(self, tensors, prefix, heads, kv_heads, rope_theta):
        super().__init__(tensors, prefix, heads, kv_heads)
        self.theta = rope_theta

    def __call__(self, x: np.ndarray, stack, layer: int) -> np.ndarray:
        T, H, Hkv, D = x.shape[0], self.heads, self.kv_heads, self.head_dim
        pos0 = stack.length
        q = self.wq(x).reshape(T, H, D)
        k = self.wk(x).reshape(T, Hkv, D)
        v = self.wv(x).reshape(T, Hkv, D)
        kernels.rope_(q, pos0, self.theta)
        kernels.rope_(k, pos0, self.theta)
        keys, values = stack.append(layer, k, v)  # (pos0 + T, Hkv, D) views
        o = kernels.attention(q, keys, values, causal_offset=pos0)  # (T, H, D)
        return self.wo(o.reshape(T, H * D))


class CrossAttention(_Projections):
    """Queries from one stream attend to every key of another (no mask, no RoPE)."""

    def keys_values(self, src: np.ndarray):
        """src [N, d_kv] -> k, v [N, Hkv, D]."""
        N = src.shape[0]
        return (self.wk(src).reshape(N, self.kv_heads, self.head_dim),
                self.wv(src).reshape(N, self.kv_heads, self.head_dim))

    def __call__(self, x: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        T = x.shape[0]
        q = self.wq(x).reshape(T, self.heads, self.head_dim)
        o = kernels.attention(q, k, v)  # (T, H, D)
        return self.wo(o.reshape(T, self.heads * self.head_dim))


class Block:
    """Pre-norm causal transformer block over a KVStack layer."""

    def __init__(self, tensors, prefix, heads, kv_heads, rope_theta, eps):
        self.attn_norm = RMSNorm(tensors, f"{prefix}.attn_norm.weight", eps)
        self.attn = SelfAttention(tensors, f"{prefix}.attn", heads, kv_heads, rope_theta)
        self.ffn_norm = RMSNorm(tensors, f"{prefix}.ffn_norm.weight", eps)
        self.ffn = MLP(tensors, f"{prefix}.ffn")

    def __call__(self, x: np.ndarray, stack, layer: int) -> np.ndarray:
        x = kernels.add(x, self.attn(self.attn_norm(x), stack, layer))
        return kernels.add(x, self.ffn(self.ffn_norm(x)), out=x)


def run_stack(blocks, x: np.ndarray, stack) -> np.ndarray:
    """Run causal blocks over T new tokens, appending to `stack`, then commit them."""
    stack.reserve(x.shape[0])
    for layer, block in enumerate(blocks):
        x = block(x, stack, layer)
    stack.commit(x.shape[0])
    return x
