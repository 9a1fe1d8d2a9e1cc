"""Weights files: our own safetensors reader (memory-mapped, zero copy) and writer, the one
list of tensor names and shapes for a config, and the int8 conversion.

Format (huggingface/safetensors): 8-byte little-endian header length N, N bytes of JSON
{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}, then the
data; offsets count from the end of the header.  We pad the header with spaces so the data
starts on a 64-byte boundary and store tensors by falling item size, so every array is
aligned for its dtype.  Metadata: format_version, config (ModelConfig.to_json()),
tokenizer_sha256 (may be empty), quant (f32 | int8).

int8 ("q8", like ggml's Q8_0): every linear weight `X.weight` [N, K] with K % 32 == 0 is
stored as `X.weight.q` int8 [N, K] and `X.weight.d` float16 [N, K/32]; embeddings, norms,
convolutions and positional embeddings stay float32.

Names (the PyTorch twin's state_dict keys, training/model.py): see `fp32_tensors`.
"""
from __future__ import annotations

import json
import mmap
import struct
from pathlib import Path

import numpy as np

from .. import kernels
from .config import ModelConfig
from .reading import N_CLASSES

FORMAT_VERSION = "1"
QUANTS = ("f32", "int8")
DTYPES = {"F32": np.float32, "F16": np.float16, "I8": np.int8, "U8": np.uint8,
          "I32": np.int32, "I64": np.int64, "F64": np.float64}
_DTYPE_NAMES = {np.dtype(v): k for k, v in DTYPES.items()}
_ALIGN = 64


class WeightsError(ValueError):
    """A weights file that cannot be used; the message names the file and what to do."""


# ---- the tensor list -------------------------------------------------------------------
def _block(prefix, d, heads, kv_heads, ffn, q_in=None, kv_in=None):
    """Pre-norm transformer block: attention (+ its norm) and SwiGLU MLP (+ its norm)."""
    hd = d // heads
    q_in, kv_in = q_in or d, kv_in or d
    return {
        f"{prefix}.attn_norm.weight": ((q_in,), False),
        f"{prefix}.attn.wq.weight": ((heads * hd, q_in), True),
        f"{prefix}.attn.wk.weight": ((kv_heads * hd, kv_in), True),
        f"{prefix}.attn.wv.weight": ((kv_heads * hd, kv_in), True),
        f"{prefix}.attn.wo.weight": ((q_in, heads * hd), True),
        **_ffn(prefix, d, ffn),
    }


def _ffn(prefix, d, ffn):
    return {
        f"{prefix}.ffn_norm.weight": ((d,), False),
        f"{prefix}.ffn.w1.weight": ((ffn, d), True),
        f"{prefix}.ffn.w3.weight": ((ffn, d), True),
        f"{prefix}.ffn.w2.weight": ((d, ffn), True),
    }


def _attn(prefix, d_q, d_kv, heads, kv_heads, hd):
    """Cross-attention: queries from width d_q, keys/values from width d_kv."""
    return {
        f"{prefix}.wq.weight": ((heads * hd, d_q), True),
        f"{prefix}.wk.weight": ((kv_heads * hd, d_kv), True),
        f"{prefix}.wv.weight": ((kv_heads * hd, d_kv), True),
        f"{prefix}.wo.weight": ((d_q, heads * hd), True),
    }


def fp32_tensors(cfg: ModelConfig) -> dict[str, tuple[tuple[int, ...], bool]]:
    """name -> (shape, is_linear) of the float32 model, in forward order."""
    d, V = cfg.d_model, cfg.vocab_size
    t = {"lang.tok_embeddings.weight": ((V, d), False)}
    for i in range(cfg.n_layers):
        t |= _block(f"lang.layers.{i}", d, cfg.n_heads, cfg.n_kv_heads, cfg.ffn_dim)
    t["lang.norm.weight"] = ((d,), False)
    if cfg.arch == "vljepa":
        t |= _vision_tensors(cfg) | _fusion_tensors(cfg) | _head_tensors(cfg)
    t["output.weight"] = ((V, d), True)
    return t


