"""Per-sequence caches: the key/value history of every causal stack, the joint-space states
(so the JEPA head can run lazily), and the image a sequence is attached to.

Layout (llama2.c's key_cache / value_cache, one aligned block per stack):
    kv[L, 2, Hkv, Tcap, D]  float32, 64-byte aligned; kv[l, 0] is layer l's keys.
A stack grows by doubling Tcap when full (one copy), so appending is amortised O(1) and the
arrays are allocated once per session in the common case.  `layer(l, T)` returns the views
[T, Hkv, D] that kernels.attention reads directly (strided, no copy).

Protocol for one forward call of T new tokens at position p = stack.length:
    stack.reserve(T); per layer: k, v = stack.append(l, k_new, v_new); ...; stack.commit(T)
Dimension letters: L layers, T tokens, H heads, D head size, J joint size, N vision tokens.
"""
from __future__ import annotations

import numpy as np

from .. import kernels
from .config import ModelConfig


class KVStack:
    """Keys and values of the causal layers of one stack (language, JEPA or AR)."""

    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int, capacity: int = 64):
        self.shape = (n_layers, 2, n_kv_heads, max(1, capacity), head_dim)
        self.kv = kernels.aligned_zeros(self.shape)  # (L, 2, Hkv, Tcap, D)
        self.length = 0

    @property
    def capacity(self) -> int:
        return self.kv.shape[3]

    def reserve(self, n_new: int) -> None:
        """Make room for n_new more tokens, doubling the capacity as needed."""
        need = self.length + n_new
        if need <= self.capacity:
            return
        cap = self.capacity
        while cap < need:
            cap *= 2
        grown = kernels.aligned_zeros(self.shape[:3] + (cap, self.shape[4]))
        grown[:, :, :, :self.length] = self.kv[:, :, :, :self.length]
        self.kv, self.shape = grown, grown.shape

    def append(self, layer: int, k: np.ndarray, v: np.ndarray):
        """Store k, v [T, Hkv, D] after the committed tokens; return the layer's keys and
        values for all tokens so far, as [length + T, Hkv, D] views."""
        T = k.shape[0]
        if self.length + T > self.capacity:
            raise ValueError("KVStack.append past capacity; call reserve(T) first")
        p = self.length
        self.kv[layer, 0, :, p:p + T] = k.transpose(1, 0, 2)
        self.kv[layer, 1, :, p:p + T] = v.transpose(1, 0, 2)
        return self.layer(layer, p + T)

    def layer(self, layer: int, T: int):
        kv = self.kv[layer, :, :, :T]  # (2, Hkv, T, D)
        return kv[0].transpose(1, 0, 2), kv[1].transpose(1, 0, 2)  # (T, Hkv, D) each

    def commit(self, n: int) -> None:
        self.length += n

    def truncate(self, n: int) -> None:
        self.length = min(self.length, max(0, n))

    @property
    def nbytes(self) -> int:
        return self.kv.nbytes


class RowBuffer:
    """A growable [Tcap, C] float32 history of per-token vectors (the joint states z)."""

    def __init__(self, width: int, capacity: int = 64):
        self.rows = kernels.aligned_zeros((max(1, capacity), width))
        self.length = 0

    def append(self, x: np.ndarray) -> None:
        T = x.shape[0]
        if self.length + T > self.rows.shape[0]:
            cap = self.rows.shape[0]
            while cap < self.length + T:
                cap *= 2
            grown = kernels.aligned_zeros((cap, self.rows.shape[1]))
            grown[:self.length] = self.rows[:self.length]
            self.rows = grown
        self.rows[self.length:self.length + T] = x
        self.length += T

    def truncate(self, n: int) -> None:
        self.length = min(self.length, max(0, n))

    @property
    def nbytes(self) -> int:
        return self.rows.nbytes


class ImageAttachment:
    """The image a sequence reads: its encoder output (shared, cached per image), the span
    [p0, p1) of prompt tokens the image->text attention read, and the text->image keys and
    values of every fusion block, computed once from the fused vision states at prefill."""

    def __init__(self, vision_state, p0: int, p1: int, kv: list):
        self.vision_state, self.p0, self.p1 = vision_state, p0, p1
        self.kv = kv  # per fusion block: (k, v) each [N, Hkv, D]

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes + v.nbytes for k, v in self.kv)


class KVCache:
    """Everything one sequence keeps between forward calls."""

    def __init__(self, cfg: ModelConfig, capacity: int = 64):
        self.cfg = cfg
        self.lang = KVStack(cfg.n_layers, cfg.n_kv_heads, cfg.head_dim, capacity)
        self.ar = self.jepa = self.z = None
        if cfg.arch == "vljepa":
            self.ar = KVStack(cfg.ar_layers, cfg.ar_kv_heads, cfg.ar_head_dim, capacity)
            self.jepa = KVStack(cfg.jepa_layers, cfg.jepa_heads, cfg.jepa_head_dim, capacity)
            self.z = RowBuffer(cfg.joint_dim, capacity)
        self.image: ImageAttachment | None = None

    @property
    def length(self) -> int:
        """Tokens whose states are cached (the position of the next token)."""
        return self.lang.length

    def __len__(self) -> int:
        return self.length

    def truncate(self, n: int) -> int:
        """Keep the first n tokens (prefix reuse); returns the tokens actually kept.

        When the cut falls inside the prompt span an attached image read (p0 < n < p1),
        the kept tokens saw vision states that depended on the dropped ones, so the cache
        is cut back to p0 and the image detached: re-prefill from the returned length with
        the image again (its encoder output is cached, only fusion reruns)."""
        n = max(0, min(n, self.length))
        if self.image is not None and n < self.image.p1:
            n = min(n, self.image.p0)
            self.image = None
        for part in (self.lang, self.ar, self.jepa, self.z):
            if part is not None:
                part.truncate(n)
        return n

    def clear(self) -> None:
        self.truncate(0)

    @property
    def nbytes(self) -> int:
        parts = [self.lang, self.ar, self.jepa, self.z, self.image]
        return sum(p.nbytes for p in parts if p is not None)
