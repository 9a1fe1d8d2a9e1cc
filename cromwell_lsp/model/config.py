"""The one model configuration: every size of Cromwell VL-JEPA (and of the plain Llama-shaped
decoder the engine also runs), its presets, and its strict dict round trip.

The weights file stores exactly `to_dict()` in its metadata, so a file always says which
shapes it holds (see weights.py).  Sizes follow the seed roadmap ("Cromwell VL-JEPA") for
`base`; `small` and `tiny` shrink every part so they train here; `llama-25m` / `llama-100m`
are the Llama shapes llama.cpp was measured with.

arch "vljepa": image -> vision encoder -> vision tokens; text -> language encoder ->
fusion (cross-attention with the vision tokens) -> joint projection z -> JEPA head and
AR head -> logits.  arch "llama": tokens -> language encoder -> lm head; every vision,
fusion, joint, JEPA and AR size is 0.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

ARCHS = ("vljepa", "llama")
VLJEPA_ONLY_FIELDS = ("image_channels", "patch_size", "patch_dim", "mbconv_blocks", "mbconv_expand", "vision_dim", "vision_layers",
                "vision_heads", "vision_ffn_dim", "window_size", "image_size", "fusion_layers",
                "fusion_ffn_dim", "joint_dim", "jepa_layers", "jepa_heads", "jepa_ffn_dim",
                "jepa_pred_dim", "n_future", "ar_layers", "ar_heads", "ar_kv_heads", "ar_ffn_dim")


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "vljepa"
    # language encoder (the whole model for arch "llama")
    vocab_size: int = 16384
    d_model: int = 768
    n_layers: int = 12
    n_heads: int = 12
    n_kv_heads: int = 3
    ffn_dim: int = 3072
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    max_seq_len: int = 4096
    # vision encoder: 4x4 patches -> MBConv x mbconv_blocks -> proj -> windowed ViT blocks
    image_channels: int = 3
    patch_size: int = 4
    patch_dim: int = 192
    mbconv_blocks: int = 4
    mbconv_expand: int = 4
    vision_dim: int = 384
    vision_layers: int = 6
    vision_heads: int = 6
    vision_ffn_dim: int = 1536
    window_size: int = 16
    image_size: int = 256  # the positional-embedding grid is image_size / patch_size square
    # fusion blocks (text <-> image cross-attention)
    fusion_layers: int = 6
    fusion_ffn_dim: int = 2048
    # joint space and JEPA head
    joint_dim: int = 512
    jepa_layers: int = 4
    jepa_heads: int = 8
    jepa_ffn_dim: int = 2048
    jepa_pred_dim: int = 1024
    n_future: int = 3
    step_weights: tuple = (1.0, 0.5, 0.25)
    # AR head
    ar_layers: int = 6
    ar_heads: int = 12
    ar_kv_heads: int = 3
    ar_ffn_dim: int = 3072

    def __post_init__(self):
        object.__setattr__(self, "step_weights", tuple(float(w) for w in self.step_weights))
        problems = self._problems()
        if problems:
            raise ValueError("invalid model config: " + "; ".join(problems))

    # ---- derived sizes ---------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def vision_head_dim(self) -> int:
        return self.vision_dim // self.vision_heads

    @property
    def jepa_head_dim(self) -> int:
        return self.joint_dim // self.jepa_heads

    @property
    def ar_head_dim(self) -> int:
        return self.d_model // self.ar_heads

    @property
    def pos_grid(self) -> int:
        """Side of the stored 2D positional-embedding grid (in patches)."""
        return self.image_size // self.patch_size

    @property
    def has_vision(self) -> bool:
        return self.arch == "vljepa"

    def n_params(self) -> int:
        """Parameters of the fp32 model, counted from the tensor list the weights use (the
        retrieval metric is a fixed map set from statistics, not a parameter)."""
        from .weights import RETRIEVAL_METRIC, expected_tensors
        total = 0
        for name, (shape, _) in expected_tensors(self, "f32").items():
            if name in RETRIEVAL_METRIC:
                continue
            n = 1
            for s in shape:
                n *= s
            total += n
        return total

    # ---- validation --------------------------------------------------------------------
    def _problems(self) -> list[str]:
        p = []
        if self.arch not in ARCHS:
            p.append(f"arch must be one of {ARCHS}, got {self.arch!r}")
        for name, heads, kv in (("", self.n_heads, self.n_kv_heads),
                                ("ar_", self.ar_heads, self.ar_kv_heads)):
            if name == "ar_" and self.arch == "llama":
                continue
            if heads < 1 or self.d_model % heads or (self.d_model // heads) % 2:
                p.append(f"d_model={self.d_model} must split into {name}heads={heads} even-sized heads")
            if kv < 1 or heads % kv:
                p.append(f"{name}n_heads={heads} must be a multiple of {name}kv_heads={kv}")
        if self.arch == "llama":
            nonzero = [n for n in VLJEPA_ONLY_FIELDS if getattr(self, n)]
            if nonzero:
                p.append(f"arch 'llama' has no vision/fusion/JEPA/AR parts; set {', '.join(nonzero)} to 0")
            return p
        if self.patch_size != 4:
            p.append(f"patch_size must be 4 (the patch-embedding kernel is 4x4), got {self.patch_size}")
        if self.vision_heads < 1 or self.vision_dim % self.vision_heads:
            p.append(f"vision_dim={self.vision_dim} must split into vision_heads={self.vision_heads}")
        if self.jepa_heads < 1 or self.joint_dim % self.jepa_heads or self.jepa_head_dim % 2:
            p.append(f"joint_dim={self.joint_dim} must split into jepa_heads={self.jepa_heads} even heads")
        if self.image_size % self.patch_size:
            p.append(f"image_size={self.image_size} must be a multiple of patch_size")
        if len(self.step_weights) != self.n_future:
            p.append(f"step_weights needs n_future={self.n_future} values, got {len(self.step_weights)}")
        if self.n_future < 1 or self.window_size < 1 or self.mbconv_expand < 1:
            p.append("n_future, window_size and mbconv_expand must be >= 1")
        return p

    # ---- dict round trip (the weights metadata) ----------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["step_weights"] = list(self.step_weights)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """Strict: every field present, no unknown key, each value of its field's type."""
        if not isinstance(d, dict):
            raise ValueError(f"model config must be a JSON object, got {type(d).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        missing = sorted(set(fields) - set(d))
        if unknown or missing:
            raise ValueError(f"model config keys do not match ModelConfig: unknown {unknown}, "
                             f"missing {missing} (was the file written by another version?)")
        for name, f in fields.items():
            _check_type(name, d[name], cls.__dataclass_fields__[name].default)
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        return cls.from_dict(json.loads(text))

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


def _check_type(name, value, default):
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(value, type(default))
    elif isinstance(default, int):
        ok = isinstance(value, int)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float))
    elif isinstance(default, str):
        ok = isinstance(value, str)
    else:  # step_weights
        ok = isinstance(value, (list, tuple)) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if not ok:
        raise ValueError(f"model config field {name!r} has {value!r}; expected a value like {default!r}")


