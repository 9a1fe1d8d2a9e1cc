"""`cromwell train export`: a training checkpoint -> the engine's files, verified; and
`cromwell train import`: the engine's files -> a checkpoint to train on from.

Export writes OUT/model.safetensors (fp32), OUT/model-int8.safetensors and
OUT/tokenizer.json, then loads each in the engine and compares its logits with the twin's
on held-out-like text: fp32 within 1e-4 relative, int8 within 0.1 (a quantized model:
reported, and an error past the bound fails the export).

Import is the way back when a run's checkpoints are gone (they live outside git) but its
exported model is not, e.g. the shipped one: an int8 file's blocks are dequantized
(q * d, exactly the values the engine multiplies by), so re-exporting an unchanged part
gives the same int8 values again.  The checkpoint has no optimizer state and no data
position: a training run started from it warm-starts (fresh AdamW moments, the data
stream from its seed) at the step it names.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import torch

from ..model import CromwellVLJEPA
from ..model import weights as W
from ..model.config import PRESETS, ModelConfig, preset
from ..model.tokenizer import Tokenizer
from .model import CromwellTwin, export_safetensors, load_state
from .train import TrainConfig

SAMPLE = 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n    a, b = 0, 1\n'


def load_checkpoint(path) -> tuple[CromwellTwin, dict]:
    s = torch.load(path, map_location="cpu", weights_only=False)
    model = CromwellTwin(ModelConfig.from_dict(s["model_config"]))
    load_state(model, s["model"])
    return model.eval(), s


def export(ckpt, out, tokenizer, log=print, quants=("f32", "int8"), gptq_corpus=None,
           gptq_rows: int = 64) -> dict:
    """Write the variants in `quants` (f32 -> model.safetensors, int8 ->
    model-int8.safetensors) and tokenizer.json to `out`.  The exported context length is
    the rows the model was trained on: positions past them were never seen, so the server
    keeps its prompts within them.  `gptq_corpus`: the int8 weights are GPTQ-rounded
    (gptq.py) on `gptq_rows` rows of that corpus's training mixture instead of rounded to
    nearest."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    twin, state = load_checkpoint(ckpt)
    trained = state.get("train_config", {})
    if trained.get("seq_len"):
        twin.cfg = twin.cfg.replace(max_seq_len=int(trained["seq_len"]))
    extra = {"screenshot_side": str(trained.get("image_side") or twin.cfg.image_size),
             "train_step": str(state["step"]), "tokens_seen": str(state["tokens_seen"])}
    tok = Tokenizer(tokenizer)
    if state["tokenizer_sha256"] != tok.sha256:
        raise ValueError(f"{ckpt} was trained with another tokenizer than {tokenizer}")
    if Path(tokenizer).resolve() != (out / "tokenizer.json").resolve():
        shutil.copy(tokenizer, out / "tokenizer.json")
    report = {"step": state["step"], "tokens_seen": state["tokens_seen"],
              "params": twin.cfg.n_params(), "int8_rounding": "gptq" if gptq_corpus else "nearest"}
    rounding = None
    if gptq_corpus and "int8" in quants:
        from .gptq import calibration_rows, gptq_rounding
        rows = calibration_rows(Path(gptq_corpus), tok, twin.cfg.max_seq_len, gptq_rows)
        rounding = gptq_rounding(twin, rows, log)
    for quant, name in (("f32", "model.safetensors"), ("int8", "model-int8.safetensors")):
        if quant not in quants:
            continue
        path = out / name
        export_safetensors(twin, path, quant, tok.sha256, extra, rounding)
        err = same_logits(twin, path, tok, quant)
        report[f"{quant}_rel_err"] = err
        report[f"{quant}_mb"] = round(path.stat().st_size / 2**20, 2)
        log(f"{path}: {report[f'{quant}_mb']} MiB, logits vs twin rel err {err:.2e}")
    return report


BOUNDS = {"f32": 1e-4, "int8": 0.1}  # the engine's int8 path also rounds activations to int8


def same_logits(twin, path, tok, quant: str) -> float:
    """The relative difference between the twin's logits and the engine's with the weights
    file at `path` on SAMPLE; ValueError past the quant's bound."""
    ids = tok.encode(SAMPLE)
    with torch.no_grad():
        ref = twin(torch.as_tensor([ids]), jepa=False).logits[0].double().numpy()
    model = CromwellVLJEPA.load(path)
    got = model.forward(ids, model.new_cache(len(ids)))
    err = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))
    if err > BOUNDS[quant]:
        raise ValueError(f"{path}: engine logits differ from the twin by {err:.3g} "
                         f"(> {BOUNDS[quant]})")
    return err


def _preset_of(cfg: ModelConfig, path) -> str:
    """The training preset whose shapes `cfg` has (vocabulary and context aside)."""
    for name in PRESETS:
        if preset(name).replace(vocab_size=cfg.vocab_size, max_seq_len=cfg.max_seq_len) == cfg:
            return name
    raise ValueError(f"{path}: its config matches none of the presets {', '.join(PRESETS)}")


def import_weights(weights, ckpt, tokenizer, step: int | None = None,
                   tokens_seen: int | None = None, log=print) -> dict:
    """An engine weights file (fp32 or int8) -> a training checkpoint at `ckpt` (a warm
    start: no optimizer state, no data position), checked by comparing the twin's logits
    with the engine's on the same file.  The step and tokens seen are the file's own
    (exports record them) unless given."""
    from .. import kernels

    wf = W.load(weights)
    tok = Tokenizer(tokenizer)
    if wf.tokenizer_sha256 and wf.tokenizer_sha256 != tok.sha256:
        raise ValueError(f"{weights} was exported with another tokenizer than {tokenizer}")
    arrays = {}
    for name, (shape, linear) in W.fp32_tensors(wf.config).items():
        if wf.quant == "int8" and W.is_quantizable(shape, linear):
            arrays[name] = kernels.dequantize_q8_ref(wf.tensors[name + ".q"], wf.tensors[name + ".d"])
        else:
            arrays[name] = np.array(wf.tensors[name], dtype=np.float32)
    twin = CromwellTwin(wf.config)
    twin.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()})
    err = same_logits(twin.eval(), weights, tok, wf.quant)
    side = int(wf.metadata.get("screenshot_side") or wf.config.image_size)
    step = int(wf.metadata.get("train_step", 0)) if step is None else step
    tokens_seen = int(wf.metadata.get("tokens_seen", 0)) if tokens_seen is None else tokens_seen
    train_config = TrainConfig(model=_preset_of(wf.config, weights),
                               seq_len=wf.config.max_seq_len, image_side=side)
    state = {"model": twin.state_dict(), "model_config": wf.config.to_dict(),
             "train_config": dataclasses.asdict(train_config),
             "step": step, "tokens_seen": tokens_seen, "elapsed": 0.0,
             "tokenizer_sha256": tok.sha256, "imported_from": str(weights)}
    ckpt = Path(ckpt)
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    tmp = ckpt.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(ckpt)
    log(f"{ckpt}: imported from {weights} ({wf.quant}), twin vs engine logits rel err {err:.2e}")
    return {"checkpoint": str(ckpt), "quant": wf.quant, "rel_err": err, "step": step,
            "params": wf.config.n_params(), "screenshot_side": side}
