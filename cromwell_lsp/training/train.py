"""`cromwell train run`: the training loop of the PyTorch twin (nanoGPT's train.py shape).

Loss per step: lm_weight * LM + jepa_weight * JEPA (0.7 / 0.3, the seed's hybrid loss) on
packed text rows of the task mixture; every `image_every`-th step is instead an image
batch (screenshot -> code LM loss) plus a contrastive loss that pulls each screenshot's
joint-space vector towards its code's (InfoNCE, both directions).

AdamW (no decay on norms, biases and embeddings' gains), linear warmup then cosine decay
to min_lr, gradient clipping, bf16 autocast, optional torch.compile, CUDA when present,
DistributedDataParallel when started by torchrun (each rank reads its own share of the
files).  Every `ckpt_every` steps: a checkpoint (model, optimizer, step, data stream
position, RNG states) written atomically; a run started again with the same --out
resumes exactly.  Every `eval_every` steps: validation loss per task and bits per byte
on held-out standard-library files; the log goes to log.jsonl and log.csv, the curves to
loss.png.
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import hashlib
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..model.config import preset
from ..model.tokenizer import Tokenizer
from . import data as D
from . import tasks
from .corpus import read_jsonl, source_of
from .model import CromwellTwin, jepa_loss, load_state, random_init


@dataclass
class TrainConfig:
    model: str = "tiny"
    corpus: str = "runs/corpus"
    tokenizer: str = "runs/tokenizer.json"
    out: str = "runs/tiny"
    seq_len: int = 512            # the server's prompts are up to 512 tokens (tiny)
    batch_size: int = 8
    steps: int = 3000
    lr: float = 2e-3
    min_lr: float = 2e-4
    warmup: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    lm_weight: float = 0.7
    jepa_weight: float = 0.3
    jepa_ramp: int = 540          # the JEPA weight rises from 0 over this many steps
    image_every: int = 5          # 0: text only
    image_batch: int = 8
    image_side: int = 96
    align_weight: float = 0.5
    eval_every: int = 250
    eval_rows: int = 16
    bpb_bytes: int = 200_000      # held-out standard-library text scored for bits per byte
    ckpt_every: int = 50
    seed: int = 0
    compile: bool = False
    bf16: bool = True
    max_minutes: float = 0.0      # stop (after a checkpoint) when this much time has passed
    budget_minutes: float = 0.0   # end the whole schedule within this much training time
                                  # (across resumes): `steps` cut to what the measured pace
                                  # allows (Trainer._plan)
    blocks_per_file: int = D.BLOCKS_PER_FILE  # bare-start blocks drawn from each file
    source_weights: str = ""      # "algorithms=4,transformers=0.3": a source's files this many times an epoch
    block_cap: int = 0            # a block opening shared by more blocks than this is drawn less
                                  # (data.TextStream._keep_block); 0: every block as it comes
    ul_every: int = 0             # every this many steps, unlikelihood on the model's own loops
    ul_weight: float = 1.0        # (training/unlikelihood.py): its weight beside the LM loss,
    ul_batch: int = 8             # how many bare starts it completes,
    ul_tokens: int = 48           # and how many tokens each; a repeating token is pushed
    ul_margin: float = 1.0        # this many nats below the best other one
    ul_rules: str = ""            # "repeat,trivial": only these marks (unlikelihood.RULES); DEFAULT_RULES when empty
    ul_kinds: str = ""            # "try": its starts of these blocks only (evaluate.START_KINDS); any when empty
    ul_kinds_share: float = 1.0   # that share of each batch's starts from ul_kinds, the rest from any block
    int8_aware: int = 0           # 1: each step's forward sees the linear weights as the int8
                                  # file will hold them (int8_view; straight-through)
    anchor_kl: float = 0.0        # weight of KL(the run's starting model || the model) on each
                                  # text batch (anchor_kl): a short leg moves what it aims at
                                  # and as little else as it can
    own_data: str = ""            # the model's own working completions (`train own`), and
    own_per_file: int = 0         # how many of them go with each file's examples
    own_min_ratio: float = 0.0    # those at least this like their file's real block
    prefer_data: str = ""         # preference pairs (prefer.py) from a `train own` file:
    prefer_every: int = 0         # every this many steps a DPO term on
    prefer_batch: int = 8         # this many pairs,
    prefer_weight: float = 1.0    # weighted so beside the other losses,
    prefer_beta: float = 0.1      # with this beta (how far from the reference it may move);
    prefer_nll: float = 0.0       # plus this times the chosen sides' next-token loss
    prefer_only: bool = False     # or every step the DPO term alone (no text or image batch)
    prefer_real: bool = False     # also the real block over a greedy one-line return (prefer.load)
    prefer_handlers: int = 0      # and this many real `try` statements over their bodies alone
                                  # (prefer.handler_pairs, from the training files)


# ---- helpers --------------------------------------------------------------------------
def bf16_is_fast(device: str) -> bool:
    """Does bf16 autocast speed training up on this device?  On a GPU, yes.  On a CPU
    without AVX-512, PyTorch's bf16 matmul falls back to a reference kernel: a 512x256 by
    256x1024 product took 217 ms against 4.3 ms in fp32 on an AVX2-only EPYC, and a
    training step about 50x longer; there the run trains in fp32."""
    if device.startswith("cuda"):
        return True
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


PLAN_WARM = 5       # a session's first steps (slower: allocations, threads) are not timed
PLAN_AFTER = 20     # a budgeted run sets its step count after this many
PLAN_EVERY = 50     # and sets it again every this many steps after
PLAN_RECENT = 100   # at the pace of the last this many steps
PLAN_MARGIN = 1.03  # the measured pace, padded for checkpoints and a noisy machine


class Pace:
    """Seconds a training step takes on this machine now, validation passes left out: the
    pace over the last `recent` steps (over all of the session's steps after its first
    PLAN_WARM, which allocations and thread start-up slow and are not timed, while there
    are fewer).  A shared machine that slows down late is seen within `recent` steps
    instead of being diluted by an hour of faster ones, and one that was slow at the
    start (other work sharing the cores) is not held to that pace once it is over."""

    def __init__(self, recent: int = PLAN_RECENT):
        self.recent = recent
        self.points: collections.deque = collections.deque()  # (time, step, validation s so far)

    def note(self, now: float, step: int, eval_s: float) -> None:
        self.points.append((now, step, eval_s))
        while len(self.points) > 1 and step - self.points[1][1] >= self.recent:
            self.points.popleft()

    def step_s(self) -> float | None:
        """None until two points (the warm steps and one more) were noted."""
        if len(self.points) < 2:
            return None
        (t0, s0, e0), (t1, s1, e1) = self.points[0], self.points[-1]
        return max(t1 - t0 - (e1 - e0), 1e-9) / max(s1 - s0, 1)


def eta_minutes(now: float, step: int, steps: int, session: tuple[float, int],
                pace: Pace, eval_s: float | None = None, eval_every: int = 0) -> float:
    """Minutes to step `steps`: at `pace` (plus a validation pass every `eval_every` steps
    once one has been timed) once it has measured steps, at the session's mean pace
    (time, step) before that."""
    step_s = pace.step_s()
    if step_s is None:
        t0, s0 = session
        return (steps - step) * (now - t0) / max(step - s0, 1) / 60
    return (steps - step) * with_validation(step_s, eval_s, eval_every) / 60


def with_validation(step_s: float, eval_s: float | None, eval_every: int) -> float:
    """A training step's seconds plus its share of a validation pass every `eval_every`
    steps, once one has been timed (`eval_s`)."""
    return step_s + (eval_s / eval_every if eval_s is not None and eval_every else 0.0)


def lr_at(step: int, c: TrainConfig, start: int = 0,
          anchor: tuple[int, float] | None = None) -> float:
    """Linear warmup over c.warmup steps from `start` (0, or the step a warm start began
    at: a fresh optimizer needs its warmup there too), then cosine down to c.min_lr at
    c.steps.  `anchor` (step, progress): from that step on, the cosine's progress goes
    on from where it was there to its end at c.steps (a budget that moved c.steps after
    the warmup: the rate goes on down from where it was, never up again)."""
    if step < start + c.warmup:
        return c.lr * (step - start + 1) / c.warmup
    t = min(1.0, cosine_progress(step, c, start, anchor))
    return c.min_lr + 0.5 * (c.lr - c.min_lr) * (1 + math.cos(math.pi * t))


def cosine_progress(step: int, c: TrainConfig, start: int = 0,
                    anchor: tuple[int, float] | None = None) -> float:
    """How far the cosine of lr_at has gone at `step` (0 at the warmup's end, 1 at
    c.steps), on from `anchor` when given and reached."""
    if anchor is not None and step >= anchor[0]:
        at, done = anchor
        return done + (1 - done) * (step - at) / max(1, c.steps - at)
    return (step - start - c.warmup) / max(1, c.steps - start - c.warmup)


def parse_weights(spec: str) -> dict[str, float]:
    """"algorithms=4, transformers=0.3" -> {"algorithms": 4.0, "transformers": 0.3}; a
    clear error otherwise."""
    weights = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, eq, value = part.partition("=")
        try:
            w = float(value) if eq and name.strip() else 0.0
        except ValueError:
            w = 0.0
        if not 0 < w <= 100:  # nan fails the comparison too
            raise ValueError(f"source weight {part!r}: expected NAME=W with 0 < W <= 100 (NAME "
                             f"is the first folder of the corpus paths, e.g. algorithms=4 or "
                             f"transformers=0.3)")
        weights[name.strip()] = w
    return weights


def _share(path: str) -> float:
    """A fixed draw in [0, 1) for a corpus path (its hash, not the run's seed): which files
    of a source a fractional weight keeps, the same in every run and on every rank."""
    return int.from_bytes(hashlib.sha256(path.encode()).digest()[:8], "big") / 2.0 ** 64


def weighted(texts: list[tuple[str, str]], spec: str) -> list[tuple[str, str]]:
    """The training files with each file of a weighted source (the first folder of its
    corpus path: the package, or "stdlib") in the stream its weight's times an epoch: a
    whole weight repeats each file (a small source of the kind of code users type, short
    functions and classes, among large libraries), a fraction keeps that share of the
    source's files (drawn by path, `_share`) one more time, so `transformers=0.3` keeps
    about three files in ten of a library whose generated-looking boilerplate (lazy
    imports, `if not is_torch_available():`) a small model otherwise learns as the answer
    to any bare start."""
    weights = parse_weights(spec)
    if not weights:
        return texts
    sources = [source_of(path) for path, _ in texts]
    missing = sorted(set(weights) - set(sources))
    if missing:
        raise ValueError(f"source weights name {', '.join(missing)}, which the corpus does not "
                         f"hold (its sources: {', '.join(sorted(set(sources)))})")
    out = []
    for t, src in zip(texts, sources):
        w = weights.get(src, 1.0)
        out += [t] * (int(w) + (_share(t[0]) < w - int(w)))
    return out


def masked_ce(logits, ids, mask):
    """Mean next-token cross-entropy over positions with mask 1 (logits [B, T, V] for
    inputs ids[:, :-1]; targets ids[:, 1:], mask [:, 1:])."""
    tgt, m = ids[:, 1:], mask[:, 1:]
    ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                         reduction="none").view_as(m)
    return (ce * m).sum() / m.sum().clamp_min(1.0), (ce * m).sum(), m.sum()


def anchor_kl(logits, ref_logits, mask):
    """Mean over the positions with mask 1 (as masked_ce) of KL(ref || model), the
    next-token distributions of the anchor (`ref_logits`, the run's starting model) and of
    the model on the same inputs.  Unlike the LM loss, which pulls towards the data, it
    holds every token's whole distribution where the starting model had it, so a leg's
    narrow aim (a handler after a `try` body) moves the rest of the model less."""
    m = mask[:, 1:].float()
    kl = F.kl_div(F.log_softmax(logits.float(), -1), F.log_softmax(ref_logits.float(), -1),
                  reduction="none", log_target=True).sum(-1)
    return (kl * m).sum() / m.sum().clamp_min(1.0)


def info_nce(a, b, temperature: float = 0.07):
    logits = a @ b.T / temperature
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class StepLoss(torch.nn.Module):
    """A step's losses as one forward of one module, so DistributedDataParallel sees every
    parameter the step uses: the alignment's pooled vectors read joint.vision, which the
    model's own forward does not, and a text step leaves the vision encoder unused (hence
    find_unused_parameters).  Returns (LM loss, second loss): JEPA on text rows, InfoNCE on
    image rows (zero for a Llama-shaped model)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids, mask, images=None, span=None, codes=None, code_mask=None,
                ref_logits=None):
        m = self.model
        if images is None:
            out = m(ids[:, :-1])
            lm = masked_ce(out.logits, ids, mask)[0]
            second = (torch.zeros((), device=lm.device) if out.preds is None else
                      jepa_loss(out.preds.float(), out.z.float(), m.cfg.step_weights))
            if ref_logits is None:
                return lm, second
            return lm, second, anchor_kl(out.logits, ref_logits, mask)  # the same forward
        out = m(ids[:, :-1], images, span, jepa=False)
        lm = masked_ce(out.logits, ids, mask)[0]
        img = m.pool_image(out.vision)  # the forward's vision tokens, pooled in fp32
        txt = m.embed_text(codes, code_mask)
        with torch.autocast(img.device.type, enabled=False):  # similarities in fp32 too
            return lm, info_nce(img, txt)


