"""`cromwell train align`: a second stage that teaches the vision encoder to read code and
to meet it in the joint space, with the language side locked (locked-text tuning).

In the hybrid run the screenshot/code contrastive loss never left chance on the tiny
model: the vision encoder's pooled vectors were the same for every screenshot while the
language model was still learning what code is.  This stage starts from the trained
checkpoint, freezes the language side, re-initialises the vision encoder and its joint
projection, and trains them in two phases:

1. Reading (`read_steps`): the reading head (`vision.read`, exported with the model, see
   model/reading.py) names the character under each 4x4 patch, from the cells where the
   renderer drew every glyph (screenshots.char_labels).  It trains on window-aligned
   strips of the screenshots where they hold text, read with the whole canvas's
   positions: a strip costs a sixth of a canvas, so there are six times as many updates
   for the same time, and updates were what the reading lacked (a whole-canvas run read
   10% of the characters after 80 steps; strips read 42% after 290).
2. Alignment: whole screenshots, InfoNCE between each screenshot's pooled vector and its
   code's, beside the reading loss.

First the retrieval metric is set (`whitening`): the text side's pooled vectors of the
trained language model crowd into a narrow cone (mean pairwise cosine 0.78 among 100
held-out functions), and a 5% character noise in the code already moved 68 of those 100
off their own vector.  A screenshot is ranked by the code it reads, and a reading gets
some characters wrong, so the metric whitens against that: the covariance of what a
simulated misreading (`reading_noise`) moves a function's vector by, with a tenth of the
code's own covariance.  Both sides are compared through that map (`cromwell train
metric` sets it again on an aligned checkpoint); with `learn_metric` its matrix then
trains with the image side, so the text side can weigh what a screenshot shows.

Screenshots are drawn on a canvas of `side` pixels (default: the run's; larger ones keep
10-point code legible, and the exported model then reads screenshots at that side).
Checkpoints (OUT/align.pt) resume exactly; the result is written as
OUT/ckpt-aligned.pt, a checkpoint `cromwell train export --ckpt` takes.
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
import torch.nn.functional as F

from ..model.reading import N_CLASSES
from ..model.tokenizer import Tokenizer
from . import data as D
from .corpus import read_jsonl
from .export import load_checkpoint
from .model import random_init
from .train import info_nce


def text_means(model, ids, mask) -> torch.Tensor:
    """The frozen text side's mean joint state of each row (before the metric): (B, J)."""
    with torch.no_grad():
        return model.text_mean(torch.as_tensor(ids), torch.as_tensor(mask))


READ_ALPHABET = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                 "_.,:;()[]'\"=+-*/ ")


def reading_noise(code: str, rng: random.Random, swap: float = 0.12, insert: float = 0.03,
                  drop: float = 0.03) -> str:
    """`code` as a screenshot's reading may give it back: each character of a line swapped
    for another (`swap`), dropped (`drop`), or followed by a stray one (`insert`); set
    for a reading head that gets 0.75-0.8 of held-out renders' code right (difflib's
    ratio; the shipped one gets 0.84)."""
    out = []
    for ch in code:
        if ch == "\n":
            out.append(ch)
            continue
        r = rng.random()
        if r >= drop:
            out.append(rng.choice(READ_ALPHABET) if r < drop + swap else ch)
        if rng.random() < insert:
            out.append(rng.choice(READ_ALPHABET))
    return "".join(out)


CODE_SPREAD = 0.1   # weight of the code's own covariance beside the reading noise's
FLOOR = 1e-3        # and of the identity, relative to the noise's mean variance


def whitening(model, pool, tok, rng: random.Random, n: int = 3000, batch: int = 64,
              max_tokens: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """The retrieval metric (center [J], whiten [J, J]) from the text side's mean joint
    states of n training functions that fit a screenshot and of a misread copy of each
    (reading_noise): centred on the functions' mean, then whitened against the noise a
    misreading adds, (C_noise + CODE_SPREAD C_code + FLOOR I)^-1/2.  Directions that
    reading mistakes move are shrunk and those only other code moves are stretched, so
    a screenshot's reading lands nearest its own code (measured on 100 held-out renders
    apart from the evaluation's, with one reading head: 94% find their own function
    first among the 100, against 83% when the metric whitened the code alone)."""
    codes = [rng.choice(pool) for _ in range(n)]
    misread = [reading_noise(c, rng) for c in codes]

    def means(texts):
        out = []
        for i in range(0, n, batch):
            ids, mask = D.pad_rows([tok.encode(c)[:max_tokens] for c in texts[i:i + batch]],
                                   tok.special("pad"))
            out.append(text_means(model, ids, mask))
        return torch.cat(out).double()  # (n, J)

    clean, noisy = means(codes), means(misread)
    noise = torch.cov((noisy - clean).T)
    cov = noise + CODE_SPREAD * torch.cov(clean.T)
    cov = cov + FLOOR * float(noise.diagonal().mean()) * torch.eye(len(cov), dtype=cov.dtype)
    evals, evecs = torch.linalg.eigh(cov)
    whiten = evecs @ torch.diag(evals.rsqrt()) @ evecs.T  # (J, J), symmetric
    return clean.mean(0).float(), whiten.float()


def set_metric(ckpt: Path, corpus: str, tokenizer: str, n: int = 3000, seed: int = 0,
               pool_files: int = 3000, log=print) -> None:
    """Set the retrieval metric (whitening) of a checkpoint in place, e.g. an aligned one
    whose metric was set another way; the text side is unchanged."""
    model, state = load_checkpoint(ckpt)
    tok, pool = _tokenizer_and_pool(ckpt, state, tokenizer, corpus, seed, pool_files)
    _set_metric(model, pool, tok, seed, n)
    state["model"] = model.state_dict()
    tmp = ckpt.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, ckpt)
    log(f"{ckpt}: retrieval metric set from {n} training functions and misread copies")


