"""`cromwell train export`: a training checkpoint -> the engine's files, verified.

Writes OUT/model.safetensors (fp32), OUT/model-int8.safetensors and OUT/tokenizer.json,
then loads each in the engine and compares its logits with the twin's on held-out-like
text: fp32 within 1e-4 relative, int8 within 0.1 (a quantized model: reported, and an
error past the bound fails the export).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from ..model import CromwellVLJEPA
from ..model.config import ModelConfig
from ..model.tokenizer import Tokenizer
from .model import CromwellTwin, export_safetensors

SAMPLE = 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n    a, b = 0, 1\n'


def load_checkpoint(path) -> tuple[CromwellTwin, dict]:
    s = torch.load(path, map_location="cpu", weights_only=False)
    model = CromwellTwin(ModelConfig.from_dict(s["model_config"]))
    model.load_state_dict(s["model"])
    return model.eval(), s


def export(ckpt, out, tokenizer, log=print, quants=("f32", "int8")) -> dict:
    """Write the variants in `quants` (f32 -> model.safetensors, int8 ->
    model-int8.safetensors) and tokenizer.json to `out`.  The exported context length is
    the rows the model was trained on: positions past them were never seen, so the server
    keeps its prompts within them."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    twin, state = load_checkpoint(ckpt)
    trained = state.get("train_config", {})
    if trained.get("seq_len"):
        twin.cfg = twin.cfg.replace(max_seq_len=int(trained["seq_len"]))
    extra = {"screenshot_side": str(trained.get("image_side") or twin.cfg.image_size)}
    tok = Tokenizer(tokenizer)
    if state["tokenizer_sha256"] != tok.sha256:
        raise ValueError(f"{ckpt} was trained with another tokenizer than {tokenizer}")
    if Path(tokenizer).resolve() != (out / "tokenizer.json").resolve():
        shutil.copy(tokenizer, out / "tokenizer.json")
    ids = tok.encode(SAMPLE)
    with torch.no_grad():
        ref = twin(torch.as_tensor([ids]), jepa=False).logits[0].double().numpy()
    report = {"step": state["step"], "tokens_seen": state["tokens_seen"],
              "params": twin.cfg.n_params()}
    for quant, name, bound in (("f32", "model.safetensors", 1e-4),
                               ("int8", "model-int8.safetensors", 0.1)):
        if quant not in quants:
            continue
        path = out / name
        export_safetensors(twin, path, quant, tok.sha256, extra)
        model = CromwellVLJEPA.load(path)
        got = model.forward(ids, model.new_cache(len(ids)))
        err = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))
        report[f"{quant}_rel_err"] = err
        report[f"{quant}_mb"] = round(path.stat().st_size / 2**20, 2)
        log(f"{path}: {report[f'{quant}_mb']} MiB, logits vs twin rel err {err:.2e}")
        if err > bound:
            raise ValueError(f"{path}: engine logits differ from the twin by {err:.3g} (> {bound})")
    return report
