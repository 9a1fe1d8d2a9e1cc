"""Per-document model sessions: each open document keeps its own KV cache between
keystrokes, so a request prefills only the tokens that changed (DESIGN.md, "The language
server"; the prompt-cache reuse of llama.cpp's server and llama.vscode).

Invariant: a session's cache holds exactly the states of `session.ids` (no more, no less).
  prepare(prompt_ids)  cut the cache back to the longest common token prefix with the new
                       prompt (always leaving at least one token to feed, since generation
                       needs the logits of the last prompt token) and return the tokens to
                       prefill; `last_prefill_tokens` records how many.
  commit(prompt_ids)   after generation: cut the generated tokens off again, so the cache
                       holds exactly the prompt.
  prepare(ids, idle=True)  the same for an idle pre-fill (completion.Completer.prefill):
                       the cache filled ahead of the next request, not counted as one.
Counters (cromwell/stats): `last_prefill_tokens` of the last request, `prefilled_tokens`
over all requests, `idle_prefilled_tokens` over all idle pre-fills.
Sessions live in an LRU (`Sessions`) with a byte budget over all documents' caches; the
least recently used documents are evicted first (the active one never is).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class Session:
    """One document's KV cache and the token ids it holds."""

    def __init__(self, cache):
        self.cache = cache
        self.ids: list[int] = []
        self.last_prefill_tokens = 0
        self.prefilled_tokens = 0       # over all requests
        self.idle_prefilled_tokens = 0  # over all idle pre-fills

    def prepare(self, prompt_ids: list[int], idle: bool = False) -> list[int]:
        """Truncate the cache to what the new prompt shares with it; return the new tokens
        to prefill (never empty for a non-empty prompt).  idle: an idle pre-fill, which
        counts what it really prefilled itself (idle_prefilled_tokens)."""
        if not prompt_ids:
            raise ValueError("the prompt is empty; nothing to prefill")
        keep = min(common_prefix(self.ids, prompt_ids), len(prompt_ids) - 1)
        kept = self.cache.truncate(keep)  # may cut further (an attached image)
        self.ids = list(prompt_ids[:kept])
        new = list(prompt_ids[kept:])
        if not idle:
            self.last_prefill_tokens = len(new)
            self.prefilled_tokens += len(new)
        return new

    def commit(self, prompt_ids: list[int]) -> None:
        """After generation (or a failed one): the cache holds exactly the prompt again, or
        the part of it that it really has."""
        kept = self.cache.truncate(len(prompt_ids))
        self.ids = list(prompt_ids[:kept])

    def reset(self) -> None:
        self.cache.truncate(0)
        self.ids = []

    @property
    def nbytes(self) -> int:
        return self.cache.nbytes


@dataclass(frozen=True)
class SessionStats:
    uri: str
    cached_tokens: int
    cache_bytes: int
    last_prefill_tokens: int
    prefilled_tokens: int = 0
    idle_prefilled_tokens: int = 0

    def to_json(self) -> dict:
        return {"uri": self.uri, "cached_tokens": self.cached_tokens,
                "cache_bytes": self.cache_bytes, "last_prefill_tokens": self.last_prefill_tokens,
                "prefilled_tokens": self.prefilled_tokens,
                "idle_prefilled_tokens": self.idle_prefilled_tokens}


class Sessions:
    """An LRU of sessions by document URI, kept under a byte budget."""

    def __init__(self, new_cache, budget_bytes: int):
        self._new_cache = new_cache  # () -> KVCache
        self.budget_bytes = budget_bytes
        self._by_uri: OrderedDict[str, Session] = OrderedDict()

    def get(self, uri: str) -> Session:
        """The document's session (created on first use), marked most recently used; other
        documents are evicted while the total is over budget."""
        session = self._by_uri.get(uri)
        if session is None:
            session = self._by_uri[uri] = Session(self._new_cache())
        self._by_uri.move_to_end(uri)
        self.evict(keep=uri)
        return session

    def evict(self, keep: str | None = None) -> list[str]:
        """Drop least recently used sessions until the budget holds; returns their URIs."""
        dropped = []
        for uri in list(self._by_uri):
            if self.total_bytes <= self.budget_bytes:
                break
            if uri != keep:
                del self._by_uri[uri]
                dropped.append(uri)
        return dropped

    def close(self, uri: str) -> None:
        self._by_uri.pop(uri, None)

    def __contains__(self, uri: str) -> bool:
        return uri in self._by_uri

    def __len__(self) -> int:
        return len(self._by_uri)

    @property
    def total_bytes(self) -> int:
        return sum(s.nbytes for s in self._by_uri.values())

    def stats(self) -> list[SessionStats]:
        return [SessionStats(uri, len(s.ids), s.nbytes, s.last_prefill_tokens,
                             s.prefilled_tokens, s.idle_prefilled_tokens)
                for uri, s in self._by_uri.items()]
