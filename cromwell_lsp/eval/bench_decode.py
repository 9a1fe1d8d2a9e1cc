"""`cromwell bench decode`: the engine end to end on one config and quantization.

Weights: a trained file when --weights is given, otherwise random weights of the config
(N(0, 0.02), norms 1), written once by a child process into a cache folder
(~/.cache/cromwell/bench, or $XDG_CACHE_HOME), so this process's peak RSS is the
engine's own (the mapped weights count as they are touched).

Measured, in this order, on one process:
  load_ms             map the file and build the engine (the OS page cache is warm after
                      the first run; the value is the engine's own start-up)
  prefill_tok_s       one forward over 512 tokens (fewer when the model's context is
                      shorter: prefill_tokens); trained weights read real code (the
                      keystroke benchmark's file), random weights random tokens
  decode_tok_s        64 single-token forwards after that prefill (text only)
  vision_ms           the vision encoder on a 256x256 image (vljepa configs)
  decode_image_tok_s  64 single-token forwards on a sequence with that image attached
  spec_decode_tok_s   greedy generation of 64 tokens with JEPA self-speculative decoding,
  spec_acceptance     and the share of drafted tokens that were accepted
  peak_rss_mb         the process's peak resident memory
Random weights make speculative acceptance near zero: that number means something only
with trained weights.
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .. import kernels

PREFILL, DECODE = 512, 64


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "cromwell" / "bench"


def random_weights(config: str, quant: str, seed: int = 0) -> Path:
    """Path of a random-weight file for a preset (made by a child process if missing)."""
    path = cache_dir() / f"{config}-{quant}-seed{seed}.safetensors"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        code = ("import sys; from cromwell_lsp.eval.bench_decode import _write_random;"
                f"_write_random({config!r}, {quant!r}, {seed}, sys.argv[1])")
        subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    return path


def _write_random(config: str, quant: str, seed: int, path: str) -> None:
    from ..model.config import preset
    from ..model.weights import fp32_tensors, save_model

    cfg = preset(config)
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, (shape, _) in fp32_tensors(cfg).items():
        if "norm" in name:
            tensors[name] = np.ones(shape, np.float32)
        else:
            tensors[name] = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
    tmp = path + ".part"
    save_model(tmp, cfg, tensors, quant)
    os.replace(tmp, path)


def _rate(n, seconds):
    return round(n / seconds, 2) if seconds > 0 else None


def run(config: str = "tiny", quant: str = "f32", image: bool = False, weights: str | None = None,
        log=print) -> dict:
    from ..model import CromwellVLJEPA
    from ..model.generation import GenerationConfig, GenerationStats, generate_ids

    path = Path(weights) if weights else random_weights(config, quant)
    t0 = time.perf_counter()
    model = CromwellVLJEPA.load(path)
    load_ms = (time.perf_counter() - t0) * 1e3
    cfg = model.config
    rng = np.random.default_rng(1)
    n_prompt = min(PREFILL, cfg.max_seq_len - DECODE - 8)  # a trained model's context may be 512
    if model.tokenizer is not None:  # trained weights: real code, so drafts can be accepted
        from .bench_keystrokes import DEFAULT_FILE  # the same file, outside the training data

        prompt = model.tokenizer.encode(DEFAULT_FILE.read_text(encoding="utf-8"))[:n_prompt]
    else:
        prompt = rng.integers(16, cfg.vocab_size, n_prompt).tolist()
    out = {"config": config if not weights else str(path), "quant": model.weights.quant,
           "threads": kernels.threads(), "isa": kernels.isa(), "params": cfg.n_params(),
           "load_ms": round(load_ms, 2)}

    log("prefill ...")
    cache = model.new_cache(PREFILL + DECODE + 8)
    model.forward(prompt[:8], model.new_cache(16))  # warm-up: first-touch of weight pages
    t = time.perf_counter()
    logits = model.forward(prompt, cache, last_only=True)
    out["prefill_tok_s"] = _rate(len(prompt), time.perf_counter() - t)
    out["prefill_tokens"] = len(prompt)
    out["decode_tok_s"] = _decode_rate(model, cache, int(np.argmax(logits[-1])), log)

    out["vision_ms"] = out["decode_image_tok_s"] = None
    if image and cfg.arch == "vljepa":
        pixels = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
        model.engine.encode_image(pixels)  # warm-up
        t = time.perf_counter()
        state = model.engine.encode_image(pixels)
        out["vision_ms"] = round((time.perf_counter() - t) * 1e3, 2)
        cache = model.new_cache(64 + DECODE + 8)
        logits = model.forward(prompt[:64], cache, state, last_only=True)
        out["decode_image_tok_s"] = _decode_rate(model, cache, int(np.argmax(logits[-1])), log)

    out["spec_decode_tok_s"] = out["spec_acceptance"] = None
    if cfg.arch == "vljepa":
        log("speculative decode ...")
        stats = GenerationStats()
        ids = list(generate_ids(model.engine, model.new_cache(PREFILL + DECODE + 8), prompt,
                                GenerationConfig(max_tokens=DECODE, speculative=True),
                                stats=stats))
        out["spec_decode_tok_s"] = _rate(len(ids), stats.decode_s)
        out["spec_acceptance"] = round(stats.acceptance, 4)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def _decode_rate(model, cache, tok: int, log) -> float:
    log("decode ...")
    t = time.perf_counter()
    for _ in range(DECODE):
        logits = model.forward([tok], cache, last_only=True)
        tok = int(np.argmax(logits[-1]))
    return _rate(DECODE, time.perf_counter() - t)