def _set_metric(model, pool, tok, seed: int, n: int) -> None:
    """The model's retrieval metric set by `whitening` from n functions of the pool."""
    center, whiten = whitening(model, pool, tok, random.Random(seed + 3), n=n)
    model.joint.center.copy_(center)
    model.joint.whiten.copy_(whiten)


def _tokenizer_and_pool(ckpt, state, tokenizer: str, corpus: str, seed: int, files: int):
    """The run's tokenizer (checked against the checkpoint's) and the pool of training
    functions its screenshots and metric draw from."""
    tok = Tokenizer(tokenizer)
    if state["tokenizer_sha256"] != tok.sha256:
        raise ValueError(f"{ckpt} was trained with another tokenizer than {tokenizer}")
    texts = [(r["path"], r["text"]) for r in read_jsonl(Path(corpus) / "train.jsonl")]
    return tok, D.snippet_pool(texts, random.Random(seed + 5), files)


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
    whiten: bool = True         # set the retrieval metric from the text side first
    metric_functions: int = 3000  # functions whose text-side statistics set it
    learn_metric: bool = True   # then train its map with the image side
    max_minutes: float = 1e9    # stop (and write the aligned checkpoint) after this long
    read_steps: int = 0         # first steps: the reading loss alone, on strips of text
    strip_rows: int = 16        # a strip's height in patches (a multiple of the window)
    strips: int = 32            # strips per reading step
    pool_files: int = 3000      # training files whose functions the screenshots show
    seed: int = 0
    ckpt_every: int = 50


def trainable(name: str) -> bool:
    return name.startswith(("vision.", "joint.vision."))


BACKGROUND_WEIGHT = 0.1  # most patches are background; the characters carry the signal


def ocr_batch(pool, tok, rng: random.Random, n: int, side: int, max_tokens: int = 512):
    """n screenshots of functions of the pool [n, side, side, 3], the character under each
    patch [n, side/4, side/4] (screenshots.char_labels), and the code's tokens for the
    text side [n, L] + mask."""
    from .screenshots import char_labels

    shots = [D.screenshot_of(rng.choice(pool), rng, side) for _ in range(n)]
    ids, mask = D.pad_rows([tok.encode(s.code)[:max_tokens] for s in shots], tok.special("pad"))
    return (np.stack([s.canvas for s in shots]),
            np.stack([char_labels(s.glyphs, s.scale, side) for s in shots]), ids, mask)


