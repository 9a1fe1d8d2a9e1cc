"""Idle pre-fill without LSP: where the last edit ended, and a pre-filled cache that leaves
the next completion a token to prefill and the same answer; kvCache off refills it all."""
import dataclasses
import threading

import pytest

from cromwell_lsp.features.completion import Completer
from cromwell_lsp.features.idle import edit_end
from cromwell_lsp.features.session import Sessions
from cromwell_lsp.settings import Settings
from tests.server_helpers import tiny_model, tiny_model_path  # noqa: F401 (fixtures)

CODE = ("import os\n\n\ndef read(path):\n    with open(path) as f:\n        return f.read()\n"
        "\n\ndef main():\n    data = read('x.txt')\n    print(len(data), ")
SETTINGS = Settings(max_tokens=6)


pytestmark = pytest.mark.usefixtures("one_kernel_thread")


def completer(model):
    return Completer(model, Sessions(lambda: model.new_cache(256), 1 << 30))


@pytest.mark.parametrize("old, new, end", [
    ("xay", "xaay", 3),          # typing "a" after "a": after the new one
    ("abc", "abcd", 4), ("abcd", "abc", 3), ("abc", "abc", 3), ("", "x", 1),
    ("hello world", "hello big world", 10), ("a\nb", "a\nXb", 3),
])
def test_edit_end(old, new, end):
    assert edit_end(old, new) == end


def test_prefill_leaves_one_token_and_the_same_answer(tiny_model):
    plain = completer(tiny_model).complete("u", CODE, len(CODE), SETTINGS)
    c = completer(tiny_model)
    filled = c.prefill("u", CODE, len(CODE), SETTINGS)
    session = c.sessions.get("u")
    assert filled == len(session.ids) == session.cache.length > 20
    assert session.idle_prefilled_tokens == filled and session.prefilled_tokens == 0
    assert c.prefill("u", CODE, len(CODE), SETTINGS) == 0  # already there
    got = c.complete("u", CODE, len(CODE), SETTINGS)
    assert got.prefill_tokens == 1 and got.text == plain.text


def test_cancelled_prefill_keeps_what_it_did(tiny_model):
    c = completer(tiny_model)
    cancel = threading.Event()
    cancel.set()
    assert c.prefill("u", CODE, len(CODE), SETTINGS, cancel) == 0
    session = c.sessions.get("u")
    assert session.cache.length == len(session.ids) < 5


def test_kv_cache_off_prefills_every_request_whole(tiny_model):
    off = dataclasses.replace(SETTINGS, kv_cache=False)
    c = completer(tiny_model)
    assert c.prefill("u", CODE, len(CODE), off) == 0
    first = c.complete("u", CODE, len(CODE), off)
    typed = CODE + ("!" if first.text.startswith("~") else "~")  # not type-ahead
    second = c.complete("u", typed, len(typed), off)
    assert second.prefill_tokens >= first.prefill_tokens > 20
    assert Settings.parse({"kvCache": False})[0].kv_cache is False
