"""Cromwell VL-JEPA inference: the Python API over the engine (numpy + our C kernels).

    model = CromwellVLJEPA.load("weights/model.safetensors")
    cache = model.new_cache()
    logits = model.forward(token_ids, cache)          # prefill: logits for every new token
    logits = model.forward([next_id], cache)          # decode one token
    v = model.embed_image(image); t = model.embed_text("def f(): ...")   # joint space, unit

The engine's parts live beside this file: config (ModelConfig and presets), weights
(safetensors, mmap, int8), kvcache, layers, vision, language, fusion, heads (JEPA, AR),
engine (forward), sampling, generation (the decode loop, limits and JEPA self-speculative
decoding), prompts (the formats shared with training).

    text = model.generate("def fibonacci(n):", max_tokens=48)
    for piece in model.generate("class Stack:", stream=True): print(piece, end="")
    middle = model.complete(prefix, suffix)          # fill in the middle (SPM order)
    code = model.generate_multimodal("shot.png", "")  # read code from a screenshot
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path

import numpy as np

from . import prompts
from .config import PRESETS, ModelConfig, preset
from .engine import Engine
from .generation import GenerationConfig, GenerationStats, generate_ids
from .sampling import SamplingParams, TextStream
from .kvcache import KVCache
from .vision import VisionState
from .weights import WeightsError, WeightsFile, load as load_weights

DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "model-int8.safetensors"


def tokenizer_beside(weights: str | Path) -> Path:
    """Where a weights file's tokenizer lives: tokenizer.json in the same folder (train
    export writes it there; load reads it from there when none is named)."""
    return Path(weights).with_name("tokenizer.json")

__all__ = ["CromwellVLJEPA", "ModelConfig", "PRESETS", "preset", "KVCache", "VisionState",
           "WeightsError", "GenerationConfig", "GenerationStats", "SamplingParams"]


class CromwellVLJEPA:
    """A loaded model: the engine, its weights file (kept mapped) and its tokenizer."""

    VISION_CACHE_SIZE = 4  # encoded images kept, most recently used first out last

    def __init__(self, weights: WeightsFile, tokenizer=None):
        self.weights, self.config, self.tokenizer = weights, weights.config, tokenizer
        self.engine = Engine(weights.config, weights.tensors)
        self._vision_cache: OrderedDict[str, VisionState] = OrderedDict()

    @classmethod
    def load(cls, path: str | Path | None = None, tokenizer: str | Path | None = None) -> "CromwellVLJEPA":
        """Map a weights file (zero copy) and read tokenizer.json beside it when present.

        path=None: the packaged default model (cromwell_lsp/weights/, int8)."""
        if path is None:
            path = DEFAULT_WEIGHTS
            if not path.exists():
                raise WeightsError(f"the packaged default model {path} is missing from this "
                                   "installation. HINT: reinstall cromwell-lsp, or pass the path "
                                   "of a .safetensors file (train one with `cromwell train`)")
        weights = load_weights(path)
        tok_path = Path(tokenizer) if tokenizer else tokenizer_beside(path)
        tok = None
        if tokenizer or tok_path.exists():
            from .tokenizer import Tokenizer
            tok = Tokenizer(tok_path)
            want = weights.tokenizer_sha256
            if want and tok.sha256 != want:
                raise WeightsError(f"{path}: it was trained with another tokenizer (sha256 "
                                   f"{want[:12]}..., {tok_path} has {tok.sha256[:12]}...). HINT: "
                                   "put the tokenizer.json it was exported with beside it")
        return cls(weights, tok)

    def new_cache(self, capacity: int = 64) -> KVCache:
        return self.engine.new_cache(capacity)

    def forward(self, tokens, cache: KVCache, image_state: VisionState | None = None,
                jepa: bool = False, last_only: bool = False):
        """See Engine.forward: logits for the new tokens (and JEPA predictions on request)."""
        return self.engine.forward(tokens, cache, image_state, jepa, last_only)

    @property
    def screenshot_side(self) -> int:
        """The side of the square canvas the vision path was trained on (weights metadata
        "screenshot_side"; the config's image_size when the file does not say)."""
        try:
            side = int(self.weights.metadata.get("screenshot_side", 0))
        except ValueError:
            side = 0
        return side if 4 <= side <= 4096 else self.config.image_size

    def read_screenshot(self, image) -> np.ndarray:
        """A screenshot (a path or a PIL image) on the training canvas, float32 [S, S, 3];
        a file that cannot be read raises ValueError naming it."""
        from .images import open_image, screenshot_canvas

        if isinstance(image, (str, Path)):
            image = open_image(image)
        return screenshot_canvas(image.convert("RGB"), self.screenshot_side)

    def encode_image(self, image) -> VisionState:
        """image: a path, a PIL image or an array [H, W, C] -> vision tokens.  The last few
        images are cached by content, so asking again about one screenshot is free."""
        pixels = np.ascontiguousarray(_image_array(image))
        key = hashlib.sha256(pixels.tobytes()).hexdigest() + f"{pixels.shape}{pixels.dtype}"
        if key in self._vision_cache:
            self._vision_cache.move_to_end(key)
            return self._vision_cache[key]
        state = self._vision_cache[key] = self.engine.encode_image(pixels)
        while len(self._vision_cache) > self.VISION_CACHE_SIZE:
            self._vision_cache.popitem(last=False)
        return state

    def embed_image(self, image) -> np.ndarray:
        """The joint-space vector [J] of an image (Engine.joint_vector: mean-pooled,
        whitened by the retrieval metric, L2-normalised)."""
        state = image if isinstance(image, VisionState) else self.encode_image(image)
        return self.engine.joint_vector(self.engine.image_states(state))

    def read_text(self, image) -> str:
        """The code an image shows, read patch by patch by the vision encoder's reading head
        and laid out in lines (model/reading.py); "" when it reads nothing (also for
        weights whose head was never trained).  image: as encode_image takes, usually
        read_screenshot's canvas."""
        from .reading import grid_text

        state = image if isinstance(image, VisionState) else self.encode_image(image)
        return grid_text(self.engine.read_scores(state))

    def embed_text(self, text) -> np.ndarray:
        """The joint-space vector [J] of a text (or its token ids), as embed_image's;
        a text longer than the model's context is embedded by its first max_seq_len tokens
        (as training aligned screenshots with the start of their code)."""
        if isinstance(text, str):
            if self.tokenizer is None:
                raise ValueError("this model has no tokenizer; pass token ids or load one")
            text = self.tokenizer.encode(text)
        return self.engine.joint_vector(self.engine.text_states(list(text)[: self.engine.cfg.max_seq_len]))


    # ---- generation ------------------------------------------------------------------
    def _tok(self):
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer.json beside its weights; generation "
                             "needs one (load(path, tokenizer=...))")
        return self.tokenizer

    def stream(self, segments, config: GenerationConfig = GenerationConfig(), image=None,
               cache: KVCache | None = None, stats: GenerationStats | None = None, cancel=None):
        """Text pieces generated after a prompt given as segments (see prompts.py); stops at
        <|endoftext|> and at config.stop; never yields a special token."""
        tok = self._tok()
        ids, _ = prompts.encode(segments, tok)
        if not ids:
            raise ValueError("the prompt is empty")
        cache = cache if cache is not None else self.new_cache(len(ids) + config.max_tokens + 8)
        state = self.encode_image(image) if image is not None else None
        eot = tok.special("endoftext")
        banned = [i for i in tok.ids.values() if i != eot]
        text = TextStream(tok, config.stop)
        for tid in generate_ids(self.engine, cache, ids, config, state, stop_ids=[eot],
                                banned_ids=banned, cancel=cancel, stats=stats):
            piece = text.push(tid)
            if piece:
                yield piece
            if text.stopped:
                if stats is not None:
                    stats.stop_reason = "stop_string"
                return
        rest = text.flush()
        if rest:
            yield rest

    def _run(self, segments, image, stream, stats, kw):
        config = _config(**kw)
        pieces = self.stream(segments, config, image=image, stats=stats)
        return pieces if stream else "".join(pieces)

    def generate(self, prompt: str, *, stream: bool = False, stats=None, **kw):
        """Continue `prompt`.  Keywords: max_tokens, temperature, top_k, top_p, seed, stop,
        deadline_s, speculative.  Returns the text, or an iterator of pieces (stream=True)."""
        return self._run([("text", prompt)], None, stream, stats, kw)

    def generate_multimodal(self, image, prompt: str = "", *, stream: bool = False, stats=None,
                            **kw):
        """Generate about an image (a path, PIL image or array): with an empty prompt, the
        code the screenshot shows; otherwise a continuation of `prompt` that reads it."""
        segs = prompts.image_to_code() if not prompt else [("special", "image"), ("text", prompt)]
        return self._run(segs, image, stream, stats, kw)

    def complete(self, prefix: str, suffix: str = "", *, stream: bool = False, stats=None, **kw):
        """The middle between prefix and suffix (fill-in-the-middle, SPM order), raw; the
        editor features post-process it (features/postprocess.py)."""
        return self._run(prompts.fim_spm(prefix, suffix), None, stream, stats, kw)

    def explain(self, code: str, *, stream: bool = False, stats=None, **kw):
        """A one-paragraph explanation of a piece of code."""
        return self._run(prompts.explain(code), None, stream, stats, kw)


def _config(max_tokens=64, temperature=0.0, top_k=0, top_p=1.0, seed=None, stop=(),
            deadline_s=None, speculative=False) -> GenerationConfig:
    return GenerationConfig(max_tokens=max_tokens, stop=tuple(stop), deadline_s=deadline_s,
                            sampling=SamplingParams(temperature, top_k, top_p, seed),
                            speculative=speculative)


def _image_array(image) -> np.ndarray:
    if isinstance(image, np.ndarray):
        return image
    from PIL import Image
    if isinstance(image, (str, Path)):
        with Image.open(image) as im:
            return np.asarray(im.convert("RGB"))
    return np.asarray(image.convert("RGB"))
