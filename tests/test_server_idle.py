"""Idle pre-fill through the real server: after an edit and a pause of idleMs, the
document's cache already holds the prompt at the end of the edit, so a completion there
prefills a token or two (seen through cromwell/stats); a completion right after an edit
stops the timer."""
import asyncio
import time

import pytest_lsp
from lsprotocol import types as T
from pytest_lsp import LanguageClient

from tests.server_helpers import (SERVER, init_params, inline_params, open_doc, stats,
                                  tiny_model_path)  # noqa: F401

CODE = ("import os\n\n\ndef read(path):\n    with open(path) as f:\n        return f.read()\n"
        "\n\ndef main():\n    data = read('x.txt')\n    print(len(data), ")
URI = "file:///tmp/idle.py"
IDLE_MS = 150


@pytest_lsp.fixture(config=SERVER)
async def client(lsp_client: LanguageClient, tiny_model_path):  # noqa: F811
    await lsp_client.initialize_session(init_params(tiny_model_path, idleMs=IDLE_MS))
    yield
    await lsp_client.shutdown_session()


def type_at(client, line: int, col: int, text: str, version: int) -> None:
    """An incremental change, as editors send for a keystroke."""
    where = T.Range(T.Position(line, col), T.Position(line, col))
    client.text_document_did_change(T.DidChangeTextDocumentParams(
        T.VersionedTextDocumentIdentifier(uri=URI, version=version),
        [T.TextDocumentContentChangePartial(range=where, text=text)]))


async def wait_for_idle_prefill(client, timeout_s: float = 30) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        doc = (await stats(client)).get(URI)
        if doc and doc["idle_prefilled_tokens"]:
            return doc
        await asyncio.sleep(0.05)
    raise AssertionError(f"no idle pre-fill within {timeout_s} s")


async def test_completion_after_an_idle_pause_prefills_a_token_or_two(client: LanguageClient):
    lines = CODE.split("\n")
    line, col = len(lines) - 1, len(lines[-1])
    open_doc(client, URI, CODE)
    type_at(client, line, col, "d", 2)
    idle = await wait_for_idle_prefill(client)
    prompt = idle["cached_tokens"]
    assert idle["idle_prefilled_tokens"] == prompt > 20 and idle["prefilled_tokens"] == 0
    got = await client.text_document_inline_completion_async(
        inline_params(URI, T.Position(line, col + 1)))
    assert got is not None
    after = (await stats(client))[URI]
    assert 0 < after["last_prefill_tokens"] <= 2 and prompt >= 10 * after["last_prefill_tokens"]


async def test_a_request_right_after_an_edit_stops_the_timer(client: LanguageClient):
    lines = CODE.split("\n")
    line, col = len(lines) - 1, len(lines[-1])
    open_doc(client, URI, CODE)
    type_at(client, line, col, "d", 2)
    await client.text_document_inline_completion_async(
        inline_params(URI, T.Position(line, col + 1)))
    await asyncio.sleep(3 * IDLE_MS / 1000)
    doc = (await stats(client))[URI]
    assert doc["idle_prefilled_tokens"] == 0 and doc["prefilled_tokens"] == doc["cached_tokens"]
