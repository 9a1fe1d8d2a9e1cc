"""Settings changes through workspace/didChangeConfiguration: an invalid value is reported
with window/showMessage and ignored, and the server keeps answering."""
import pytest_lsp
from lsprotocol import types as T
from pytest_lsp import LanguageClient

from tests.server_helpers import (SERVER, end_of, init_params, inline_params, open_doc,
                                  tiny_model_path)  # noqa: F401

URI = "file:///tmp/settings.py"
CODE = "def add(a, b):\n    return "


@pytest_lsp.fixture(config=SERVER)
async def client(lsp_client: LanguageClient, tiny_model_path):  # noqa: F811
    await lsp_client.initialize_session(init_params(tiny_model_path))
    yield
    await lsp_client.shutdown_session()


async def test_invalid_setting_is_reported_and_the_server_keeps_working(client: LanguageClient):
    client.workspace_did_change_configuration(T.DidChangeConfigurationParams(
        settings={"cromwell": {"maxTokens": "lots", "temperature": 0.0}}))
    await client.wait_for_notification(T.WINDOW_SHOW_MESSAGE)
    assert any("max_tokens" in m.message for m in client.messages)
    open_doc(client, URI, CODE)
    got = await client.text_document_inline_completion_async(inline_params(URI, end_of(CODE)))
    assert got is not None


async def test_a_feature_switched_off_answers_empty(client: LanguageClient):
    client.workspace_did_change_configuration(T.DidChangeConfigurationParams(
        settings={"cromwell": {"features": {"inlineCompletion": False}}}))
    open_doc(client, URI, CODE)
    got = await client.text_document_inline_completion_async(inline_params(URI, end_of(CODE)))
    assert not got.items
    assert not client.messages