def _vision_tensors(cfg):
    P, E, dv, G = cfg.patch_dim, cfg.patch_dim * cfg.mbconv_expand, cfg.vision_dim, cfg.pos_grid
    t = {"vision.patch_embed.weight": ((P, 4, 4, cfg.image_channels), False),
         "vision.patch_embed.bias": ((P,), False)}
    for i in range(cfg.mbconv_blocks):
        p = f"vision.mbconv.{i}"
        t |= {f"{p}.norm.weight": ((P,), False), f"{p}.expand.weight": ((E, P), True),
              f"{p}.dw.weight": ((3, 3, E), False), f"{p}.dw.bias": ((E,), False),
              f"{p}.project.weight": ((P, E), True)}
    t["vision.proj.weight"] = ((dv, P), True)
    t["vision.pos_embed"] = ((G, G, dv), False)
    for i in range(cfg.vision_layers):
        t |= _block(f"vision.blocks.{i}", dv, cfg.vision_heads, cfg.vision_heads, cfg.vision_ffn_dim)
    t["vision.norm.weight"] = ((dv,), False)
    # the reading head: the character under each patch (model/reading.py)
    t["vision.read.weight"] = ((N_CLASSES, dv), False)
    t["vision.read.bias"] = ((N_CLASSES,), False)
    return t


def _fusion_tensors(cfg):
    d, dv = cfg.d_model, cfg.vision_dim
    t = {}
    for i in range(cfg.fusion_layers):
        p = f"fusion.{i}"
        t |= {f"{p}.i2t_norm.weight": ((dv,), False), f"{p}.i2t_text_norm.weight": ((d,), False)}
        t |= _attn(f"{p}.i2t", dv, d, cfg.vision_heads, cfg.vision_heads, cfg.vision_head_dim)
        t |= {f"{p}.t2i_norm.weight": ((d,), False), f"{p}.t2i_vision_norm.weight": ((dv,), False)}
        t |= _attn(f"{p}.t2i", d, dv, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim)
        t |= _ffn(p, d, cfg.fusion_ffn_dim)
    if cfg.fusion_layers:
        t["fusion.norm.weight"] = ((d,), False)
    return t


def _head_tensors(cfg):
    d, J = cfg.d_model, cfg.joint_dim
    t = {"joint.text.weight": ((J, d), True), "joint.vision.weight": ((J, cfg.vision_dim), True),
         # the retrieval metric: pooled vectors are compared as whiten @ (mean - center)
         "joint.center": ((J,), False), "joint.whiten": ((J, J), False)}
    for i in range(cfg.jepa_layers):
        t |= _block(f"jepa.layers.{i}", J, cfg.jepa_heads, cfg.jepa_heads, cfg.jepa_ffn_dim)
    t["jepa.norm.weight"] = ((J,), False)
    for k in range(cfg.n_future):
        t |= {f"jepa.pred.{k}.norm.weight": ((J,), False),
              f"jepa.pred.{k}.w1.weight": ((cfg.jepa_pred_dim, J), True),
              f"jepa.pred.{k}.w3.weight": ((cfg.jepa_pred_dim, J), True),
              f"jepa.pred.{k}.w2.weight": ((J, cfg.jepa_pred_dim), True)}
    t["ar.in_proj.weight"] = ((d, J), True)
    for i in range(cfg.ar_layers):
        t |= _block(f"ar.layers.{i}", d, cfg.ar_heads, cfg.ar_kv_heads, cfg.ar_ffn_dim)
    t["ar.norm.weight"] = ((d,), False)
    return t


def is_quantizable(shape, linear: bool) -> bool:
    return linear and len(shape) == 2 and shape[1] % kernels.QK == 0


def quantized_names(cfg: ModelConfig) -> list[str]:
    """The float32 names the int8 file holds as q/d pairs, in the file's order."""
    return [n for n, (shape, linear) in fp32_tensors(cfg).items() if is_quantizable(shape, linear)]


