"""`cromwell train align`: a second stage that teaches the vision encoder the joint space
with the language side locked (locked-text contrastive tuning).

In the hybrid run the screenshot/code contrastive loss never left chance on the tiny
model: the vision encoder's pooled vectors were the same for every screenshot while the
language model was still learning what code is.  This stage starts from the trained
checkpoint, freezes everything but the vision encoder and its joint projection
(optionally re-initialised), embeds each snippet's code with the frozen text side, and
trains the image side with InfoNCE against those fixed targets: the image vectors move
to where the code already is.  Batches are screenshots rendered as in training
(data.image_batch), on a canvas of `side` pixels (default: the run's; larger ones keep
10-point code legible, and the exported model then reads screenshots at that side).  Checkpoints (OUT/align.pt) resume exactly; the result is written as
OUT/ckpt-aligned.pt, a checkpoint `cromwell train export --ckpt` takes.
"""
from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..model.tokenizer import Tokenizer
from . import data as D
from .corpus import read_jsonl
from .export import load_checkpoint
from .model import random_init
from .train import info_nce


@dataclass
class AlignConfig:
    out: str = "runs/tiny"
    corpus: str = "runs/corpus"
    tokenizer: str = "runs/tokenizer.json"
    steps: int = 400
    batch: int = 32
    lr: float = 2e-3
    warmup: int = 20
    temperature: float = 0.07
    reinit: bool = True
    side: int = 0               # screenshot side in pixels (0: the run's image_side)
    seed: int = 0
    ckpt_every: int = 50


def trainable(name: str) -> bool:
    return name.startswith(("vision.", "joint.vision."))


def run(c: AlignConfig, log=print) -> dict:
    out = Path(c.out)
    model, state = load_checkpoint(out / "ckpt.pt")
    side = c.side or state["train_config"].get("image_side", 96)
    tok = Tokenizer(c.tokenizer)
    if state["tokenizer_sha256"] != tok.sha256:
        raise ValueError(f"{out / 'ckpt.pt'} was trained with another tokenizer than {c.tokenizer}")
    if c.reinit:
        fresh = random_init(model.cfg, c.seed + 101).state_dict()
        model.load_state_dict({k: (fresh[k] if trainable(k) else v)
                               for k, v in model.state_dict().items()})
    params = []
    for name, p in model.named_parameters():
        p.requires_grad_(trainable(name))
        if trainable(name):
            params.append(p)
    opt = torch.optim.AdamW(params, lr=c.lr, betas=(0.9, 0.95), weight_decay=0.01)
    texts = [(r["path"], r["text"]) for r in read_jsonl(Path(c.corpus) / "train.jsonl")]
    rng = random.Random(c.seed + 7)
    step, hist = 0, []
    resume = out / "align.pt"
    if resume.exists():
        s = torch.load(resume, map_location="cpu", weights_only=False)
        model.load_state_dict(s["model"])
        opt.load_state_dict(s["opt"])
        step, hist = s["step"], s["hist"]
        r = s["rng"]
        rng.setstate((r[0], tuple(r[1]), r[2]))
        log(f"resumed alignment at step {step}")
    model.train()
    t0 = time.time()
    while step < c.steps:
        lr = c.lr * min(1.0, (step + 1) / c.warmup) * 0.5 * (1 + math.cos(math.pi * step / c.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        images, _, _, codes, code_mask, _ = D.image_batch(texts, tok, rng, c.batch, side, 512)
        with torch.no_grad():
            txt = model.embed_text(torch.as_tensor(codes), torch.as_tensor(code_mask))
        img = model.embed_image(torch.as_tensor(images))
        loss = info_nce(img, txt, c.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        with torch.no_grad():
            acc = float(((img @ txt.T).argmax(1) == torch.arange(len(img))).float().mean())
        hist.append({"step": step, "loss": loss.item(), "batch_top1": acc})
        if step % 10 == 0:
            recent = hist[-10:]
            log(f"align step {step}/{c.steps} loss {sum(h['loss'] for h in recent) / 10:.3f} "
                f"batch top-1 {sum(h['batch_top1'] for h in recent) / 10:.2f} "
                f"(chance {1 / c.batch:.2f}) {time.time() - t0:.0f} s")
        if step % c.ckpt_every == 0 or step == c.steps:
            tmp = resume.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                        "hist": hist, "rng": rng.getstate()}, tmp)
            os.replace(tmp, resume)
    # the side travels with the checkpoint: export writes it as the model's screenshot side
    aligned = {**state, "model": model.state_dict(),
               "train_config": {**state["train_config"], "image_side": side},
               "align": {"steps": step, "batch": c.batch, "side": side,
                         "final_loss": hist[-1]["loss"]}}
    torch.save(aligned, out / "ckpt-aligned.pt")
    last = hist[-20:]
    return {"steps": step, "loss": sum(h["loss"] for h in last) / len(last),
            "batch_top1": sum(h["batch_top1"] for h in last) / len(last),
            "checkpoint": str(out / "ckpt-aligned.pt")}