def strip_batch(pool, rng: random.Random, n: int, side: int, rows: int, window: int,
                per_shot: int = 3):
    """n strips of `rows` patch rows cut from screenshots where they hold text, at window
    boundaries (so attention sees the windows the whole canvas has), up to per_shot from
    each screenshot (a render costs more than the strips' forward): pixels
    [n, rows * 4, side, 3], characters [n, rows, side / 4], and the row each starts at."""
    from .screenshots import char_labels

    images, labels, starts = [], [], []
    while len(images) < n:
        s = D.screenshot_of(rng.choice(pool), rng, side)
        lab = char_labels(s.glyphs, s.scale, side)
        bands = [r for r in range(0, side // 4 - rows + 1, window) if lab[r:r + rows].any()]
        for r in rng.sample(bands, min(per_shot, len(bands), n - len(images))):
            images.append(s.canvas[r * 4:(r + rows) * 4])
            labels.append(lab[r:r + rows])
            starts.append(r)
    return np.stack(images), np.stack(labels), starts


def ocr_loss(head, vision_tokens, labels):
    """Cross-entropy of the character under each patch, background patches down-weighted."""
    logits = head(vision_tokens.float()).reshape(-1, N_CLASSES)
    target = labels.reshape(-1)
    ce = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    w = torch.where(target == 0, BACKGROUND_WEIGHT, 1.0)
    hit = (logits.argmax(-1) == target) & (target != 0)
    return (ce * w).sum() / w.sum(), float(hit.sum() / (target != 0).sum().clamp_min(1))


def run(c: AlignConfig, log=print) -> dict:
    out = Path(c.out)
    model, state = load_checkpoint(out / "ckpt.pt")
    side = c.side or state["train_config"].get("image_side", 96)
    tok, pool = _tokenizer_and_pool(out / "ckpt.pt", state, c.tokenizer, c.corpus, c.seed,
                                    c.pool_files)
    log(f"{len(pool)} functions that fit a screenshot in {c.pool_files} training files")
    if c.whiten and not (out / "align.pt").exists():  # a resumed run has its own
        _set_metric(model, pool, tok, c.seed, c.metric_functions)
        log(f"retrieval metric set from {c.metric_functions} training functions")
    if c.reinit:
        fresh = random_init(model.cfg, c.seed + 101).state_dict()
        model.load_state_dict({k: (fresh[k] if trainable(k) else v)
                               for k, v in model.state_dict().items()})
    params = []
    for name, p in model.named_parameters():
        p.requires_grad_(trainable(name))
        if trainable(name):
            params.append(p)
    head = model.vision.read  # the reading head, exported with the model
    if c.learn_metric:  # the metric's map adapts to what the screenshots can show
        params.append(model.joint.whiten.requires_grad_(True))
    opt = torch.optim.AdamW(params, lr=c.lr, betas=(0.9, 0.95), weight_decay=0.01)
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
    while step < c.steps and time.time() - t0 < c.max_minutes * 60:
        lr = c.lr * min(1.0, (step + 1) / c.warmup) * 0.5 * (1 + math.cos(math.pi * step / c.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        if step < c.read_steps:  # reading alone, on strips: many cheap updates
            images, labels, starts = strip_batch(pool, rng, c.strips, side, c.strip_rows,
                                                 model.cfg.window_size)
            v = model.vision(torch.as_tensor(images), strip=(side // 4, starts))
            ocr, read = ocr_loss(head, v, torch.as_tensor(labels))
            loss, measured = ocr, {"loss": float("nan"), "batch_top1": float("nan")}
        else:
            images, labels, codes, code_mask = ocr_batch(pool, tok, rng, c.batch, side)
            txt = F.normalize(model.joint.metric(text_means(model, codes, code_mask)), dim=-1)
            v = model.vision(torch.as_tensor(images))
            img = model.pool_image(v)
            nce = info_nce(img, txt, c.temperature)
            ocr, read = ocr_loss(head, v, torch.as_tensor(labels))
            loss = nce + c.ocr_weight * ocr
            with torch.no_grad():
                acc = float(((img @ txt.T).argmax(1) == torch.arange(len(img))).float().mean())
            measured = {"loss": nce.item(), "batch_top1": acc}
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        hist.append({"step": step, **measured, "ocr": ocr.item(), "chars_read": read})
        _report(step, c, hist, t0, log)
        _checkpoint(step, c, resume, model, opt, hist, rng)
    # the side travels with the checkpoint: export writes it as the model's screenshot side
    aligned = {**state, "model": model.state_dict(),
               "train_config": {**state["train_config"], "image_side": side},
               "align": {"steps": step, "batch": c.batch, "side": side,
                         "final_loss": hist[-1]["loss"]}}
    torch.save(aligned, out / "ckpt-aligned.pt")
    last = hist[-20:]

    def mean(k):  # None when no step measured it (only reading)
        vals = [h[k] for h in last if h[k] == h[k]]
        return sum(vals) / len(vals) if vals else None
    return {"steps": step, "loss": mean("loss"), "batch_top1": mean("batch_top1"),
            "chars_read": mean("chars_read"), "checkpoint": str(out / "ckpt-aligned.pt")}


def _report(step, c: AlignConfig, hist, t0, log, every: int = 10) -> None:
    if step % every:
        return
    recent = hist[-every:]

    def mean(k):
        return sum(h[k] for h in recent) / len(recent)
    phase = "reading" if step <= c.read_steps else "align"
    log(f"{phase} step {step}/{c.steps} InfoNCE {mean('loss'):.3f} "
        f"(chance {math.log(c.batch):.3f}) batch top-1 {mean('batch_top1'):.2f} "
        f"(chance {1 / c.batch:.2f}) characters {mean('ocr'):.3f} read "
        f"{mean('chars_read'):.2f} {time.time() - t0:.0f} s")


def _checkpoint(step, c: AlignConfig, path, model, opt, hist, rng) -> None:
    if step % c.ckpt_every and step != c.steps:
        return
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                "step": step, "hist": hist, "rng": rng.getstate()}, tmp)
    os.replace(tmp, path)
