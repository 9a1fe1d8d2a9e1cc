"""Hover: a function's signature with a generated explanation, and image paths."""
import pytest_lsp
from lsprotocol import types as T
from pytest_lsp import LanguageClient

from tests.server_helpers import SERVER, init_params, open_doc, tiny_model_path  # noqa: F401

URI = "file:///tmp/hover.py"
CODE = ('def area(radius: float,\n         pi=3.14) -> float:\n    return pi * radius ** 2\n\n\n'
        'x = area(2)\nLOGO = "docs/logo.png"\n')


@pytest_lsp.fixture(config=SERVER)
async def client(lsp_client: LanguageClient, tiny_model_path):  # noqa: F811
    await lsp_client.initialize_session(init_params(tiny_model_path))
    yield
    await lsp_client.shutdown_session()


async def _hover(client, line, character):
    return await client.text_document_hover_async(T.HoverParams(
        text_document=T.TextDocumentIdentifier(uri=URI),
        position=T.Position(line=line, character=character)))


async def test_hover_on_a_call_shows_the_signature(client: LanguageClient):
    open_doc(client, URI, CODE)
    hover = await _hover(client, 5, 5)
    value = hover.contents.value
    assert "def area(radius: float,\n         pi=3.14) -> float:" in value
    assert "<|" not in value


async def test_hover_on_an_image_path(client: LanguageClient):
    open_doc(client, URI, CODE)
    hover = await _hover(client, 6, 12)
    assert "screenshot" in hover.contents.value and "docs/logo.png" in hover.contents.value


async def test_hover_on_nothing(client: LanguageClient):
    open_doc(client, URI, CODE)
    assert await _hover(client, 3, 0) is None
    await _hover(client, 500, 3)  # past the end: clamped, no crash
    assert (await _hover(client, 5, 5)) is not None  # still serving
