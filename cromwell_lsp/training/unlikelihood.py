"""Sequence-level unlikelihood against the model's own loops (the `--ul-every` steps).

A small model completing a bare start greedily falls into loops: `self.x = x` line after
line, `b, b, b, ...`, `data.data.data`.  Lower next-token loss on real code did not
remove them (docs/MODEL.md), because the LM loss never sees the model's own output.
These steps do: the twin completes bare starts drawn from the training files as the block
task prompts them (SPM prompt, empty suffix; greedy, without the server's token healing),
the tokens of the completion that repeat it (a line it already wrote, a short piece it
has written three times in a row) are marked, and a margin loss on each marked token
lowers it below the best other token at that point, leaving every unmarked token alone
(sequence-level unlikelihood training, Welleck et al. 2019, with a bounded loss in place
of -log(1 - p); see unlikelihood_loss).  The LM loss of the same step keeps the rest of
the distribution where the real code puts it.
"""
from __future__ import annotations

import random
import re

import torch
import torch.nn.functional as F

from ..model import prompts
from . import tasks

# lines that real code does write twice in a few lines: not a loop
SHORT_REPEATS = frozenset({"pass", "else:", "try:", "break", "continue", "return", "finally:",
                           "return None", "return True", "return False", "raise", "yield",
                           '"""', "'''", ")", "]", "}", "),", "],", "},"})
_RUN = re.compile(r"(.{1,24}?)\1{2,}", re.S)  # a piece written three times or more in a row


def repeat_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of `text` (a completion) that repeat what it wrote before it:
    (a) a line equal, stripped, to an earlier line of the completion (not blank, not one
    of SHORT_REPEATS, not an `except` clause or decorator); (b) in a run of one piece of up
    to 24 characters written three times or more in a row, everything after its first two
    copies ("b, b, " of "b, b, b, b, "), unless the piece is only spaces (indentation) or
    one character repeated fewer than 8 times in all (`===`, `0000`).
    Sorted, overlapping spans merged.  Far more eager than the server's cut_repetition
    (features/postprocess.py), which must not cut real code the editor shows: here a
    repeat only costs a small push on a token the model was not asked to write."""
    spans, seen, pos = [], set(), 0
    for line in text.split("\n"):
        s = line.strip()
        if s:
            if s in seen and s not in SHORT_REPEATS and not s.startswith(("except", "@")):
                a = pos + len(line) - len(line.lstrip())
                spans.append((a, a + len(s)))
            seen.add(s)
        pos += len(line) + 1
    for m in _RUN.finditer(text):
        unit = m.group(1)
        if not unit.strip() or len(set(unit)) == 1 and len(m.group(0)) < 8:
            continue
        spans.append((m.start() + 2 * len(unit), m.end()))
    merged: list[tuple[int, int]] = []
    for a, b in sorted(spans):  # overlapping marks (a repeated line inside a run) as one
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def marked_tokens(pieces: list[str], spans: list[tuple[int, int]]) -> list[bool]:
    """For each token (its text, in order), does it overlap a span of repeat_spans?"""
    out, pos = [], 0
    for piece in pieces:
        a, b = pos, pos + len(piece)
        out.append(any(x < b and a < y for x, y in spans) if b > a else False)
        pos = b
    return out


def draw_starts(texts: list[tuple[str, str]], rng: random.Random, n: int,
                tries: int = 200) -> list[str]:
    """n bare starts (a block's header and its first body line's indentation, or a point
    in its first line), cut from blocks of random training files as block_example does."""
    starts = []
    for _ in range(tries):
        if len(starts) == n:
            break
        blocks = tasks.block_snippets(rng.choice(texts)[1])
        if blocks:
            starts.append(tasks.block_cut(tasks._drop_docstring(rng.choice(blocks)), rng)[0])
    return starts


@torch.no_grad()
def greedy(model, prompt_ids: list[list[int]], n_tokens: int, stop: int):
    """Greedy continuations of prompts, left-padded with `stop` (no cache: the twin
    recomputes, which at these lengths is a few forwards a second), on the model's device.
    Returns (ids [B, P + new] with `stop` after a row's stop token, the padded prompt
    length P)."""
    device = next(model.parameters()).device
    B, P = len(prompt_ids), max(len(p) for p in prompt_ids)
    ids = torch.full((B, P), stop, dtype=torch.long, device=device)
    for i, p in enumerate(prompt_ids):
        ids[i, P - len(p):] = torch.as_tensor(p, device=device)
    # the left padding is end-of-text tokens: to the twin, the end of a previous document,
    # as in the packed training rows
    done = torch.zeros(B, dtype=torch.bool, device=device)
    was = model.training
    model.eval()
    for _ in range(n_tokens):
        nxt = model(ids, jepa=False).logits[:, -1].float().argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, stop), nxt)
        ids = torch.cat([ids, nxt[:, None]], 1)
        done |= nxt == stop
        if bool(done.all()):
            break
    model.train(was)
    return ids, P


def unlikelihood_batch(model, tok, texts, rng: random.Random, n: int, n_tokens: int):
    """Complete n bare starts greedily and mark the repeating tokens: (ids [B, T], marks
    [B, T] float, 1 where the token at t repeats, so the loss applies to the prediction
    at t - 1, the share of generated tokens marked), or (None, None, 0.0) when no
    completion repeated itself."""
    starts = draw_starts(texts, rng, n)
    if not starts:
        return None, None, 0.0
    stop = tok.special("endoftext")
    prompt_ids = [prompts.encode(prompts.fim_spm(s, ""), tok, None)[0] for s in starts]
    ids, P = greedy(model, prompt_ids, n_tokens, stop)
    marks = torch.zeros(ids.shape, dtype=torch.float32)
    generated = 0
    for i, new in enumerate(ids[:, P:].tolist()):
        row = new
        if stop in row:
            row = row[:row.index(stop)]
        pieces = [tok.decode([t]) for t in row]
        generated += len(row)
        flags = marked_tokens(pieces, repeat_spans("".join(pieces)))
        for j, f in enumerate(flags):
            if f:
                marks[i, P + j] = 1.0
    share = float(marks.sum()) / max(generated, 1)
    if not marks.any():
        return None, None, share
    return ids, marks.to(ids.device), share


def unlikelihood_loss(logits, ids, marks, margin: float = 1.0):
    """Mean over the marked t of max(0, logit(ids[t]) - max other logit + margin), the
    logits [B, T-1, V] being those of inputs ids[:, :-1]: each repeating token is pushed
    until it is `margin` nats below the best other token at its place, so greedy
    decoding no longer picks it there, and then left alone.  The textbook unlikelihood
    -log(1 - p) was tried first: its gradient grows as 1 / (1 - p), and on these loops
    (p near 1) it outweighed the LM loss under the gradient clip; within 170 steps at
    weight 1 the model completed every start with text-like garbage (runs/lm7-collapsed)."""
    lg = logits.float()
    tgt = ids[:, 1:]
    own = lg.gather(-1, tgt[..., None])[..., 0]
    other = lg.scatter(-1, tgt[..., None], float("-inf")).amax(-1)
    m = marks[:, 1:]
    return (F.relu(own - other + margin) * m).sum() / m.sum().clamp_min(1.0)