def llama(**sizes) -> ModelConfig:
    """A plain Llama-shaped decoder config: every vision/fusion/JEPA/AR size 0."""
    zeros = {n: 0 for n in VLJEPA_ONLY_FIELDS}
    return ModelConfig(arch="llama", step_weights=(), **{**zeros, **sizes})


PRESETS = {
    "base": ModelConfig(),
    "small": ModelConfig(
        vocab_size=16384, d_model=384, n_layers=6, n_heads=6, n_kv_heads=2, ffn_dim=1024,
        patch_dim=64, mbconv_blocks=4, mbconv_expand=4, vision_dim=192, vision_layers=4,
        vision_heads=3, vision_ffn_dim=512, fusion_layers=3, fusion_ffn_dim=768, joint_dim=256,
        jepa_layers=2, jepa_heads=4, jepa_ffn_dim=512, jepa_pred_dim=512,
        ar_layers=3, ar_heads=6, ar_kv_heads=2, ar_ffn_dim=1024),
    "tiny": ModelConfig(
        vocab_size=8192, d_model=192, n_layers=4, n_heads=6, n_kv_heads=2, ffn_dim=512,
        max_seq_len=1024, patch_dim=32, mbconv_blocks=2, mbconv_expand=2, vision_dim=96,
        vision_layers=2, vision_heads=3, vision_ffn_dim=256, window_size=8, image_size=128,
        fusion_layers=2, fusion_ffn_dim=384, joint_dim=128, jepa_layers=2, jepa_heads=4,
        jepa_ffn_dim=256, jepa_pred_dim=256, ar_layers=2, ar_heads=6, ar_kv_heads=2,
        ar_ffn_dim=512),
    "llama-25m": llama(vocab_size=16384, d_model=384, n_layers=12, n_heads=6, n_kv_heads=2,
                       ffn_dim=1024),
    "llama-100m": llama(vocab_size=16384, d_model=768, n_layers=14, n_heads=12, n_kv_heads=4,
                        ffn_dim=2048),
}


def preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown model config {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
