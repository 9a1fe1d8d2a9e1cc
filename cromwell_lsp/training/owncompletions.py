"""The model's own completions that work, to train on (`cromwell train own`).

Unlikelihood steps (unlikelihood.py) only push a failing completion down; the small model
then takes the next cheapest one (a loop became a bare `return`, then an `isinstance` test
that returns; docs/MODEL.md).  These examples pull instead: for bare starts cut from
training files as the server prompts them (SPM, empty suffix, token healing), the engine
completes each greedily and by sampling; of the completions that, cut at their block's end,
parse, do not loop and do something (evaluate.judged), the one nearest the
file's real block is kept.  Training on them (`run --own-data`, the task "own", laid out by tasks.start_example) raises
completions the model already finds likely and that work, along its own path rather than
only the file's (rejection-sampling fine-tuning, the self-training of expert iteration).

The starts come from training files only; the held-out starts of `train eval` are cut from
validation files, so the eval never sees one of its own starts here.
"""
from __future__ import annotations

import difflib
import json
import random
import time
from pathlib import Path

from . import tasks
from .evaluate import (cut_at_block_end, judged, line_kind, misaligned_after, need_tokenizer,
                       server_prompt, useful)


def block_kind(block: str) -> str:
    """The statement a block is: the kind (evaluate.line_kind) of its first line after
    any decorators."""
    return line_kind(next((l for l in block.splitlines()
                           if l.strip() and not l.lstrip().startswith("@")), ""))


def draw_cuts(texts: list[tuple[str, str]], rng: random.Random, n: int,
              tries: int = 0, kinds: frozenset[str] | None = None) -> list[tuple[str, str, str]]:
    """Up to n (path, start, rest): a block of a random training file, its docstring
    dropped, cut as block_example cuts it (tasks.block_cut).  `kinds`: only blocks of
    those statements (block_kind), for a round aimed at the starts the model fails most
    (a class body that runs past the token budget)."""
    out = []
    for _ in range(tries or 20 * n):
        if len(out) == n:
            break
        path, text = rng.choice(texts)
        blocks = tasks.block_snippets(text)
        if kinds is not None:
            blocks = [b for b in blocks if block_kind(b) in kinds]
        if blocks:
            start, rest = tasks.block_cut(tasks._drop_docstring(rng.choice(blocks)), rng)
            out.append((path, start, rest))
    return out


def works(start: str, text: str) -> str | None:
    """The completion cut at its block's end when it parses with the start, does not loop,
    does something and lays out its brackets as a formatter would (the eval's tests,
    evaluate.judged and evaluate.useful); None otherwise.  Parsing alone let
    `def __init__(self,` / `):` through: valid, and no developer writes it; kept, each
    round trained it further (7, 39, 89, 109 misaligned rows in rounds 1-4)."""
    j = judged(start, text)
    return j["completion"] if useful(j) else None


def nearest(rest: str, candidates: list[str]) -> tuple[str, float] | None:
    """The candidate most like the file's real rest of the block (difflib ratio), with
    its ratio; None when there is none."""
    best = None
    for comp in dict.fromkeys(candidates):  # distinct, in order
        r = difflib.SequenceMatcher(None, comp, rest, autojunk=False).ratio()
        if best is None or r > best[1]:
            best = (comp, r)
    return best


def complete_all(model, start: str, samples: int, temperature: float, top_p: float,
                 seed: int, max_tokens: int = 96) -> list[str]:
    """The greedy completion of a start, then `samples` sampled ones, each prompted and
    healed as the server does (evaluate.server_prompt), on one session."""
    from ..features.completion import generate_text
    from ..features.session import Session
    from ..model.generation import GenerationConfig
    from ..model.sampling import SamplingParams

    ids, lead, max_tokens = server_prompt(model, start, max_tokens)
    session = Session(model.new_cache(len(ids) + max_tokens))
    out = []
    for k in range(samples + 1):
        sampling = (SamplingParams(temperature=0.0) if k == 0 else
                    SamplingParams(temperature=temperature, top_p=top_p, seed=seed * 1000 + k))
        out.append(generate_text(model, session, ids,
                                 GenerationConfig(max_tokens=max_tokens, sampling=sampling),
                                 lead=lead, stop_loops=True))
    return out