def _param_groups(model, weight_decay):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "norm" in name or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def int8_view(w: torch.Tensor) -> torch.Tensor:
    """`w` as the engine gets it back from the int8 file: blocks of 32 along the last axis,
    each rounded to int8 at its absolute maximum / 127, the scale stored as float16
    (kernels.quantize_q8_ref, then dequantize_q8_ref).  Written again in torch, on the
    training device, so that a GPU run does not copy every weight to the host each step;
    the test holds it bit for bit to the reference."""
    from ..kernels import QK

    b = w.detach().float().reshape(-1, QK)
    d = b.abs().amax(1, keepdim=True) / 127
    q = torch.round(b * torch.where(d > 0, 1 / d, torch.zeros_like(d)))
    return (q * d.half().float()).reshape(w.shape).to(w.dtype)


def int8_parameters(model: CromwellTwin, cfg) -> list:
    """The parameters the int8 export quantizes (weights.is_quantizable), in a fixed order.
    A step that only moves the float weights by less than half an int8 level is lost on
    export: a run warm-started from an int8 file starts on those levels (train import),
    and its short legs moved the exported int8 model far less than their float twin (a
    bare `try:` body's end of text -0.23 in G2's float export, -0.11 in its int8 one)."""
    from ..model import weights as W

    names = W.quantized_names(cfg)
    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing or not names:
        raise ValueError(f"--int8-aware: the twin has no parameter {missing[:3]} of the int8 file")
    return [params[n] for n in names]


