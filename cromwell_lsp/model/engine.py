"""The inference engine: a loaded weights file wired into the model's forward pass.

forward(tokens, cache) processes only the new tokens (a prefill of many or a decode step of
one), appends their states to the cache, and returns their logits; sampling, stopping and
prompt building live elsewhere (llama2.c's `forward(token, pos)` contract, batched over the
new tokens).  Stages (arch "vljepa"):

    tokens -> language encoder (causal, KV cache)
           -> fusion (text<->image cross-attention; image->text only when attaching)
           -> z = joint.text(h)                          joint space, cached history
           -> AR head (causal, KV cache) -> LM head      logits
           -> JEPA head on request (lazy, catches up on cached z)
arch "llama": tokens -> language encoder -> LM head.

Dimension letters: T new tokens, d model width, J joint width, V vocabulary.
"""
from __future__ import annotations

import numpy as np

from .config import ModelConfig
from .fusion import Fusion
from .heads import ARHead, JEPAHead
from .kvcache import KVCache
from .language import LanguageEncoder
from .layers import Linear
from .vision import VisionEncoder, VisionState


class Engine:
    """The model's parts built from a weights dict (names: weights.fp32_tensors, each linear
    weight float32 or an int8 `.q`/`.d` pair); holds no per-sequence state (see KVCache)."""

    def __init__(self, cfg: ModelConfig, tensors: dict):
        self.cfg = cfg
        self.lang = LanguageEncoder(tensors, cfg)
        self.output = Linear(tensors, "output.weight")  # (V, d)
        self.vision = self.fusion = self.jepa = self.ar = None
        if cfg.arch == "vljepa":
            self.vision = VisionEncoder(tensors, cfg)
            self.fusion = Fusion(tensors, cfg)
            self.joint_text = Linear(tensors, "joint.text.weight")  # (J, d)
            self.joint_vision = Linear(tensors, "joint.vision.weight")  # (J, dv)
            self.joint_center = np.asarray(tensors["joint.center"], np.float64)  # (J,)
            self.joint_whiten = np.asarray(tensors["joint.whiten"], np.float64)  # (J, J)
            self.jepa = JEPAHead(tensors, cfg)
            self.ar = ARHead(tensors, cfg)

    def new_cache(self, capacity: int = 64) -> KVCache:
        return KVCache(self.cfg, capacity)

    def encode_image(self, image) -> VisionState:
        """image [H, W, C] (uint8 or float) -> vision tokens; reuse the result per image."""
        if self.vision is None:
            raise ValueError(f"arch {self.cfg.arch!r} has no vision encoder")
        return self.vision(image)

    def forward(self, tokens, cache: KVCache, image_state: VisionState | None = None,
                jepa: bool = False, last_only: bool = False):
        """Logits [T, V] (or [1, V] with last_only) for T new tokens at cache.length;
        with jepa=True returns (logits, predictions [n_future, T, J]).

        image_state (from encode_image): attach this image with these tokens as its prompt
        (the image->text attention reads exactly them), or pass the attached image again
        (or None) while decoding; the cache keeps what decoding needs."""
        tokens = self._check(tokens, cache, image_state, jepa)
        if self.cfg.arch == "llama":
            return self._logits(self.lang(tokens, cache.lang), last_only)
        z = self._joint(tokens, cache, image_state)  # (T, J)
        logits = self._logits(self.ar(z, cache.ar), last_only)
        if not jepa:
            return logits
        return logits, self.jepa(cache, len(tokens))

    def _joint(self, tokens, cache, image):
        """tokens [T] -> z [T, J] (appended to cache.z): language encoder and fusion."""
        p0 = cache.length
        h = self.lang(tokens, cache.lang)  # (T, d)
        if image is not None and cache.image is None:
            h, cache.image = self.fusion.attach(h, image, p0)
        else:
            h = self.fusion(h, cache.image)
        z = self.joint_text(h)  # (T, J)
        cache.z.append(z)
        return z

    def _logits(self, h: np.ndarray, last_only: bool) -> np.ndarray:
        return self.output(np.ascontiguousarray(h[-1:]) if last_only else h)  # (T, V)

    def _check(self, tokens, cache, image, jepa):
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if tokens.size == 0:
            raise ValueError("forward needs at least one new token")
        if cache.cfg != self.cfg:
            raise ValueError("this cache was made for another model config")
        if cache.length + tokens.size > self.cfg.max_seq_len:
            raise ValueError(f"sequence would reach {cache.length + tokens.size} tokens, over "
                             f"max_seq_len={self.cfg.max_seq_len}; truncate the cache first")
        if self.cfg.arch == "llama" and (image is not None or jepa):
            raise ValueError("arch 'llama' takes no image and has no JEPA head")
        if image is not None and cache.image is not None and not _same_image(image, cache.image):
            raise ValueError("this sequence already reads another image; truncate the cache to "
                             "before its prompt (or use a new cache) to attach a new one")
        return tokens

    # ---- joint space -------------------------------------------------------------------
    def text_states(self, tokens) -> np.ndarray:
        """z [T, J] of a token sequence read alone (no image), on a scratch cache."""
        if self.vision is None:
            raise ValueError(f"arch {self.cfg.arch!r} has no joint space")
        tokens = self._check(tokens, self.new_cache(1), None, False)
        return self._joint(tokens, self.new_cache(len(tokens)), None)

    def image_states(self, vision_state: VisionState) -> np.ndarray:
        return self.joint_vision(vision_state.tokens)  # (N, J)

    def read_scores(self, vision_state: VisionState) -> np.ndarray:
        """The reading head's logits for the character under each patch [Gh, Gw, 96]."""
        return self.vision.read(vision_state)

    def joint_vector(self, z: np.ndarray) -> np.ndarray:
        """The vector screenshots and code are compared by: states [T, J] pooled, centred
        and whitened by the retrieval metric, L2-normalised -> [J]."""
        return pooled(z, self.joint_center, self.joint_whiten)


def _same_image(state: VisionState, attached) -> bool:
    other = attached.vision_state
    return state is other or (state.grid == other.grid and np.array_equal(state.tokens, other.tokens))


def pooled(z: np.ndarray, center: np.ndarray, whiten: np.ndarray) -> np.ndarray:
    """Mean over tokens, then whiten @ (mean - center), L2-normalised: [T, J] -> [J]."""
    m = whiten @ (z.astype(np.float64).mean(axis=0) - center)
    return (m / max(np.linalg.norm(m), 1e-12)).astype(np.float32)
