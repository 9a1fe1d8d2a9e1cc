"""The server advertises what editors look for, negotiates the position encoding, and
without a model says so and keeps answering (empty results, no crash)."""
import pytest
import pytest_lsp
from lsprotocol import types as T
from pytest_lsp import LanguageClient

from tests.server_helpers import SERVER, end_of, init_params, inline_params, open_doc


@pytest_lsp.fixture(config=SERVER)
async def client(lsp_client: LanguageClient):
    yield
    await lsp_client.shutdown_session()


async def test_capabilities_advertised(client: LanguageClient):
    result = await client.initialize_session(init_params())
    caps = result.capabilities
    assert caps.inline_completion_provider is not None
    assert caps.completion_provider is not None
    assert caps.code_action_provider.resolve_provider is True
    assert caps.hover_provider
    assert caps.position_encoding == T.PositionEncodingKind.Utf16


@pytest.mark.parametrize("offered, chosen", [(["utf-8", "utf-16"], "utf-8"),
                                             (["utf-32"], "utf-32")])
async def test_position_encoding_negotiated(client: LanguageClient, offered, chosen):
    result = await client.initialize_session(init_params(encodings=offered))
    assert result.capabilities.position_encoding == chosen


async def test_no_model_shows_a_message_and_answers_empty(client: LanguageClient):
    await client.initialize_session(init_params(model_path="/nonexistent/model.safetensors"))
    await client.wait_for_notification(T.WINDOW_SHOW_MESSAGE)
    assert any("modelPath" in m.message for m in client.messages)
    uri = "file:///tmp/nomodel.py"
    open_doc(client, uri, "def f():\n    return ")
    pos = end_of("def f():\n    return ")
    got = await client.text_document_inline_completion_async(inline_params(uri, pos))
    assert got is None or not got.items
