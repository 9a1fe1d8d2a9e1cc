"""`cromwell train edit`: after a `try` body the model writes the handler, by a closed-form
edit of one MLP's down projection instead of more training steps.

The model ends its text after a `try` body (`try:` / its body / end of text), which does
not parse.  Training legs that moved that choice moved 100,000 int8 values or more and
lost elsewhere (docs/MODEL.md).  This edit changes one weight matrix W (out x in) so that
its output at chosen positions moves by chosen amounts, while what it computes for the
inputs of ordinary text moves as little as possible:

- keys: W's input k_i at the last token of each context: a `try` statement of a training
  file prompted as a bare start, up to the line of its first handler (edit contexts), or
  a block followed by the rest of its text, where the end of text is right (kept
  contexts);
- targets: for an edit context, the change r_i of W's output there that makes the
  handler's first token (`except`, `finally`) likely, found by gradient steps on r_i
  alone with the weights fixed; for a kept context, r_i = 0;
- the edit: dW = R K^T (s C + K K^T)^-1, the least-squares change that maps each k_i
  toward r_i with s C (C: the second moment of W's inputs over rows of the training
  mixture, as GPTQ measures it) holding the outputs on ordinary inputs; `strength` s
  trades the two (larger: a smaller edit).

The edited checkpoint is exported as any other (`train export --gptq`, which leaves the
weights on their int8 levels as they were and rounds the edited matrix).  The method is
the rank-n model edit of the MEMIT line of work, here on one small matrix."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..model import prompts
from ..model.tokenizer import Tokenizer
from . import gptq, tasks
from .corpus import read_jsonl
from .export import load_checkpoint

LAYER = "ar.layers.1.ffn.w2"
MAX_TOKENS = 256  # a context's tokens at most


def _prompted(code: str, upto: int, tok) -> tuple[list[int], list[int], list[int]] | None:
    """`code` as a bare start is prompted (SPM with no suffix over its header and the first
    body line's indentation) and then written as the block task writes it: (the prompt's
    ids, the ids of the rest up to char `upto`, the ids of the whole rest); None when the
    block has no body line of its own."""
    h = tasks.header_end(code)
    if h is None:
        return None
    return (prompts.encode(prompts.fim_spm(code[:h], ""), tok)[0], tok.encode(code[h:upto]),
            tok.encode(code[h:]))


def handler_contexts(records: list[dict], tok, n: int, seed: int) -> list[tuple[list[int], int]]:
    """Up to `n` (ids, target): the first `try` statement (tasks.block_snippets) of each
    file, in an order drawn with `seed`, whose first clause starts on the line after its
    body: the ids up to that line, and that line's first token (`except`, `finally`) as
    the target."""
    order = list(records)
    random.Random(seed).shuffle(order)
    out = []
    for rec in order:
        for code in tasks.block_snippets(rec["text"]):
            after = tasks.try_body_end(code) if code.startswith("try") else None
            if after is None or not code.startswith(("except", "finally"), after):
                continue
            got = _prompted(code, after, tok)
            if got is None:
                continue
            head, body, rest = got
            if rest[:len(body)] != body or len(head) + len(body) > MAX_TOKENS:
                continue  # the handler's first token would not start where the body ends
            out.append((head + body, rest[len(body)]))
            break
        if len(out) >= n:
            break
    return out


def end_contexts(records: list[dict], tok, n: int, seed: int) -> list[tuple[list[int], int]]:
    """Up to `n` (ids, end of text): the first two blocks (tasks.block_snippets) of each
    file that are not `try` statements, in an order drawn with `seed`, prompted as a bare
    start and followed by the rest of the block, where the block task ends the text."""
    order = list(records)
    random.Random(seed).shuffle(order)
    end = tok.special("endoftext")
    out = []
    for rec in order:
        for code in tasks.block_snippets(rec["text"])[:2]:
            if code.startswith("try"):
                continue
            got = _prompted(code, len(code), tok)
            if got is not None and len(got[0]) + len(got[1]) <= MAX_TOKENS:
                out.append((got[0] + got[1], end))
        if len(out) >= n:
            break
    return out[:n]


class _Site:
    """A forward hook on one linear layer: keeps its input at the last position (the key)
    and adds `delta` to its output there."""

    def __init__(self, module):
        self.key = self.delta = None
        self.width = module.weight.shape[0]
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, _mod, inp, out):
        self.key = inp[0][:, -1].detach()
        if self.delta is not None:
            out = out.clone()
            out[:, -1] = out[:, -1] + self.delta
            return out
        return None


def _last_logp(twin, ids) -> torch.Tensor:
    return F.log_softmax(twin(torch.tensor([ids]), jepa=False).logits[0, -1], -1)


def keys_and_targets(twin, site: _Site, edits, keeps, steps: int = 40, lr: float = 0.5,
                     decay: float = 1e-3, enough: float = -0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """K (in, n) and R (out, n), float64: each context's key, and the change of the layer's
    output there that raises its target's log-probability to `enough` (Adam on the
    change alone, `steps` at most, an L2 `decay`); 0 for the kept contexts."""
    keys, changes = [], []
    for ids, target in edits:
        site.delta = torch.zeros(site.width, requires_grad=True)
        opt = torch.optim.Adam([site.delta], lr=lr)
        for _ in range(steps):
            lp = _last_logp(twin, ids)
            if lp[target].item() > enough:
                break
            loss = -lp[target] + decay * site.delta.pow(2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        keys.append(site.key[0].double())
        changes.append(site.delta.detach().double())
        site.delta = None
    with torch.no_grad():
        for ids, _ in keeps:
            twin(torch.tensor([ids]), jepa=False)
            keys.append(site.key[0].double())
            changes.append(torch.zeros(site.width, dtype=torch.float64))
    return torch.stack(keys, 1), torch.stack(changes, 1)


def solve(K: torch.Tensor, R: torch.Tensor, C: torch.Tensor, strength: float) -> torch.Tensor:
    """dW = R K^T (strength C + K K^T)^-1: dW k_i close to r_i, dW x small for the inputs
    x whose second moment is C."""
    return R @ K.T @ torch.linalg.inv(strength * C + K @ K.T)


def measure(twin, contexts) -> dict:
    """The mean probability of each context's target and the share where it is the most
    likely token."""
    with torch.no_grad():
        lps = [_last_logp(twin, ids) for ids, _ in contexts]
    return {"p": round(float(np.mean([lp[t].exp().item() for lp, (_, t) in zip(lps, contexts)])), 4),
            "top1": round(float(np.mean([lp.argmax().item() == t for lp, (_, t) in zip(lps, contexts)])), 4)}


def edit(ckpt: Path, out: Path, corpus: Path, tokenizer: Path, layer: str = LAYER,
         contexts: int = 200, strength: float = 1e4, seed: int = 0, rows: int = 32,
         log=print) -> dict:
    """Edit `layer` ("NAME" of a linear layer, e.g. ar.layers.1.ffn.w2) of `ckpt` on
    `contexts` handler contexts and as many kept ones from `corpus`'s training split; write
    out/ckpt.pt.  The report measures handler and end-of-text contexts of the validation
    split before and after, and the KL of the logits on training rows."""
    twin, state = load_checkpoint(ckpt)
    tok = Tokenizer(tokenizer)
    if state["tokenizer_sha256"] != tok.sha256:
        raise ValueError(f"{ckpt} was trained with another tokenizer than {tokenizer}")
    module = dict(twin.named_modules()).get(layer)
    if not isinstance(module, torch.nn.Linear):
        linears = [n for n, m in twin.named_modules() if isinstance(m, torch.nn.Linear)]
        raise ValueError(f"train edit: {layer!r} is not a linear layer of the model "
                         f"(e.g. {', '.join(linears[-3:])})")
    if contexts < 1 or strength <= 0:
        raise ValueError(f"train edit needs --edit-contexts 1 or more and --edit-strength "
                         f"above 0, not {contexts} and {strength}")
    for p in twin.parameters():
        p.requires_grad_(False)
    split = {s: list(read_jsonl(Path(corpus) / f"{s}.jsonl")) for s in ("train", "val")
             if (Path(corpus) / f"{s}.jsonl").is_file()}
    if "train" not in split:
        raise ValueError(f"train edit draws its contexts from {corpus}/train.jsonl, which "
                         f"is missing (build a corpus with `cromwell train corpus`)")
    edits = handler_contexts(split["train"], tok, contexts, 1 + 10 * seed)
    if not edits:
        raise ValueError(f"train edit: no `try` statement with a handler in {corpus}/train.jsonl")
    keeps = end_contexts(split["train"], tok, contexts, 2 + 10 * seed)
    checks = {"handler": handler_contexts(split.get("val", []), tok, 200, 3),
              "end": end_contexts(split.get("val", []), tok, 200, 4)}
    log(f"edit: {len(edits)} handler contexts, {len(keeps)} kept; validation: "
        f"{len(checks['handler'])} handler, {len(checks['end'])} end contexts")

    site = _Site(module)
    try:
        K, R = keys_and_targets(twin, site, edits, keeps)
    finally:
        site.handle.remove()
    seq_len = int(state.get("train_config", {}).get("seq_len") or 512)
    calib = gptq.calibration_rows(Path(corpus), tok, seq_len, rows)
    C = gptq.input_moments(twin, [layer + ".weight"], calib)[layer + ".weight"] / calib.size
    before = {k: measure(twin, c) for k, c in checks.items() if c}
    with torch.no_grad():
        kl_rows = [torch.as_tensor(calib[i:i + 4]) for i in range(0, min(16, len(calib)), 4)]
        base = [F.log_softmax(twin(x, jepa=False).logits, -1) for x in kl_rows]
        dW = solve(K, R, C, strength)
        rel = float(dW.norm() / module.weight.double().norm())
        module.weight += dW.float()
        kl = sum(F.kl_div(F.log_softmax(twin(x, jepa=False).logits, -1), b, log_target=True,
                          reduction="sum").item() for x, b in zip(kl_rows, base))
        kl /= sum(x.numel() for x in kl_rows)
    after = {k: measure(twin, c) for k, c in checks.items() if c}
    report = {"layer": layer, "handler_contexts": len(edits), "kept_contexts": len(keeps),
              "strength": strength, "seed": seed, "change_rel_norm": round(rel, 4),
              "kl_per_token": float(f"{kl:.3g}"), "before": before, "after": after}
    state["model"] = twin.state_dict()
    state["edits"] = state.get("edits", []) + [report]  # an edited checkpoint may be edited again
    Path(out).mkdir(parents=True, exist_ok=True)
    torch.save(state, Path(out) / "ckpt.pt")
    log(f"edit: wrote {Path(out) / 'ckpt.pt'}")
    return report