def expected_tensors(cfg: ModelConfig, quant: str = "f32") -> dict[str, tuple[tuple, np.dtype]]:
    """name -> (shape, dtype) that a weights file for `cfg` in `quant` holds, no more, no less."""
    if quant not in QUANTS:
        raise ValueError(f"quant must be one of {QUANTS}, got {quant!r}")
    out = {}
    for name, (shape, linear) in fp32_tensors(cfg).items():
        if quant == "int8" and is_quantizable(shape, linear):
            out[name + ".q"] = (shape, np.dtype(np.int8))
            out[name + ".d"] = ((shape[0], shape[1] // kernels.QK), np.dtype(np.float16))
        else:
            out[name] = (shape, np.dtype(np.float32))
    return out


# ---- writer ----------------------------------------------------------------------------
def save(path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    """Write a safetensors file; tensors are stored by falling item size (aligned views)."""
    for k, v in metadata.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise ValueError(f"metadata must map str to str, got {k!r}: {type(v).__name__}")
    order = sorted(tensors, key=lambda n: (-np.dtype(tensors[n].dtype).itemsize, n))
    header, offset = {"__metadata__": dict(metadata)}, 0
    for name in order:
        a = tensors[name]
        if np.dtype(a.dtype) not in _DTYPE_NAMES:
            raise ValueError(f"tensor {name}: dtype {a.dtype} cannot be stored")
        header[name] = {"dtype": _DTYPE_NAMES[np.dtype(a.dtype)], "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((-(8 + len(raw))) % _ALIGN)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name in order:
            f.write(np.ascontiguousarray(tensors[name]).tobytes())
    tmp.replace(path)


# ---- reader ----------------------------------------------------------------------------
class WeightsFile:
    """A loaded weights file: `tensors` (read-only numpy views of the map), `metadata`,
    `config`, `quant`.  The map stays open as long as any view is alive."""

    def __init__(self, path, tensors, metadata, config, quant, mm):
        self.path, self.tensors, self.metadata = Path(path), tensors, metadata
        self.config, self.quant, self._mmap = config, quant, mm

    @property
    def tokenizer_sha256(self) -> str:
        return self.metadata.get("tokenizer_sha256", "")

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.tensors.values())

    def buffer(self) -> np.ndarray:
        """The whole map as bytes (for checking that tensors view it, zero copy)."""
        return np.frombuffer(self._mmap, dtype=np.uint8)


def _fail(path, what, hint="re-export it with `export_safetensors` or re-run `cromwell quantize`"):
    raise WeightsError(f"{path}: {what}. HINT: {hint}")


def read_raw(path) -> tuple[dict[str, np.ndarray], dict[str, str], mmap.mmap]:
    """Map a safetensors file read-only and view every tensor in it (no config checks)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = path.stat().st_size
            if size < 8:
                _fail(path, f"file too short ({size} bytes) to be safetensors",
                      "the file is truncated or not a weights file; export or download it again")
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        _fail(path, f"cannot open ({exc.strerror})", "check the path")
    (n,) = struct.unpack("<Q", mm[:8])
    if 8 + n > size:
        _fail(path, f"header length {n} runs past the end of the {size}-byte file",
              "the file is truncated or not a weights file; export it again")
    try:
        header = json.loads(bytes(mm[8:8 + n]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        _fail(path, f"header is not valid JSON ({exc})")
    if not isinstance(header, dict):
        _fail(path, "header is not a JSON object")
    metadata = header.pop("__metadata__", {}) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        _fail(path, "__metadata__ must map strings to strings")
    return _views(path, mm, header, 8 + n, size), metadata, mm


def _views(path, mm, header, start, size):
    tensors, spans = {}, []
    for name, info in header.items():
        try:
            dtype_name, shape, (lo, hi) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
            if not all(isinstance(v, int) and v >= 0 for v in (*shape, lo, hi)):
                raise TypeError
        except (TypeError, KeyError, ValueError):
            _fail(path, f"tensor {name!r} has a malformed entry {info!r}")
        if dtype_name not in DTYPES:
            _fail(path, f"tensor {name!r} has dtype {dtype_name}, which this reader does not "
                  f"know (known: {', '.join(DTYPES)})", "convert the file to F32 or int8")
        dtype = np.dtype(DTYPES[dtype_name])
        count = int(np.prod(shape, dtype=np.int64))
        if hi < lo or start + hi > size or hi - lo != count * dtype.itemsize:
            _fail(path, f"tensor {name!r} has data_offsets [{lo}, {hi}] that do not fit its "
                  f"shape {list(shape)} {dtype_name} inside the {size - start}-byte data section")
        spans.append((lo, hi, name))
        tensors[name] = np.frombuffer(mm, dtype=dtype, count=count, offset=start + lo).reshape(shape)
    spans.sort()
    for (lo1, hi1, n1), (lo2, hi2, n2) in zip(spans, spans[1:]):
        if lo2 < hi1:
            _fail(path, f"tensors {n1!r} and {n2!r} overlap in the data section")
    return tensors


def load(path, expect_config: ModelConfig | None = None) -> WeightsFile:
    """Map a Cromwell weights file and check it against its config (names, shapes, dtypes,
    format version).  Raises WeightsError naming the file and the fix."""
    path = Path(path)
    tensors, meta, mm = read_raw(path)
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        _fail(path, f"format_version is {version!r}, this engine reads {FORMAT_VERSION!r}",
              "re-export the weights with this version of cromwell")
    try:
        cfg = ModelConfig.from_json(meta["config"])
    except KeyError:
        _fail(path, "metadata has no 'config'")
    except ValueError as exc:
        _fail(path, f"metadata 'config' is not a valid model config ({exc})")
    if expect_config is not None and cfg != expect_config:
        _fail(path, "its config differs from the one asked for", "load it without a config")
    quant = meta.get("quant")
    if quant not in QUANTS:
        _fail(path, f"metadata 'quant' is {quant!r}, expected one of {QUANTS}")
    if cfg.arch == "vljepa":  # files written before these parts existed get their defaults
        for part in later_parts(cfg):
            if not any(k in tensors for k in part):
                tensors = {**tensors, **part}
    _check_against(path, tensors, expected_tensors(cfg, quant))
    return WeightsFile(path, tensors, meta, cfg, quant, mm)


RETRIEVAL_METRIC = ("joint.center", "joint.whiten")  # a fixed map, not a parameter


def later_parts(cfg: ModelConfig) -> list[dict[str, np.ndarray]]:
    """Parts added after format 1's first files, each with what stands in for it in a
    file without it: the retrieval metric that compares pooled vectors as they are (plain
    cosine), and a reading head that reads nothing (every patch a space)."""
    J, dv = cfg.joint_dim, cfg.vision_dim
    center, whiten = RETRIEVAL_METRIC
    return [{center: np.zeros(J, np.float32), whiten: np.eye(J, dtype=np.float32)},
            {"vision.read.weight": np.zeros((N_CLASSES, dv), np.float32),
             "vision.read.bias": np.zeros(N_CLASSES, np.float32)}]


def _check_against(path, tensors, expected):
    missing = [n for n in expected if n not in tensors]
    unexpected = [n for n in tensors if n not in expected]
    if missing or unexpected:
        _fail(path, f"tensor names do not match its config: missing {missing[:5]}"
              f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
              f"{' ...' if len(unexpected) > 5 else ''}")
    for name, (shape, dtype) in expected.items():
        a = tensors[name]
        if a.shape != tuple(shape) or a.dtype != dtype:
            _fail(path, f"tensor {name!r} is {a.dtype.name}{list(a.shape)}, its config expects "
                  f"{dtype.name}{list(shape)}")


def metadata_for(cfg: ModelConfig, quant: str, tokenizer_sha256: str = "") -> dict[str, str]:
    return {"format_version": FORMAT_VERSION, "config": cfg.to_json(),
            "tokenizer_sha256": tokenizer_sha256, "quant": quant}


def save_model(path, cfg: ModelConfig, tensors: dict[str, np.ndarray], quant: str = "f32",
               tokenizer_sha256: str = "", extra: dict[str, str] | None = None,
               rounding=None) -> None:
    """Check `tensors` (float32 names) against cfg, quantize when asked, and write.
    `extra`: more metadata (e.g. "screenshot_side", the training image side); `rounding`:
    as quantize_tensors."""
    _check_against(path, tensors, expected_tensors(cfg, "f32"))
    if quant == "int8":
        tensors = quantize_tensors(cfg, tensors, rounding)
    save(path, tensors, {**(extra or {}), **metadata_for(cfg, quant, tokenizer_sha256)})


def quantize_tensors(cfg: ModelConfig, tensors: dict[str, np.ndarray],
                     rounding=None) -> dict[str, np.ndarray]:
    """float32 tensors -> the int8 file's tensors (linear weights as q/d pairs), each
    linear weight rounded to its nearest levels unless `rounding(name, array)` gives its
    (q, d) (training/gptq.py's rounding; None there: to nearest)."""
    out = {}
    for name, (shape, linear) in fp32_tensors(cfg).items():
        a = np.ascontiguousarray(tensors[name], dtype=np.float32)
        if is_quantizable(shape, linear):
            qd = rounding(name, a) if rounding is not None else None
            out[name + ".q"], out[name + ".d"] = qd if qd is not None else kernels.quantize_q8(a)
        else:
            out[name] = a
    return out


def quantize_file(src, dst) -> None:
    """`cromwell quantize IN OUT`: an fp32 weights file -> its int8 variant."""
    wf = load(src)
    if wf.quant != "f32":
        _fail(src, f"it is already quantized ({wf.quant})", "quantize the fp32 file instead")
    save(dst, quantize_tensors(wf.config, wf.tensors),
         {**wf.metadata, **metadata_for(wf.config, "int8", wf.tokenizer_sha256)})