def _worker(job) -> list[dict]:
    weights, cuts, samples, temperature, top_p, seed0 = job
    import warnings

    from .. import kernels
    from ..model import CromwellVLJEPA

    # generated code that parses can still draw SyntaxWarnings ("1abc"): not worth a line each
    warnings.filterwarnings("ignore", category=SyntaxWarning)
    kernels.set_threads(1)
    model = CromwellVLJEPA.load(weights)
    rows = []
    for i, (path, start, rest) in enumerate(cuts):
        texts = complete_all(model, start, samples, temperature, top_p, seed0 + i)
        good = [(k, c) for k, t in enumerate(texts) if (c := works(start, t)) is not None]
        ref = cut_at_block_end(start + rest, start)[len(start):]
        best = nearest(ref, [c for _, c in good])
        rows.append({"path": path, "start": start, "greedy_works": bool(good and good[0][0] == 0),
                     "greedy": texts[0], "working": len(good), "completion": best[0] if best else None,
                     "ratio": round(best[1], 3) if best else None, "real": ref})
    return rows


def build(weights: Path, corpus: Path, out: Path, n: int, samples: int = 6,
          temperature: float = 0.8, top_p: float = 0.95, seed: int = 0, workers: int = 2,
          log=print, kinds: frozenset[str] | None = None) -> dict:
    """Complete n bare starts from corpus/train.jsonl; write the working completions to
    `out` (JSON lines: path, start, completion, ratio, and for preference pairs
    (prefer.py) the greedy completion as decoded with whether it works, and the file's
    real block after the start) and return the counts.  `kinds`: starts of those
    statements only (draw_cuts)."""
    from concurrent.futures import ProcessPoolExecutor

    from .corpus import read_jsonl

    need_tokenizer(weights)
    texts = [(r["path"], r["text"]) for r in read_jsonl(corpus / "train.jsonl")]
    cuts = draw_cuts(texts, random.Random(seed), n, kinds=kinds)
    if not cuts:
        raise ValueError(f"no block of {', '.join(sorted(kinds or ())) or 'any kind'} in "
                         f"{corpus / 'train.jsonl'} to start from")
    workers = max(1, min(workers, len(cuts)))
    size = -(-len(cuts) // workers)
    jobs = [(str(weights), cuts[i:i + size], samples, temperature, top_p, seed * 100003 + i)
            for i in range(0, len(cuts), size)]
    t0 = time.time()
    rows: list[dict] = []
    with ProcessPoolExecutor(len(jobs) or 1) as pool:
        for part in pool.map(_worker, jobs):
            rows += part
    kept = [r for r in rows if r["completion"] is not None]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as f:
        for r in kept:
            f.write(json.dumps({k: r[k] for k in ("path", "start", "completion", "ratio",
                                                  "greedy_works", "greedy", "real")}) + "\n")
    report = {"starts": len(rows), "greedy_works": sum(r["greedy_works"] for r in rows),
              "some_sample_works": len(kept), "samples_per_start": samples + 1,
              "working_completions": sum(r["working"] for r in rows),
              "mean_ratio": round(sum(r["ratio"] for r in kept) / max(len(kept), 1), 3),
              "minutes": round((time.time() - t0) / 60, 1), "out": str(out)}
    log(f"[own] {json.dumps(report)}")
    return report


def load(path: Path, min_ratio: float = 0.0) -> list[tuple[str, str]]:
    """(start, completion) pairs of a file `build` wrote, those at least min_ratio like
    their file's real block and laid out as `works` now asks (files written before it
    did hold misaligned rows); train on them as tasks.start_example("own", ...)."""
    from .corpus import read_jsonl

    return [(r["start"], r["completion"]) for r in read_jsonl(path)
            if r["ratio"] >= min_ratio and not misaligned_after(r["start"], r["completion"])]
