"""Choosing the next token from logits, and turning a growing list of tokens into text
pieces that are safe to show.

Sampling (llama2.c keeps it apart from forward; so do we): greedy when temperature is 0;
otherwise softmax(logits / temperature), restricted to the top_k most likely tokens
and to the smallest set whose probability reaches top_p (nucleus), drawn with a seeded
numpy Generator so a seed reproduces a completion.  Tokens in `banned` (special tokens
the caller must never emit) get probability zero.  A guard (features.syntaxguard) may
refuse the chosen token; its mend of the token is taken when it has one (a few tokens,
forced in turn), else the next choice of the same distribution.  `avoid_first`: tokens
the first choice past a constraint's lead may not be (an alternative completion starts
differently); the sampler records that first choice (`first_choice`).

TextStream turns token ids into text pieces for streaming: it holds back a piece while
it ends in an incomplete UTF-8 sequence (decoded as U+FFFD) or could be the start of a
stop string, and cuts the text at the first stop string.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GUARD_TRIES = 8  # candidates a guard may refuse in a row for one token


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0
    top_k: int = 0          # 0: no limit
    top_p: float = 1.0      # 1: no limit
    seed: int | None = None

    def __post_init__(self):
        if not (0.0 <= self.temperature <= 100.0):
            raise ValueError(f"temperature must be in 0..100, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not (0.0 < self.top_p <= 1.0):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


class Sampler:
    def __init__(self, params: SamplingParams = SamplingParams(), banned=(), constraint=None,
                 guard=None, avoid_first=()):
        self.params = params
        self.rng = np.random.default_rng(params.seed)
        self.banned = np.array(sorted(set(int(b) for b in banned)), dtype=np.int64)
        self.constraint = constraint  # e.g. healing.LeadConstraint: allowed ids, advance(id)
        self.guard = guard  # e.g. features.syntaxguard.SyntaxGuard: rejects(id), advance(id)
        self.forced: list[int] = []  # the rest of a guard's mend, taken before any choice
        self.avoid_first = sorted(set(int(a) for a in avoid_first))
        self.first_choice: int | None = None  # the first token that wrote past the lead

    def _writes(self, tid: int) -> bool:
        """Does the token write text of its own (past what the constraint's lead holds)?
        A constraint that cannot tell (no `passes`) is taken to hold every token it allows."""
        c = self.constraint
        if c is None or not c.active:
            return True
        passes = getattr(c, "passes", None)
        return passes is not None and passes(tid)

    def __call__(self, logits: np.ndarray) -> int:
        tid = self._pick(logits)
        if self.first_choice is None and self._writes(tid):
            self.first_choice = tid
        for follower in (self.constraint, self.guard):
            if follower is not None:
                follower.advance(tid)
        return tid

    def _pick(self, logits: np.ndarray) -> int:
        if self.forced:
            return self.forced.pop(0)
        logits = np.asarray(logits, dtype=np.float64).copy()  # (V,)
        if self.banned.size:
            logits[self.banned[self.banned < logits.size]] = -np.inf
        if self.avoid_first and self.first_choice is None:
            avoid = [a for a in self.avoid_first if a < logits.size and self._writes(a)]
            logits[avoid] = -np.inf
        if self.constraint is not None and self.constraint.active:
            allowed = self.constraint.allowed()
            allowed = allowed[allowed < logits.size]
            keep = logits[allowed]
            logits[:] = -np.inf
            logits[allowed] = keep
        if self.guard is None:
            return self._draw(logits)
        # The guard refuses a token: its mend when the guard has one (the tokens that
        # spell the token's text mended, taken in turn), else the next choice of the same
        # distribution, up to GUARD_TRIES of them; past that the model's own first
        # choice stands.
        first = tid = self._draw(logits)
        if not self.guard.rejects(tid):
            return tid
        repair = getattr(self.guard, "repair", None)
        if repair is not None and (self.constraint is None or not self.constraint.active):
            mended = repair(tid)
            if mended:
                self.forced = list(mended[1:])
                return mended[0]
        for _ in range(GUARD_TRIES - 1):
            logits[tid] = -np.inf
            if not np.isfinite(logits).any():
                break
            tid = self._draw(logits)
            if not self.guard.rejects(tid):
                return tid
        return first

    def _draw(self, logits: np.ndarray) -> int:
        p = self.params
        if p.temperature == 0.0:
            return int(np.argmax(logits))
        logits = logits / p.temperature
        if p.top_k and p.top_k < logits.size:
            kth = np.partition(logits, -p.top_k)[-p.top_k]
            logits[logits < kth] = -np.inf
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        if p.top_p < 1.0:
            order = np.argsort(-probs, kind="stable")
            cum = np.cumsum(probs[order])
            keep = order[: int(np.searchsorted(cum, p.top_p) + 1)]
            mask = np.zeros_like(probs, dtype=bool)
            mask[keep] = True
            probs = np.where(mask, probs, 0.0)
            probs /= probs.sum()
        return int(self.rng.choice(probs.size, p=probs))


class TextStream:
    """Feed token ids one at a time; `push` returns the text that became safe to show."""

    def __init__(self, tokenizer, stops=(), lead: str = ""):
        self.tok = tokenizer
        self.stops = tuple(s for s in stops if s)
        self.lead = lead          # text the tokens re-spell first (token healing): not shown
        self.ids: list[int] = []
        self.emitted = 0          # characters of the decoded text already returned
        self.stopped = False
        self.text = ""

    def _holdback(self, text: str) -> int:
        """How many trailing characters might begin a stop string."""
        hold = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:n]):
                    hold = max(hold, n)
                    break
        return hold

    def push(self, tid: int) -> str:
        if self.stopped:
            return ""
        self.ids.append(int(tid))
        text = self.tok.decode(self.ids)
        if self.lead:
            if not text.startswith(self.lead):
                return ""  # still re-spelling the healed text
            text = text[len(self.lead):]
        for stop in self.stops:
            at = text.find(stop)
            if at >= 0:
                text = text[:at]
                self.stopped = True
        if not self.stopped and text.endswith("\ufffd"):
            return ""  # an incomplete UTF-8 sequence: wait for the next token
        safe = len(text) if self.stopped else len(text) - self._holdback(text)
        piece = text[self.emitted:max(safe, self.emitted)]
        self.emitted = max(self.emitted, safe)
        self.text = text
        return piece

    def flush(self) -> str:
        """The held-back rest, once generation has ended without a stop string."""
        rest = self.text[self.emitted:]
        self.emitted = len(self.text)
        return rest.rstrip("\ufffd")
