"""Preference pairs from the model's own greedy failures (the `--prefer-*` steps).

`train own` (owncompletions.py) completes training starts greedily and by sampling and
keeps, per start, the working completion nearest the file's real block; it also records
the greedy completion and whether it works.  Where the greedy one fails (it loops, does
not parse, does nothing) and a sampled one works, the two make a pair on one prompt:
the working completion preferred, the greedy one rejected.  Rejection-sampling
fine-tuning (`--own-data`) only pulls the working completions up, and unlikelihood only
pushes marked tokens down; direct preference optimization (Rafailov et al. 2023) asks
the model to rank the two, relative to where the run started (the reference):

    loss = -log sigmoid(beta * ((log p(chosen) - log p_ref(chosen))
                                - (log p(rejected) - log p_ref(rejected))))

where log p is the sum over the completion's tokens and its end of text.  Tokens the two
share from the start cancel, so the gradient falls where greedy decoding went wrong;
beta bounds how far the model moves from the reference (the loss flattens once the
margin is large).  The reference log-probabilities are taken once, by the model the run
starts from, and kept in the checkpoint, so a resumed run ranks against the same ones.
"""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import torch
import torch.nn.functional as F

from . import tasks
from .evaluate import (cut_at_block_end, judged, misaligned_after, one_line_return, trivial,
                       useful)


REAL_CHARS = 400  # a real block chosen over a stock answer is at most this long (about
                  # the 96 tokens `train own` lets a completion take)


def load(path: Path, real: bool = False) -> list[tuple[str, str, str]]:
    """(start, chosen, rejected) for each row of a `train own` file whose greedy
    completion failed while a sampled one worked: chosen the working completion,
    rejected the greedy one cut at its block's end as the judge cuts it.
    `real`: also each row whose greedy completion works but is a one-line return of a
    bare value (evaluate.one_line_return: `return False`, `return self._value`) where the
    file's real block is a useful body of another kind, at most REAL_CHARS long: the real
    block chosen over it (the self-play form of Chen et al. 2024, real text against the
    model's own, kept to the answer a small model falls back on for any start).
    Rows written before `train own` kept the greedy completion (or, for `real`, the real
    block) are skipped, and so are pairs whose two sides are the same text."""
    from .corpus import read_jsonl

    out = []
    for r in read_jsonl(path):
        if "greedy" not in r or not r.get("completion"):
            continue
        start = r["start"]
        rejected = cut_at_block_end(start + r["greedy"], start)[len(start):]
        if not r.get("greedy_works", True):
            chosen = r["completion"]
        elif real and r.get("real") and _stock_over_real(start, rejected, r["real"]):
            chosen = r["real"]
        else:
            continue
        if not misaligned_after(start, chosen) and rejected != chosen:
            out.append((start, chosen, rejected))
    return out


def _stock_over_real(start: str, greedy: str, real: str) -> bool:
    """Is the greedy completion a one-line return of a bare value where the real block is
    a useful body (parses, no loop, does something) of another kind, short enough?"""
    return (one_line_return(greedy) and not one_line_return(real) and len(real) <= REAL_CHARS
            and useful(judged(start, real)))


def handler_pairs(texts: list[tuple[str, str]], n: int,
                  rng: random.Random) -> list[tuple[str, str, str]]:
    """Up to n (start, chosen, rejected) from the `try` statements of training files:
    the start `try:` and its body's indentation, as a developer who just opened one has
    typed (tasks.block_cut's header cut); chosen the real statement (its body and its
    `except` / `else` / `finally` clauses), rejected its body alone, then the end of text.
    A `try` body alone does not compile, yet a small model trained on blocks that end
    after their body stops there, the end of text likelier than `except`.  The two sides
    share the body, so the DPO gradient falls on that one choice.  Kept: real statements
    that are useful (evaluate.useful) and at most REAL_CHARS long, whose body does
    something (`try: pass` teaches nothing), each body at most once
    (one library's boilerplate `try` would otherwise make a tenth of the pairs), one a
    file.
    Files are visited in the rng's order, so the pairs of one seed are always the same."""
    out, seen = [], set()
    for i in rng.sample(range(len(texts)), len(texts)):
        if len(out) >= n:
            break
        if "try:" not in texts[i][1]:
            continue  # most files: no `try` block to find, no file to parse
        for block in tasks.block_snippets(texts[i][1]):
            pair = _handler_pair(block)
            if pair is not None and pair[2] not in seen:
                seen.add(pair[2])
                out.append(pair)
                break
    return out


