"""Generation on top of Engine.forward: the decode loop, its limits, and JEPA-guided
self-speculative decoding.

Plain loop: prefill the new prompt tokens, then one forward per token, sampling from the
last logits, until max_tokens, an end token, the deadline or a cancel event (checked
between tokens, so an editor's $/cancelRequest stops within one token).

Self-speculative decoding (greedy only), with the model's own JEPA head as the drafter:
after processing position t the JEPA head predicts the joint states z[t+1..t+3].  The
next token g = argmax(logits at t) is exact.  Running the AR head on the predicted
z[t+1..t+3] (scratch positions of its cache, undone right after) gives drafts for the
tokens at t+2..t+4; one forward over [g, drafts] verifies them all, the longest prefix
that matches the model's own argmax is accepted, and the cache is truncated past it.
The output is the plain greedy output (same tokens); what changes is how many forward
calls produce it.  The acceptance rate (accepted / drafted) is reported in the stats.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .sampling import Sampler, SamplingParams


@dataclass(frozen=True)
class GenerationConfig:
    max_tokens: int = 64
    stop: tuple = ()                 # stop strings (applied to text by the caller's stream)
    deadline_s: float | None = None  # wall-clock budget, from the start of generation
    sampling: SamplingParams = field(default_factory=SamplingParams)
    speculative: bool = False        # JEPA self-speculative decoding (greedy only)

    def __post_init__(self):
        if self.max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {self.max_tokens}")


@dataclass
class GenerationStats:
    prefill_tokens: int = 0
    generated: int = 0
    forward_calls: int = 0
    drafted: int = 0
    accepted: int = 0
    stop_reason: str = ""
    first_choice: int | None = None  # the first token past a constraint's lead
    prefill_s: float = 0.0
    decode_s: float = 0.0

    @property
    def acceptance(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0


class _Limits:
    def __init__(self, config, cancel, stats):
        self.config, self.cancel, self.stats = config, cancel, stats
        self.t0 = time.perf_counter()

    def reached(self) -> bool:
        s, c = self.stats, self.config
        if self.cancel is not None and self.cancel.is_set():
            s.stop_reason = "cancelled"
        elif s.generated >= c.max_tokens:
            s.stop_reason = "max_tokens"
        elif c.deadline_s is not None and time.perf_counter() - self.t0 > c.deadline_s:
            s.stop_reason = "deadline"
        return bool(s.stop_reason)


def generate_ids(engine, cache, new_tokens, config: GenerationConfig = GenerationConfig(),
                 image_state=None, stop_ids=(), banned_ids=(), cancel=None,
                 stats: GenerationStats | None = None, constraint=None, guard=None,
                 avoid_first=()):
    """Yield generated token ids.  new_tokens (at least one) are the prompt tokens the cache
    does not hold yet; the cache ends holding the prompt and the generated tokens except
    the last one yielded (whose state nobody needed).  `constraint` (healing.LeadConstraint)
    restricts the first tokens; `guard` (features.syntaxguard.SyntaxGuard) may refuse a
    token, and the next choice is taken; `avoid_first`: tokens the first one past the lead
    may not be (stats.first_choice says which it was).  Speculation is off while any of
    them is given (drafts would have to obey them too)."""
    stats = stats if stats is not None else GenerationStats()
    limits = _Limits(config, cancel, stats)
    stop_ids = set(int(s) for s in stop_ids)
    greedy = config.sampling.temperature == 0.0
    spec = (config.speculative and greedy and constraint is None and guard is None
            and not avoid_first and getattr(engine, "jepa", None) is not None)
    sampler = Sampler(config.sampling, banned=banned_ids, constraint=constraint, guard=guard,
                      avoid_first=avoid_first)
    t0 = time.perf_counter()
    out = engine.forward(new_tokens, cache, image_state, jepa=spec, last_only=not spec)
    stats.prefill_tokens += len(new_tokens)
    stats.forward_calls += 1
    stats.prefill_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    try:
        if spec:
            logits, preds = out
            yield from _speculative(engine, cache, logits[-1], preds[:, -1], sampler, stop_ids,
                                    limits, stats)
        else:
            yield from _plain(engine, cache, out[-1], sampler, stop_ids, limits, stats)
    finally:
        stats.decode_s = time.perf_counter() - t1
        stats.first_choice = sampler.first_choice


def _plain(engine, cache, logits, sampler, stop_ids, limits, stats):
    while not limits.reached():
        tok = sampler(logits)
        if tok in stop_ids:
            stats.stop_reason = "end_token"
            return
        stats.generated += 1
        yield tok
        if limits.reached():
            return
        logits = engine.forward([tok], cache, last_only=True)[-1]
        stats.forward_calls += 1


def _draft(engine, cache, z_pred: np.ndarray, sampler) -> list[int]:
    """Draft tokens from predicted joint states [k, J]: the AR head reads them as if they
    were the next positions (then its cache is cut back)."""
    ar = cache.ar
    start = ar.length
    h = engine.ar(np.ascontiguousarray(z_pred), ar)  # (k, d)
    ar.truncate(start)
    logits = engine.output(np.ascontiguousarray(h))  # (k, V)
    return [sampler(row) for row in logits]


def _speculative(engine, cache, logits, z_pred, sampler, stop_ids, limits, stats):
    while not limits.reached():
        g = sampler(logits)  # exact: the model's own greedy token
        if g in stop_ids:
            stats.stop_reason = "end_token"
            return
        stats.generated += 1
        yield g
        if limits.reached():
            return
        room = limits.config.max_tokens - stats.generated
        drafts = _draft(engine, cache, z_pred, sampler)[:max(0, min(room, len(z_pred)))]
        base = cache.length
        logits_all, preds = engine.forward([g] + drafts, cache, jepa=True)
        stats.forward_calls += 1
        stats.drafted += len(drafts)
        accepted = 0
        for i, d in enumerate(drafts):
            if sampler(logits_all[i]) != d:
                break
            accepted += 1
        stats.accepted += accepted
        cache.truncate(base + 1 + accepted)
        for d in drafts[:accepted]:
            if d in stop_ids:
                stats.stop_reason = "end_token"
                return
            stats.generated += 1
            yield d
            if limits.reached():
                return
        logits, z_pred = logits_all[accepted], preds[:, accepted]
