"""`cromwell train edit`: a closed-form edit of one MLP's down projection instead of more
training steps, for a choice the model gets wrong.  Two tasks:

- `handler`: after a `try` body the model writes the handler;
- `brackets`: a compound statement's header does not end (`:` at a line's end) while one
  of its brackets is still open (`if not isinstance(x, (int, float):`).

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

For `brackets` the contexts are the model's own: the engine's int8 export of the
checkpoint completes bare starts of training files (never a held-out start), and where a
completion first ends a header line with a bracket open, the context is the start and the
completion up to that colon, and the target the innermost bracket's closer.  Kept
contexts are the model's own too: a point before a closer or a header's colon in its
completions that work (evaluate.useful), and the block ends above.

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
TASKS = ("handler", "brackets")
# the hold each task's edit was judged with (docs/MODEL.md): the bracket contexts are the
# model's own text, nearer ordinary inputs than a `try` body's end, and a stronger hold
# kept the completions that already worked
STRENGTH = {"handler": 1e4, "brackets": 1e5}
_CLOSER = {"(": ")", "[": "]", "{": "}"}


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


_HEADERS = ("if", "elif", "while", "for", "with", "def", "class", "async", "except")


def header_bracket_slip(code: str) -> tuple[int, str] | None:
    """The first colon of `code` that ends a line (a comment may follow it) while a bracket
    opened on a compound statement's header line is still open, as in `if f(x:` or
    `for k in sorted(d:`: (its offset, the closer of the innermost open bracket); None
    when there is none.  Comments and string literals (single or triple quoted, a
    single-quoted one ending at its line's end when unclosed) are skipped; a closer with
    nothing open is left alone."""
    stack: list[tuple[str, int]] = []
    i, n = 0, len(code)
    while i < n:
        ch = code[i]
        if ch == "#":
            j = code.find("\n", i)
            i = n if j < 0 else j
        elif ch in "'\"":
            quote = code[i:i + 3] if code[i:i + 3] in ('"""', "'''") else ch
            if len(quote) == 3:
                j = code.find(quote, i + 3)
                i = n if j < 0 else j + 3
                continue
            j = i + 1
            while j < n and code[j] not in (ch, "\n"):
                j += 2 if code[j] == "\\" else 1
            i = j + 1
        else:
            if ch in _CLOSER:
                stack.append((ch, i))
            elif ch in ")]}" and stack:
                stack.pop()
            elif ch == ":" and stack:
                after = code[i + 1:].split("\n", 1)[0].strip()
                line = code[code.rfind("\n", 0, stack[0][1]) + 1:stack[0][1]].split()
                if (not after or after.startswith("#")) and line and line[0] in _HEADERS:
                    return i, _CLOSER[stack[-1][0]]
            i += 1
    return None


def _context(start: str, text: str, at: int, then: str, tok) -> tuple[list[int], int] | None:
    """The bare-start prompt of `start` and text[:at] as the block task writes it, up to
    where its tokens part from those of text[:at] + `then`; the latter's next token as
    the target.  None past MAX_TOKENS."""
    head = prompts.encode(prompts.fim_spm(start, ""), tok)[0]
    ids, other = tok.encode(text[:at]), tok.encode(text[:at] + then)
    k = 0
    while k < min(len(ids), len(other)) and ids[k] == other[k]:
        k += 1
    if k >= len(other) or len(head) + k > MAX_TOKENS:
        return None
    return head + other[:k], other[k]


def bracket_contexts(rows: list[dict]) -> list[tuple[str, str, int, str]]:
    """(start, completion, offset, closer) for each judged completion (evaluate.judged)
    that does not parse and whose start and completion first end a header line with a
    bracket open inside the completion."""
    out = []
    for r in rows:
        if r["parses"]:
            continue
        slip = header_bracket_slip(r["start"] + r["completion"])
        if slip and slip[0] >= len(r["start"]):
            out.append((r["start"], r["completion"], slip[0] - len(r["start"]), slip[1]))
    return out


def training_starts(records: list[dict], exclude: set[str], n: int, seed: int) -> list[str]:
    """Up to n distinct bare starts of training files, cut as the held-out starts are
    (after a block's header and its first body line's indentation), up to 3 a file in an
    order drawn with `seed`, none of them in `exclude` (the held-out starts)."""
    from .evaluate import _val_starts

    order = list(records)
    rng = random.Random(seed)
    rng.shuffle(order)
    seen, out = set(exclude), []
    for rec in order:
        cuts = [s for s in _val_starts(rec) if s not in seen]
        for s in rng.sample(cuts, min(3, len(cuts))):
            seen.add(s)
            out.append(s)
        if len(out) >= n:
            break
    return out[:n]


def own_bracket_contexts(rows: list[dict], tok, n: int, seed: int) -> dict:
    """From judged completions of training starts: "edit", up to n bracket slips as
    (ids, closer); "keep", as many points of working completions (evaluate.useful)
    before a closer or a header's colon, as (ids, the token written there); and "check"
    (a sixth of the slips, at least 20 where there are, and 200 kept points), held back
    from the edit to report on."""
    from .evaluate import useful

    rng = random.Random(seed)
    slips = [c for c in (_context(s, t, i, closer + t[i:], tok)
                         for s, t, i, closer in bracket_contexts(rows)) if c]
    rng.shuffle(slips)
    held = min(max(20, len(slips) // 6), len(slips) // 2)
    keeps = []
    good = [r for r in rows if useful(r)]
    rng.shuffle(good)
    for r in good:
        t = r["completion"]
        spots = [i for i, ch in enumerate(t) if ch in ")]}" or t.startswith(":\n", i)]
        if spots:
            i = rng.choice(spots)
            got = _context(r["start"], t, i, t[i:], tok)
            if got:
                keeps.append(got)
        if len(keeps) >= n + 200:
            break
    edits = slips[held:held + n]
    return {"edit": edits, "keep": keeps[:len(edits)],
            "check": {"slip": slips[:held], "kept": keeps[n:n + 200]}}


def own_completions(weights: Path, tok, split: dict, n: int, seed: int, log) -> list[dict]:
    """The judged greedy completions (evaluate.completions) of n training starts
    (training_starts, none of them a held-out start of the validation files) by the
    engine on `weights`, whose tokenizer must be `tok`."""
    from ..model import tokenizer_beside
    from .evaluate import _val_starts, completions_in_workers, need_tokenizer

    need_tokenizer(Path(weights))
    if Tokenizer(tokenizer_beside(Path(weights))).sha256 != tok.sha256:
        raise ValueError(f"{weights} was exported with another tokenizer than the checkpoint's")
    held = {s for rec in split.get("val", []) for s in _val_starts(rec)}
    chosen = training_starts(split["train"], held, n, 6 + 10 * seed)
    log(f"edit: completing {len(chosen)} training starts with {weights}")
    return completions_in_workers(Path(weights), chosen)


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
         contexts: int = 200, strength: float | None = None, seed: int = 0, rows: int = 32,
         task: str = "handler", weights: Path | None = None, starts: int = 15000,
         own: list[dict] | None = None, log=print) -> dict:
    """Edit `layer` ("NAME" of a linear layer, e.g. ar.layers.1.ffn.w2) of `ckpt` for
    `task` (TASKS) on up to `contexts` contexts of `corpus`'s training split and as many
    kept ones; write out/ckpt.pt.  `strength`: the hold (default: the task's, STRENGTH).
    `brackets` reads the model's own completions of `starts` training starts, generated
    by `weights` (the int8 export of `ckpt`) unless `own` (judged rows, as
    evaluate.completions gives them) is given.  The report measures contexts held back
    from the edit before and after (validation files' for `handler`), and the KL of the
    logits on training rows."""
    if task not in TASKS:
        raise ValueError(f"train edit: no task {task!r} (one of {', '.join(TASKS)})")
    if task == "brackets" and own is None and weights is None:
        raise ValueError("train edit --edit-task brackets reads the model's own completions: "
                         "give --weights, the int8 export of --ckpt")
    strength = STRENGTH[task] if strength is None else strength
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
    ends = end_contexts(split["train"], tok, contexts, 2 + 10 * seed)
    if task == "handler":
        edits = handler_contexts(split["train"], tok, contexts, 1 + 10 * seed)
        if not edits:
            raise ValueError(f"train edit: no `try` statement with a handler in {corpus}/train.jsonl")
        keeps = ends
        checks = {"handler": handler_contexts(split.get("val", []), tok, 200, 3),
                  "end": end_contexts(split.get("val", []), tok, 200, 4)}
    else:
        if own is None:
            own = own_completions(weights, tok, split, starts, seed, log)
        got = own_bracket_contexts(own, tok, contexts, 5 + 10 * seed)
        edits, checks = got["edit"], got["check"]
        if not edits:
            raise ValueError(f"train edit: none of {len(own)} completions of training starts "
                             f"ends a header with a bracket open; nothing to edit")
        keeps = got["keep"] + ends
    log(f"edit ({task}): {len(edits)} contexts to edit, {len(keeps)} kept; held back: "
        + ", ".join(f"{len(c)} {k}" for k, c in checks.items()))

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
    report = {"task": task, "layer": layer, "edit_contexts": len(edits), "kept_contexts": len(keeps),
              "strength": strength, "seed": seed, "change_rel_norm": round(rel, 4),
              "kl_per_token": float(f"{kl:.3g}"), "before": before, "after": after}
    state["model"] = twin.state_dict()
    state["edits"] = state.get("edits", []) + [report]  # an edited checkpoint may be edited again
    Path(out).mkdir(parents=True, exist_ok=True)
    torch.save(state, Path(out) / "ckpt.pt")
    log(f"edit: wrote {Path(out) / 'ckpt.pt'}")
    return report