def _handler_pair(block: str) -> tuple[str, str, str] | None:
    if not block.startswith("try:") or (end := tasks.header_end(block)) is None:
        return None
    start, real = block[:end], block[end:]
    if len(real) > REAL_CHARS or not useful(judged(start, real)):
        return None
    body = block[end:tasks.try_body_end(block)].rstrip() + "\n"
    return None if trivial(body) else (start, real, body)


def fingerprint(pairs: list[tuple[str, str, str]]) -> str:
    return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()[:16]


def encode(tok, start: str, completion: str, seq_len: int) -> tuple[list[int], list[int]]:
    """The pair side as the training rows lay out an own completion (the server's prompt
    of the start, the completion, the end of text), its loss mask on the completion and
    the end of text only; at most seq_len + 1 tokens, the prompt cut from the left."""
    ex = tasks.start_example("own", start, completion)
    ex.answer_from = len(ex.segments) - 2
    ids, mask = tasks.encode(ex, tok)
    if len(ids) > seq_len + 1:
        ids, mask = ids[-(seq_len + 1):], mask[-(seq_len + 1):]
    return ids, mask


def batch_tensors(seqs: list[tuple[list[int], list[int]]], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and masks [B, T] (padding has mask 0)."""
    n = max(len(ids) for ids, _ in seqs)
    ids = torch.zeros(len(seqs), n, dtype=torch.long)
    mask = torch.zeros(len(seqs), n)
    for i, (a, m) in enumerate(seqs):
        ids[i, :len(a)] = torch.as_tensor(a)
        mask[i, :len(m)] = torch.as_tensor(m, dtype=torch.float32)
    return ids.to(device), mask.to(device)


def sequence_logp(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of log p(token) over each row's masked targets ([B]); a causal model, so the
    right padding changes nothing before it."""
    logits = model(ids[:, :-1], jepa=False).logits.float()
    logp = torch.gather(F.log_softmax(logits, -1), -1, ids[:, 1:, None])[..., 0]
    return (logp * mask[:, 1:]).sum(-1)


def dpo_loss(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, dict]:
    """The mean DPO loss over a batch of pairs, with the share of pairs the model ranks
    right (its implicit reward higher for the chosen side) and the mean reward margin."""
    margin = beta * ((chosen - ref_chosen) - (rejected - ref_rejected))
    loss = -F.logsigmoid(margin).mean()
    return loss, {"pref_acc": float((margin.detach() > 0).float().mean()),
                  "pref_margin": float(margin.detach().mean())}


class Pairs:
    """The pairs encoded once, with the reference log-probabilities of both sides."""

    def __init__(self, pairs: list[tuple[str, str, str]], tok, seq_len: int):
        if not pairs:
            raise ValueError("no preference pairs (rows whose greedy completion failed while "
                             "a sampled one worked)")
        self.pairs = pairs
        self.key = fingerprint(pairs)
        self.sides = [(encode(tok, s, c, seq_len), encode(tok, s, r, seq_len))
                      for s, c, r in pairs]
        self.ref: torch.Tensor | None = None  # [N, 2]: chosen, rejected

    @torch.no_grad()
    def reference(self, model, device, autocast, chunk: int = 16) -> torch.Tensor:
        out = []
        for i in range(0, len(self.sides), chunk):
            part = self.sides[i:i + chunk]
            seqs = [c for c, _ in part] + [r for _, r in part]
            with autocast():
                lp = sequence_logp(model, *batch_tensors(seqs, device)).float().cpu()
            out.append(torch.stack([lp[:len(part)], lp[len(part):]], -1))
        self.ref = torch.cat(out)
        return self.ref

    def draw(self, rng: random.Random, n: int) -> list[int]:
        return rng.sample(range(len(self.sides)), min(n, len(self.sides)))

    def loss(self, model, index: list[int], beta: float, device,
             nll: float = 0.0) -> tuple[torch.Tensor, dict, int]:
        """The DPO loss of the pairs `index`, plus `nll` times the chosen sides' mean
        next-token loss: DPO alone lowers both sides (only their difference counts), and
        the probability it takes from the chosen side goes to loops (docs/MODEL.md)."""
        n = len(index)
        seqs = [self.sides[i][0] for i in index] + [self.sides[i][1] for i in index]
        ids, mask = batch_tensors(seqs, device)
        lp = sequence_logp(model, ids, mask)
        ref = self.ref[index].to(device)
        loss, parts = dpo_loss(lp[:n], lp[n:], ref[:, 0], ref[:, 1], beta)
        chosen_nll = -lp[:n].sum() / mask[:n, 1:].sum().clamp_min(1.0)
        parts["pref_nll"] = float(chosen_nll.detach())
        if nll:
            loss = loss + nll * chosen_nll
        return loss, parts, int(ids.numel())