class Trainer:
    def __init__(self, c: TrainConfig, log=print):
        from .evaluate import parse_kinds
        from .unlikelihood import parse_rules

        self.c, self.log = c, log
        self.asked_steps = c.steps  # a budgeted run plans at most these
        self.asked_warmup = c.warmup  # and keeps the warmup's share of them
        self.ul_rules = parse_rules(c.ul_rules)  # a misspelt rule fails here, not at step one
        self.ul_kinds = parse_kinds(c.ul_kinds or None, "--ul-kinds")  # and so does a kind
        if not 0.0 <= c.ul_kinds_share <= 1.0:
            raise ValueError(f"--ul-kinds-share must be between 0 and 1, not {c.ul_kinds_share}")
        if c.anchor_kl < 0:
            raise ValueError(f"--anchor-kl must be 0 (off) or a positive weight, not {c.anchor_kl}")
        if c.block_cap < 0:
            raise ValueError(f"--block-cap {c.block_cap}: expected 0 (off) or a count of blocks")
        self.out = Path(c.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1:
            torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        self.device = (f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available()
                       else "cpu")
        torch.manual_seed(c.seed + self.rank)
        self.bf16 = c.bf16 and bf16_is_fast(self.device)
        if c.bf16 and not self.bf16 and self.rank == 0:
            self.log(f"bf16 autocast off: this CPU ({torch.backends.cpu.get_cpu_capability()}) "
                     "has no fast bf16 matmul, so training runs in fp32")
        self.tok = Tokenizer(c.tokenizer)
        cfg = preset(c.model).replace(vocab_size=self.tok.vocab_size,
                                      max_seq_len=max(preset(c.model).max_seq_len, c.seq_len + 1))
        self.cfg = cfg
        self.model = random_init(cfg, c.seed).to(self.device)
        self.int8_params = int8_parameters(self.model, cfg) if c.int8_aware else []
        self.opt = torch.optim.AdamW(_param_groups(self.model, c.weight_decay), lr=c.lr,
                                     betas=(0.9, 0.95), eps=1e-8)
        texts = weighted([(r["path"], r["text"]) for r in read_jsonl(Path(c.corpus) / "train.jsonl")],
                         c.source_weights)
        self.texts = texts
        own = []
        if c.own_data and c.own_per_file:
            from .owncompletions import load as load_own
            own = load_own(Path(c.own_data), c.own_min_ratio)
            if not own:
                raise ValueError(f"{c.own_data}: no completions at ratio >= {c.own_min_ratio}")
        self.stream = D.TextStream(texts, self.tok, c.seq_len, c.seed, self.rank, self.world,
                                   blocks_per_file=c.blocks_per_file, own=own,
                                   block_cap=c.block_cap, openings=self._openings(texts),
                                   own_per_file=c.own_per_file)
        self.img_rng = random.Random(c.seed + 17 + self.rank)
        self.step = 0
        self.schedule_start = 0  # the step the learning-rate schedule (warmup) starts from
        self.decay_anchor: tuple[int, float] | None = None  # lr_at's anchor, once a plan moved
                                                            # the cosine's end past the warmup
        self.tokens_seen = 0
        self.elapsed = 0.0
        self.eval_s = None  # how long one validation pass takes, once one has run
        self.session_eval_s = 0.0  # validation seconds in this session
        self.pairs = None
        if c.prefer_data or c.prefer_handlers:
            from . import prefer
            if not (c.prefer_every or c.prefer_only):
                raise ValueError("--prefer-data and --prefer-handlers need --prefer-every or "
                                 "--prefer-only")
            if c.prefer_only and self.world > 1:
                # the DPO forward goes around the DistributedDataParallel wrapper, whose
                # all-reduce only a text or image step's forward sets up
                raise ValueError("--prefer-only trains on one process; use --prefer-every "
                                 "beside the text steps under torchrun")
            pairs = prefer.load(Path(c.prefer_data), c.prefer_real) if c.prefer_data else []
            if c.prefer_handlers:
                pairs += prefer.handler_pairs(texts, c.prefer_handlers,
                                              random.Random(f"handlers:{c.seed}"))
            self.pairs = prefer.Pairs(pairs, self.tok, c.seq_len)
        self._saved_anchor = None  # the checkpoint's anchor, when _resume finds one
        self._resume()
        self.anchor = self._anchor() if c.anchor_kl else None
        if self.pairs is not None and self.pairs.ref is None:
            self._prefer_reference()
        self.fwd = StepLoss(self.model)
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel
            self.fwd = DistributedDataParallel(self.fwd, find_unused_parameters=True)
        if c.compile:
            self.fwd = torch.compile(self.fwd)
        self.val = self._val_sets()

    def _anchor(self):
        """The frozen model anchor_kl holds the run to: the one it started from (an
        imported int8 file's values, with `train import`), kept in the checkpoint so a
        resumed run is held to the same one."""
        import copy

        anchor = copy.deepcopy(self.model).eval()
        if self._saved_anchor is not None:
            load_state(anchor, self._saved_anchor)
        for p in anchor.parameters():
            p.requires_grad_(False)
        return anchor

    def _openings(self, texts: list[tuple[str, str]]) -> dict[str, int]:
        """The block cap's counts (tasks.opening_counts) over the stream's files, weighted
        copies included, for the openings over the cap (610 of 32,328 shared ones in
        runs/corpus2 at 16); kept beside the checkpoint (a minute's parsing for the whole
        corpus), under a key of the files' paths and sizes and the cap, so a resumed run
        reads them."""
        cap = self.c.block_cap
        if not cap:
            return {}
        key = hashlib.sha256("\n".join([f"cap {cap}"] + [f"{p}\t{len(t)}" for p, t in texts])
                             .encode()).hexdigest()
        cache = self.out / "block-openings.json"
        try:
            saved = json.loads(cache.read_text())
            if saved["key"] == key:
                return saved["counts"]
        except (OSError, ValueError, KeyError, TypeError):
            pass  # none yet, or for other files or another cap: counted again
        counts = tasks.opening_counts(texts, above=cap)
        if self.rank == 0:
            tmp = cache.with_suffix(".tmp")
            tmp.write_text(json.dumps({"key": key, "counts": counts}))
            tmp.replace(cache)
        return counts

    # ---- checkpoints --------------------------------------------------------------------
    def _ckpt_path(self) -> Path:
        return self.out / "ckpt.pt"

    def save(self) -> None:
        """Rank 0 writes; the data position and image RNG of every rank go in, so each rank
        resumes its own share of the files."""
        mine = {"stream": self.stream.state(), "img_rng": self.img_rng.getstate()}
        ranks = [mine]
        if self.world > 1:
            ranks = [None] * self.world
            torch.distributed.all_gather_object(ranks, mine)
        if self.rank:
            return
        state = {"model": self.model.state_dict(), "opt": self.opt.state_dict(),
                 "step": self.step, "tokens_seen": self.tokens_seen, "elapsed": self.elapsed,
                 "schedule_start": self.schedule_start, "decay_anchor": self.decay_anchor,
                 "ranks": ranks, "prefer": None if self.pairs is None else
                 {"key": self.pairs.key, "ref": self.pairs.ref},
                 "torch_rng": torch.get_rng_state(), "train_config": dataclasses.asdict(self.c),
                 "model_config": self.cfg.to_dict(), "tokenizer_sha256": self.tok.sha256}
        if self.anchor is not None:
            state["anchor"] = self.anchor.state_dict()
        tmp = self._ckpt_path().with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self._ckpt_path())

    def _resume(self) -> None:
        path = self._ckpt_path()
        if not path.exists():
            return
        s = torch.load(path, map_location=self.device, weights_only=False)
        if s["tokenizer_sha256"] != self.tok.sha256:
            raise ValueError(f"{path} was trained with another tokenizer; use a new --out")
        load_state(self.model, s["model"])
        self._saved_anchor = s.get("anchor")  # none: the run holds to where it starts now
        saved = s.get("prefer")
        if self.pairs is not None and saved and saved.get("key") == self.pairs.key:
            self.pairs.ref = saved["ref"]  # the same pairs: ranked against the same reference
        self.step, self.tokens_seen, self.elapsed = s["step"], s["tokens_seen"], s["elapsed"]
        planned = s.get("train_config", {})
        if self.c.budget_minutes and planned.get("budget_minutes") and "opt" in s:
            # the schedule a budgeted run settled on goes on, so the resumed run is the same run
            self.c = dataclasses.replace(self.c, steps=min(self.c.steps, planned["steps"]),
                                         warmup=planned.get("warmup", self.c.warmup))
            anchor = s.get("decay_anchor")
            self.decay_anchor = None if anchor is None else (int(anchor[0]), float(anchor[1]))
        trained_side = s.get("train_config", {}).get("image_side")
        if not self.c.image_every and trained_side:
            # a text-only run leaves the vision side as it was: its checkpoint (and so the
            # export's screenshot side) keeps the side that side was trained at
            self.c = dataclasses.replace(self.c, image_side=trained_side)
        if "opt" not in s:  # `cromwell train import`: weights and step only
            self.schedule_start = self.step
            self.log(f"warm start from {path} (imported from {s.get('imported_from')}) at "
                     f"step {self.step}: fresh optimizer, data stream from its seed")
            return
        self.opt.load_state_dict(s["opt"])
        self.schedule_start = s.get("schedule_start", 0)
        # checkpoints written before "ranks" kept the one process's position at top level
        ranks = s.get("ranks") or [{"stream": s["stream"], "img_rng": s["img_rng"]}]
        if len(ranks) != self.world:
            raise ValueError(f"{path} was written by a run on {len(ranks)} process(es); resume "
                             f"it on as many (this is {self.world})")
        self.stream.restore(ranks[self.rank]["stream"])
        r = ranks[self.rank]["img_rng"]
        self.img_rng.setstate((r[0], tuple(r[1]), r[2]))
        torch.set_rng_state(s["torch_rng"])
        self.log(f"resumed from {path} at step {self.step}")

    def _prefer_reference(self) -> None:
        """The pairs' reference log-probabilities when the checkpoint kept none for these
        pairs: the model's as it stands now (the run's start)."""
        self.model.eval()
        self.pairs.reference(self.model, self.device, self._autocast)
        self.model.train()
        if self.rank == 0:
            self.log(f"preference pairs: {len(self.pairs.pairs)}, reference taken at step "
                     f"{self.step}")

    # ---- steps ----------------------------------------------------------------------------
    def _autocast(self):
        dev = "cuda" if self.device.startswith("cuda") else "cpu"
        return torch.autocast(dev, dtype=torch.bfloat16, enabled=self.bf16)

    def _text_loss(self, ids, mask):
        if self.anchor is None:
            lm, jl = self.fwd(ids, mask)
            kl = None
        else:
            with torch.no_grad():
                ref = self.anchor(ids[:, :-1], jepa=False).logits
            lm, jl, kl = self.fwd(ids, mask, ref_logits=ref)
        if not self.cfg.has_vision:  # a Llama-shaped model: the LM loss alone
            loss, parts = lm, {"lm": lm.item()}
        else:
            loss = self.c.lm_weight * lm + self.jepa_weight_at(self.step) * jl
            parts = {"lm": lm.item(), "jepa": jl.item()}
        if kl is not None:
            loss = loss + self.c.anchor_kl * kl
            parts["kl"] = kl.item()
        return loss, parts

    def jepa_weight_at(self, step: int) -> float:
        """The JEPA weight, raised linearly from 0 over the first jepa_ramp steps: from
        the start, the MSE towards z[t + k] pulls the joint states towards a constant (the
        easiest future to predict) before the LM has made them carry the token, and the
        model stays at the unigram loss; once the LM has shaped z, the JEPA term refines it."""
        ramp = self.c.jepa_ramp  # in steps, not a fraction of the run, so a run extended
        # with more --steps weighs its first steps as the shorter run did (exact resume)
        return self.c.jepa_weight * (min(1.0, step / ramp) if ramp > 0 else 1.0)

    def _unlikelihood(self):
        """The unlikelihood term of this step: greedy completions of bare starts drawn with
        an RNG seeded by the step (so a resumed run draws the same ones), the loss on
        their repeating tokens (zero when none repeated)."""
        from . import unlikelihood as U

        c = self.c
        rng = random.Random(f"ul:{c.seed}:{self.rank}:{self.step}")
        ids, marks, share, keep = U.unlikelihood_batch(self.model, self.tok, self.texts, rng,
                                                       c.ul_batch, c.ul_tokens, self.ul_rules,
                                                       self.ul_kinds, c.ul_kinds_share)
        if ids is None:
            return torch.zeros((), device=self.device), {"ul": 0.0, "ul_marked": share}
        logits = self.model(ids[:, :-1], jepa=False, keep=keep[:, :-1]).logits
        ul = U.unlikelihood_loss(logits, ids, marks, c.ul_margin)
        return ul, {"ul": ul.item(), "ul_marked": share}

    def _prefer(self):
        """The DPO term of this step on pairs drawn with an RNG seeded by the step (a
        resumed run draws the same ones); returns (loss, parts, tokens)."""
        c = self.c
        rng = random.Random(f"prefer:{c.seed}:{self.rank}:{self.step}")
        loss, parts, ntok = self.pairs.loss(self.model, self.pairs.draw(rng, c.prefer_batch),
                                            c.prefer_beta, self.device, c.prefer_nll)
        return loss, {"prefer": loss.item(), **parts}, ntok

    def _image_loss(self, batch):
        images, ids, mask, codes, code_mask, span = (
            torch.as_tensor(a).to(self.device) if isinstance(a, np.ndarray) else a for a in batch)
        lm, align = self.fwd(ids, mask, images, span, codes, code_mask)
        return self.c.lm_weight * lm + self.c.align_weight * align, {"image_lm": lm.item(),
                                                                     "align": align.item()}

    def _step_loss(self, image_step: bool):
        """This step's loss: (loss, its parts for the log, tokens it trained on)."""
        c = self.c
        with self._autocast():
            if c.prefer_only:
                loss, parts, ntok = self._prefer()
            elif image_step:
                batch = D.image_batch(self.texts, self.tok, self.img_rng, c.image_batch,
                                      c.image_side, c.seq_len)
                loss, parts = self._image_loss(batch)
                ntok = int(batch[1].size)
            else:
                ids, mask = (torch.as_tensor(a).to(self.device) for a in self.stream.batch(c.batch_size))
                loss, parts = self._text_loss(ids, mask)
                ntok = int(ids.numel())
                if c.ul_every and self.step % c.ul_every == 0:
                    ul, ul_parts = self._unlikelihood()
                    loss = loss + c.ul_weight * ul
                    parts.update(ul_parts)
            if self.pairs is not None and not c.prefer_only and c.prefer_every \
                    and self.step % c.prefer_every == 0:
                pl, p_parts, pn = self._prefer()
                loss = loss + c.prefer_weight * pl
                parts.update(p_parts)
                ntok += pn
        return loss, parts, ntok

    def train_step(self) -> dict:
        c = self.c
        lr = lr_at(self.step, c, self.schedule_start, self.decay_anchor)
        for g in self.opt.param_groups:
            g["lr"] = lr
        image_step = c.image_every and self.cfg.has_vision and self.step % c.image_every == c.image_every - 1
        latent = [p.detach().clone() for p in self.int8_params]
        with torch.no_grad():  # the forward (and any greedy completion in it) on the int8 values
            for p in self.int8_params:
                p.copy_(int8_view(p))
        try:
            loss, parts, ntok = self._step_loss(image_step)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
        finally:
            with torch.no_grad():  # straight-through: the int8 values' gradient moves the
                for p, w in zip(self.int8_params, latent):  # latent float weights, which
                    p.copy_(w)  # keep every step too small to cross a level on their own
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        self.opt.step()
        self.step += 1
        self.tokens_seen += ntok * self.world
        return {"loss": loss.item(), "grad_norm": float(norm), "lr": lr, **parts}

    # ---- validation -------------------------------------------------------------------
    def _val_sets(self):
        """Fixed validation rows per task (from val.jsonl) and the stdlib files for bpb."""
        recs = list(read_jsonl(Path(self.c.corpus) / "val.jsonl"))
        rng = random.Random(1234)
        block_rng = random.Random(4321)  # its own, so the other tasks' rows stay as they were
        sets: dict[str, list] = {"lm": [], "fim_spm": [], "fim_psm": [], "explain": [],
                                 "repair": [], "block": []}
        for r in recs:
            text = r["text"]
            sets["lm"].append(tasks.file_example(r["path"], text))
            sets["fim_spm"].append(tasks.fim_example(text, rng, spm=True))
            sets["fim_psm"].append(tasks.fim_example(text, rng, spm=False))
            sets["explain"] += [tasks.explain_example(*p) for p in tasks.explain_pairs(text)[:2]]
            for snip in tasks.function_snippets(text)[:2]:
                bad = tasks.corrupt(snip, rng)
                if bad:
                    sets["repair"].append(tasks.repair_example(bad, snip))
            sets["block"] += [tasks.block_example(b, block_rng)
                              for b in tasks.block_snippets(text)[:2]]
        rows = {}
        for task, examples in sets.items():
            encoded = [tasks.encode(e, self.tok) for e in examples[: self.c.eval_rows]]
            n = self.c.seq_len + 1  # keep the tail: the answer and the context nearest it
            rows[task] = [(ids[-n:], m[-n:]) for ids, m in encoded if any(m[-n:][1:])]
        stdlib, size = [], 0
        for r in recs:  # held-out standard-library files, about bpb_bytes of them
            if source_of(r["path"]) == "stdlib" and size < self.c.bpb_bytes:
                stdlib.append(r["text"])
                size += len(r["text"])
        return {"rows": rows, "stdlib": stdlib}

    @torch.no_grad()
    def evaluate(self) -> dict:
        self.model.eval()
        out = {}
        for task, rows in self.val["rows"].items():
            tot = cnt = 0.0
            for ids, mask in rows:
                t = torch.as_tensor([ids], device=self.device)
                m = torch.as_tensor([mask], dtype=torch.float32, device=self.device)
                with self._autocast():
                    logits = self.model(t[:, :-1], jepa=False).logits
                _, s, n = masked_ce(logits, t, m)
                tot, cnt = tot + s.item(), cnt + n.item()
            out[f"val_{task}"] = tot / cnt if cnt else None  # None: no validation data
        out["val_bpb_stdlib"] = self.bits_per_byte(self.val["stdlib"]) if self.val["stdlib"] else None
        self.model.train()
        return out

    @torch.no_grad()
    def bits_per_byte(self, texts) -> float:
        nats = nbytes = 0.0
        for text in texts:
            ids = [self.tok.special("file_sep")] + self.tok.encode(text)
            for start in range(0, len(ids) - 1, self.c.seq_len):
                chunk = ids[start:start + self.c.seq_len + 1]
                t = torch.as_tensor([chunk], device=self.device)
                with self._autocast():
                    logits = self.model(t[:, :-1], jepa=False).logits
                nats += F.cross_entropy(logits.float()[0], t[0, 1:], reduction="sum").item()
            nbytes += len(text.encode("utf-8"))
        return nats / max(nbytes, 1.0) / math.log(2)

    # ---- the loop ---------------------------------------------------------------------
    def run(self) -> dict:
        c = self.c
        start = time.time() - self.elapsed
        if self.step == 0 and self.rank == 0:
            self._write_log({"step": 0, **self._timed_eval(), "note": "untrained"})
        session_start, session_step = time.time(), self.step
        pace = Pace()  # this session's seconds a step, once its first steps are done
        last = time.time()
        tokens_at_last = self.tokens_seen
        sums: dict[str, list[float]] = {}
        while self.step < c.steps:
            metrics = self.train_step()
            step_lr = metrics["lr"]  # the rate this step trained at, before any new plan
            self.elapsed = time.time() - start
            if self.step - session_step >= PLAN_WARM:  # the first steps are slower: not timed
                pace.note(time.time(), self.step, self.session_eval_s)
            done = self.step - session_step
            if (c.budget_minutes and self.step < c.steps
                    and (done == PLAN_AFTER or (done > PLAN_AFTER and self.step % PLAN_EVERY == 0))):
                c = self._plan(pace)
            for k, v in metrics.items():  # text and image steps alternate: log each mean
                sums.setdefault(k, []).append(v)
            if self.rank == 0 and (self.step % 10 == 0 or self.step == c.steps):
                metrics = {k: sum(v) / len(v) for k, v in sums.items()}
                metrics["lr"] = step_lr
                sums = {}
                now = time.time()
                tok_s = (self.tokens_seen - tokens_at_last) / max(now - last, 1e-9)
                last, tokens_at_last = now, self.tokens_seen
                eta = eta_minutes(now, self.step, c.steps, (session_start, session_step), pace,
                                  self.eval_s, c.eval_every)
                self.log(f"step {self.step}/{c.steps} loss {metrics['loss']:.4f} "
                         f"lm {metrics.get('lm', float('nan')):.3f} "
                         f"lr {metrics['lr']:.2e} {tok_s:,.0f} tok/s  eta {eta:.1f} min"
                         + (f"  ul {metrics['ul']:.3f} marked {metrics['ul_marked']:.1%}"
                            if "ul" in metrics else "")
                         + (f"  kl {metrics['kl']:.4f}" if "kl" in metrics else "")
                         + (f"  prefer {metrics['prefer']:.3f} ranked {metrics['pref_acc']:.0%}"
                            if "prefer" in metrics else ""))
                self._write_log({"step": self.step, "tokens": self.tokens_seen,
                                 "elapsed_s": round(self.elapsed, 1), "tok_s": round(tok_s), **metrics})
            if self.step % c.ckpt_every == 0 or self.step == c.steps:
                self.save()
            if self.rank == 0 and (self.step % c.eval_every == 0 or self.step == c.steps):
                self._write_log({"step": self.step, **self._timed_eval()})
                self.plot()
            if c.max_minutes and self._all_stop(time.time() - session_start > c.max_minutes * 60):
                self.save()
                self.log(f"stopping after {c.max_minutes} minutes; run again to resume")
                break
        return {"step": self.step, "tokens": self.tokens_seen, "elapsed_s": self.elapsed}

    def _timed_eval(self) -> dict:
        t0 = time.time()
        out = self.evaluate()
        self.eval_s = time.time() - t0
        self.session_eval_s += self.eval_s
        return out

    def _plan(self, pace: Pace) -> TrainConfig:
        """With budget_minutes: set c.steps to the steps the rest of the budget allows at
        `pace` (seconds a step with their checkpoints over the last PLAN_RECENT steps),
        padded by PLAN_MARGIN, plus a validation pass every eval_every steps once one has
        been timed; at most the steps asked for.  Called after PLAN_AFTER steps, inside the
        warmup of any usual schedule (so the cosine is the one a run given that step count
        from the start would follow), and again every PLAN_EVERY steps, which moves the
        cosine's end when the machine slowed down or sped up: past the warmup the rate
        goes on from where it is to the new end (decay_anchor), never up again.  Every
        rank takes rank 0's count; the checkpoint keeps it (and the anchor), so a resumed
        run starts on the same schedule."""
        c = self.c
        pace = with_validation(pace.step_s() * PLAN_MARGIN, self.eval_s, c.eval_every)
        left = c.budget_minutes * 60 - self.elapsed
        steps = max(self.step + 1, min(self.asked_steps, self.step + int(left / pace)))
        if self.world > 1:
            t = torch.tensor([steps], dtype=torch.int64)
            torch.distributed.broadcast(t, 0)
            steps = int(t.item())
        if steps != c.steps:
            warmup = self._planned_warmup(steps)
            if self.step >= self.schedule_start + c.warmup:
                # past the warmup the cosine goes on from where it is to its new end
                self.decay_anchor = (self.step, cosine_progress(
                    self.step, c, self.schedule_start, self.decay_anchor))
            self.log(f"budget: {c.budget_minutes:g} min of training, {pace:.2f} s a step here: "
                     f"steps {c.steps} -> {steps}"
                     + (f", warmup {c.warmup} -> {warmup}" if warmup != c.warmup else ""))
            self.c = dataclasses.replace(c, steps=steps, warmup=warmup)
        return self.c

    def _planned_warmup(self, steps: int) -> int:
        """The warmup of a schedule cut to `steps` while it still warms up: the share of
        the schedule the asked warmup had (100 of 1,300 asked -> 77 of 1,000), but at least
        twice the steps it has warmed up so far (the rate jumps to at most about half its
        peak) and never more than asked.  Past the warmup it stays as it is."""
        c, start = self.c, self.schedule_start
        done = self.step - start
        if done >= c.warmup:
            return c.warmup
        share = round(self.asked_warmup * (steps - start) / max(self.asked_steps - start, 1))
        return min(self.asked_warmup, max(share, 2 * done, 1))

    def _all_stop(self, mine: bool) -> bool:
        """Rank 0's decision, for every rank (ranks that stopped apart would wait forever)."""
        if self.world == 1:
            return mine
        flag = torch.tensor([1 if mine else 0], dtype=torch.int32)
        torch.distributed.broadcast(flag, 0)
        return bool(flag.item())

    def _write_log(self, entry: dict) -> None:
        with open(self.out / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
        keys = ["step", "tokens", "elapsed_s", "loss", "lm", "jepa", "image_lm", "align", "lr",
                "grad_norm", "tok_s", "val_lm", "val_fim_spm", "val_fim_psm", "val_explain",
                "val_repair", "val_bpb_stdlib", "ul", "ul_marked"]
        new = not (self.out / "log.csv").exists()
        with open(self.out / "log.csv", "a", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, keys, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(entry)

    def plot(self) -> None:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return
        rows = [json.loads(line) for line in open(self.out / "log.jsonl", encoding="utf-8")]
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for key, style in (("lm", "-"), ("jepa", "-"), ("image_lm", "-"), ("align", "-")):
            pts = [(r["step"], r[key]) for r in rows if key in r]
            if pts:
                ax.plot(*zip(*pts), style, label=f"train {key}", alpha=0.7)
        for key in ("val_lm", "val_fim_spm", "val_explain", "val_repair"):
            pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), "o--", label=key)
        ax.set_xlabel("step")
        ax.set_ylabel("loss (nats)")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
        ax.set_title(f"Cromwell {self.c.model}: training and validation loss")
        fig.tight_layout()
        fig.savefig(self.out / "loss.png", dpi=110)
        plt.close(fig)


