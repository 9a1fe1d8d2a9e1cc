"""`cromwell train align`: a second stage that teaches the vision encoder the joint space
with the language side locked (locked-text contrastive tuning).

In the hybrid run the screenshot/code contrastive loss never left chance on the tiny
model: the vision encoder's pooled vectors were the same for every screenshot while the
language model was still learning what code is.  This stage starts from the trained
checkpoint, freezes everything but the vision encoder and its joint projection
(optionally re-initialised), embeds each snippet's code with the frozen text side, and
trains the image side with InfoNCE against those fixed targets: the image vectors move
to where the code already is.  A reading loss guides the image side meanwhile: a linear
head on each vision token names the character under that patch (the renderer knows
where it drew every glyph, screenshots.char_labels), a dense signal that teaches the
encoder to see characters long before the contrastive loss alone would.  The head is
used only here.  Screenshots are drawn as in training on a canvas of `side` pixels
(default: the run's; larger ones keep 10-point code legible, and the exported model then
reads screenshots at that side).  Checkpoints (OUT/align.pt) resume exactly; the result
is written as OUT/ckpt-aligned.pt, a checkpoint `cromwell train export --ckpt` takes.
"""
from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
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
    ocr_weight: float = 1.0     # weight of the per-patch character loss (0: InfoNCE alone)
    seed: int = 0
    ckpt_every: int = 50


def trainable(name: str) -> bool:
    return name.startswith(("vision.", "joint.vision."))


N_CHAR_CLASSES = 96  # screenshots.char_class: space/background, "!".."~", anything else
BACKGROUND_WEIGHT = 0.1  # most patches are background; the characters carry the signal


def ocr_batch(texts, tok, rng: random.Random, n: int, side: int, max_tokens: int = 512):
    """n screenshots [n, side, side, 3], the character under each patch [n, side/4, side/4]
    (screenshots.char_labels), and the code's tokens for the text side [n, L] + mask."""
    from .screenshots import char_labels

    shots = [D.draw_screenshot(texts, rng, side) for _ in range(n)]
    ids, mask = D.pad_rows([tok.encode(s.code)[:max_tokens] for s in shots], tok.special("pad"))
    return (np.stack([s.canvas for s in shots]),
            np.stack([char_labels(s.glyphs, s.scale, side) for s in shots]), ids, mask)


def ocr_loss(head, vision_tokens, labels):
    """Cross-entropy of the character under each patch, background patches down-weighted."""
    logits = head(vision_tokens.float()).reshape(-1, N_CHAR_CLASSES)
    target = labels.reshape(-1)
    ce = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    w = torch.where(target == 0, BACKGROUND_WEIGHT, 1.0)
    hit = (logits.argmax(-1) == target) & (target != 0)
    return (ce * w).sum() / w.sum(), float(hit.sum() / (target != 0).sum().clamp_min(1))


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
    # a reading head on the vision tokens, used only here (not part of the exported model)
    head = torch.nn.Linear(model.cfg.vision_dim, N_CHAR_CLASSES)
    params += list(head.parameters())
    opt = torch.optim.AdamW(params, lr=c.lr, betas=(0.9, 0.95), weight_decay=0.01)
    texts = [(r["path"], r["text"]) for r in read_jsonl(Path(c.corpus) / "train.jsonl")]
    rng = random.Random(c.seed + 7)
    step, hist = 0, []
    resume = out / "align.pt"
    if resume.exists():
        s = torch.load(resume, map_location="cpu", weights_only=False)
        model.load_state_dict(s["model"])
        head.load_state_dict(s["head"])
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
        images, labels, codes, code_mask = ocr_batch(texts, tok, rng, c.batch, side)
        with torch.no_grad():
            txt = model.embed_text(torch.as_tensor(codes), torch.as_tensor(code_mask))
        v = model.vision(torch.as_tensor(images))
        img = model.pool_image(v)
        nce = info_nce(img, txt, c.temperature)
        ocr, read = ocr_loss(head, v, torch.as_tensor(labels))
        loss = nce + c.ocr_weight * ocr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        with torch.no_grad():
            acc = float(((img @ txt.T).argmax(1) == torch.arange(len(img))).float().mean())
        hist.append({"step": step, "loss": nce.item(), "ocr": ocr.item(), "chars_read": read,
                     "batch_top1": acc})
        if step % 10 == 0:
            recent = hist[-10:]

            def mean(k):
                return sum(h[k] for h in recent) / len(recent)
            log(f"align step {step}/{c.steps} InfoNCE {mean('loss'):.3f} "
                f"(chance {math.log(c.batch):.3f}) batch top-1 {mean('batch_top1'):.2f} "
                f"(chance {1 / c.batch:.2f}) characters {mean('ocr'):.3f} read "
                f"{mean('chars_read'):.2f} {time.time() - t0:.0f} s")
        if step % c.ckpt_every == 0 or step == c.steps:
            tmp = resume.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "head": head.state_dict(),
                        "opt": opt.state_dict(), "step": step,
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
            "chars_read": sum(h["chars_read"] for h in last) / len(last),
            "checkpoint": str(out / "ckpt-aligned.pt")}
