"""Inline completion and the completion fallback through the real server over stdio, on
the tiny random-weight model: answers carry no special tokens, the per-document cache is
reused (seen through cromwell/stats), odd positions and cancellation do not hurt."""
import asyncio

import pytest_lsp
from lsprotocol import types as T
from pytest_lsp import LanguageClient

from tests.server_helpers import (SERVER, end_of, init_params, inline_params, open_doc,
                                  replace_doc, stats, tiny_model_path)  # noqa: F401

CODE = ("import os\n\n\ndef read(path):\n    with open(path) as f:\n        return f.read()\n"
        "\n\ndef main():\n    data = read('x.txt')\n    print(len(data), ")
URI = "file:///tmp/example.py"


@pytest_lsp.fixture(config=SERVER)
async def client(lsp_client: LanguageClient, tiny_model_path):  # noqa: F811
    await lsp_client.initialize_session(init_params(tiny_model_path))
    yield
    await lsp_client.shutdown_session()


async def test_inline_completion_has_no_special_tokens(client: LanguageClient):
    open_doc(client, URI, CODE)
    got = await client.text_document_inline_completion_async(inline_params(URI, end_of(CODE)))
    assert got is not None
    for item in got.items:
        text = item.insert_text if isinstance(item.insert_text, str) else item.insert_text.value
        assert "<|" not in text and "\n" not in text  # line mode: the rest of the line
        assert item.range.start == end_of(CODE)


async def test_completion_fallback_inserts_at_the_cursor(client: LanguageClient):
    open_doc(client, URI, CODE)
    pos = end_of(CODE)
    got = await client.text_document_completion_async(T.CompletionParams(
        text_document=T.TextDocumentIdentifier(uri=URI), position=pos))
    assert isinstance(got, T.CompletionList) and len(got.items) <= 1
    for item in got.items:
        assert item.text_edit.range == T.Range(pos, pos) and "<|" not in item.text_edit.new_text


async def test_cache_reused_after_a_keystroke(client: LanguageClient):
    open_doc(client, URI, CODE)
    first = await client.text_document_inline_completion_async(inline_params(URI, end_of(CODE)))
    before = (await stats(client))[URI]
    suggestion = first.items[0].insert_text if first.items else ""
    typed = CODE + ("~" if not suggestion.startswith("~") else "!")  # not type-ahead
    replace_doc(client, URI, typed, 2)
    await client.text_document_inline_completion_async(inline_params(URI, end_of(typed)))
    after = (await stats(client))[URI]
    assert before["last_prefill_tokens"] >= 10 * after["last_prefill_tokens"] > 0
    assert after["cached_tokens"] >= before["cached_tokens"] and after["cache_bytes"] > 0


async def test_out_of_range_positions_do_not_crash(client: LanguageClient):
    open_doc(client, URI, CODE)
    for pos in (T.Position(999, 0), T.Position(0, 999), T.Position(3, 10**6)):
        got = await client.text_document_inline_completion_async(inline_params(URI, pos))
        assert got is not None
    got = await client.text_document_inline_completion_async(inline_params(URI, end_of(CODE)))
    assert got is not None  # still serving


async def test_a_newer_request_supersedes_and_cancel_is_answered(client: LanguageClient):
    open_doc(client, URI, CODE)
    old = client.protocol.send_request_async(T.TEXT_DOCUMENT_INLINE_COMPLETION,
                                             inline_params(URI, end_of(CODE)))
    new = client.text_document_inline_completion_async(inline_params(URI, end_of(CODE)))
    results = await asyncio.gather(old, new, return_exceptions=True)
    assert not isinstance(results[1], Exception)
    pending = client.protocol.send_request_async(T.TEXT_DOCUMENT_INLINE_COMPLETION,
                                                 inline_params(URI, end_of(CODE)), msg_id="c1")
    client.protocol.notify(T.CANCEL_REQUEST, T.CancelParams(id="c1"))
    answer = await asyncio.gather(pending, return_exceptions=True)
    assert "cancel" in str(answer[0]).lower() or not isinstance(answer[0], Exception)
    got = await client.text_document_inline_completion_async(inline_params(URI, end_of(CODE)))
    assert got is not None