def unigram_logp(corpus: Path, tok: Tokenizer, limit_chars: int = 20_000_000) -> np.ndarray:
    """Log-probabilities [V] of a unigram model (add-one smoothing) of the training tokens
    (the first limit_chars of train.jsonl)."""
    counts = np.ones(tok.vocab_size, dtype=np.float64)
    seen = 0
    for rec in read_jsonl(corpus / "train.jsonl"):
        counts += np.bincount(tok.encode(rec["text"]), minlength=tok.vocab_size)
        seen += len(rec["text"])
        if seen > limit_chars:
            break
    return np.log(counts / counts.sum())


def unigram_bpb(corpus: Path, tok: Tokenizer, texts, logp: np.ndarray | None = None) -> float:
    """Bits per byte of the unigram model on texts: the floor any trained model must beat
    (logp: unigram_logp's result, when the caller has it already)."""
    logp = unigram_logp(corpus, tok) if logp is None else logp
    nats = nbytes = 0.0
    for text in texts:
        nats -= logp[tok.encode(text)].sum()
        nbytes += len(text.encode("utf-8"))
    return float(nats / nbytes / math.log(2))


def main(c: TrainConfig) -> dict:
    trainer = Trainer(c, log=lambda m: print(m, file=sys.stderr, flush=True))
    try:
        report = trainer.run()
        if trainer.world > 1:
            # a finished run: every rank gets here before any tears its group down (a rank
            # that did so while another was still in its last collective aborted once,
            # "terminate called without an active exception"); a failed rank does not
            # wait, so the others are stopped by torchrun instead of hanging
            torch.distributed.barrier()
        return report
    finally:
        if trainer.world > 1:
            torch.distributed.destroy_process_group()
