"""Per-document sessions and completions on the real tiny model, without LSP: prefix
reuse, the cache invariant, the LRU byte budget, the prompt window, type-ahead."""
import dataclasses

import pytest

from cromwell_lsp.features.completion import Completer, build_prompt, generate_text
from cromwell_lsp.features.session import Session, Sessions, common_prefix
from cromwell_lsp.model.generation import GenerationConfig
from cromwell_lsp.settings import Settings
from tests.server_helpers import tiny_model, tiny_model_path  # noqa: F401 (fixtures)



@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tiny model runs fastest on one kernel thread (and 100x slower on a busy machine
    with two)."""
    from cromwell_lsp import kernels
    before = kernels.threads()
    kernels.set_threads(1)
    yield
    kernels.set_threads(before)


CODE = "import os\n\n\ndef read(path):\n    with open(path) as f:\n        return f.read()\n\n\ndef main():\n    data = "


def test_common_prefix():
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([], [1]) == 0 and common_prefix([1, 2], [1, 2]) == 2


def test_prepare_reuses_the_common_prefix_and_keeps_one_token(tiny_model):
    s = Session(tiny_model.new_cache())
    ids = tiny_model.tokenizer.encode(CODE)
    assert s.prepare(ids) == ids and s.last_prefill_tokens == len(ids)
    tiny_model.forward(ids, s.cache)
    s.commit(ids)
    assert s.cache.length == len(s.ids) == len(ids)
    assert s.prepare(ids) == ids[-1:]  # all cached: feed the last token again
    tiny_model.forward(ids[-1:], s.cache)
    longer = ids + tiny_model.tokenizer.encode("x")
    s.commit(ids)
    assert s.prepare(longer) == longer[len(ids):]
    edited = ids[:5] + [7, 8]
    assert s.prepare(edited) == [7, 8] and s.cache.length == 5 == len(s.ids)


def test_generation_restores_the_cache_to_the_prompt(tiny_model):
    s = Session(tiny_model.new_cache())
    ids = tiny_model.tokenizer.encode(CODE)
    text = generate_text(tiny_model, s, ids, GenerationConfig(max_tokens=8))
    assert isinstance(text, str) and "<|" not in text
    assert s.ids == ids and s.cache.length == len(ids)
    again = generate_text(tiny_model, s, ids, GenerationConfig(max_tokens=8))
    assert again == text and s.last_prefill_tokens == 1


def test_lru_evicts_least_recently_used_under_the_budget(tiny_model):
    one = tiny_model.new_cache().nbytes
    sessions = Sessions(tiny_model.new_cache, budget_bytes=2 * one)
    sessions.get("a"), sessions.get("b")
    sessions.get("a")
    sessions.get("c")  # over budget: b is the least recently used
    assert "a" in sessions and "c" in sessions and "b" not in sessions
    assert [st.uri for st in sessions.stats()] == ["a", "c"]


def test_window_moves_in_large_steps(tiny_model):
    tok = tiny_model.tokenizer
    long = "".join(f"value_{i} = compute({i}, 'text')\n" for i in range(300))
    budget = 200
    first = build_prompt(long, "", tok, budget)
    assert len(first) <= budget
    second = build_prompt(long + "x", "", tok, budget)
    third = build_prompt(long + "x = 1\ny", "", tok, budget)
    assert common_prefix(first, second) >= len(first) - 2  # same window, tokens appended
    assert common_prefix(second, third) >= len(second) - 3


def test_completer_reuses_the_cache_and_answers_type_ahead(tiny_model):
    settings = dataclasses.replace(Settings(), max_tokens=8)
    c = Completer(tiny_model, Sessions(tiny_model.new_cache, 1 << 30))
    first = c.complete("u", CODE, len(CODE), settings)
    assert first.prefill_tokens > 20 and "<|" not in first.text and "\n" not in first.text
    if first.text:
        ahead = c.complete("u", CODE + first.text[0], len(CODE) + 1, settings)
        assert ahead.cached and ahead.text == first.text[1:] or len(first.text) == 1
    typed = CODE + "\x01" if not first.text.startswith("\x01") else CODE + "~"
    second = c.complete("u", typed, len(typed), settings)
    assert not second.cached and second.prefill_tokens * 10 <= first.prefill_tokens


def test_crlf_documents_get_crlf_completions(tiny_model):
    settings = dataclasses.replace(Settings(), max_tokens=16)
    c = Completer(tiny_model, Sessions(tiny_model.new_cache, 1 << 30))
    text = "def f(x):\r\n    "
    out = c.complete("u", text, len(text), settings)
    assert "\n" not in out.text.replace("\r\n", "")


@pytest.mark.parametrize("uri", ["u.py", "u.txt"])
def test_line_endings_do_not_change_what_the_model_writes(tiny_model, uri):
    """CRLF and lone-CR documents are prompted (and syntax-guarded) as the LF document:
    the completion is the same, in the document's own line ending."""
    settings = dataclasses.replace(Settings(), max_tokens=24)
    got = {}
    for eol in ("\n", "\r\n", "\r"):
        c = Completer(tiny_model, Sessions(tiny_model.new_cache, 1 << 30))
        text = CODE.replace("\n", eol)
        got[eol] = c.complete(uri, text, len(text), settings).text
    assert got["\n"]
    assert got["\r\n"] == got["\n"].replace("\n", "\r\n")
    assert got["\r"] == got["\n"].replace("\n", "\r")
