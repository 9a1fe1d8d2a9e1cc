"""A `try:` body gets its handler, through the real server over stdio on the packaged
model: the small model ends a try's body with its end-of-text, and a body alone never
parses, so the editor is shown the body and an `except` clause at the try's indentation,
and the code parses with them.  No handler when the file already has one after the
cursor, outside Python, or when maxTokens leaves too little."""
import ast

import pytest
import pytest_lsp
from lsprotocol import types as T
from pytest_lsp import LanguageClient

from cromwell_lsp.features.completion import MIN_BODY_TOKENS
from cromwell_lsp.features.postprocess import fits, handler_lead
from tests.server_helpers import SERVER, init_params, inline_text

MODULE = "import os\n\ntry:\n    "
NESTED = "def load(name):\n    try:\n        "


@pytest_lsp.fixture(config=SERVER)
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(init_params(maxTokens=48))
    yield
    await lsp_client.shutdown_session()



def _handlers(shown: str, lead: str) -> list[str]:
    return [l for l in shown.split("\n") if l.startswith(lead + "except")
            and not l[len(lead):len(lead) + 1].isspace()]


@pytest.mark.parametrize("doc, lead", [(MODULE, ""), (NESTED, "    ")])
async def test_a_try_body_gets_its_handler(client: LanguageClient, doc, lead):
    shown = await inline_text(client, f"file:///tmp/try{len(lead)}.py", doc)
    body, _, rest = shown.partition("\n" + lead + "except")
    assert body.strip() and rest, shown  # the body first, then the handler
    assert len(_handlers(shown, lead)) >= 1
    ast.parse(doc + shown)
    crlf = doc.replace("\n", "\r\n")  # the document's line endings throughout
    shown = await inline_text(client, f"file:///tmp/crlf{len(lead)}.py", crlf)
    assert "\n" not in shown.replace("\r\n", "") and _handlers(shown.replace("\r\n", "\n"), lead)
    ast.parse((crlf + shown).replace("\r\n", "\n"))


async def test_no_handler_where_the_body_alone_is_wanted(client: LanguageClient):
    # the file has its handler after the cursor already: the body alone
    text = MODULE + "\nexcept OSError:\n    pass\n"
    shown = await inline_text(client, "file:///tmp/has-handler.py", text, T.Position(3, 4))
    assert shown.strip() and not _handlers(shown, "")
    ast.parse(text[:len(MODULE)] + shown + text[len(MODULE):])
    # not Python: the block alone
    shown = await inline_text(client, "file:///tmp/notes.txt", MODULE, language="plaintext")
    assert not _handlers(shown, "")
    # maxTokens leaves too little after the body: the body alone
    client.workspace_did_change_configuration(T.DidChangeConfigurationParams(
        settings={"cromwell": {"maxTokens": MIN_BODY_TOKENS + 4}}))
    shown = await inline_text(client, "file:///tmp/short.py", MODULE)
    assert not _handlers(shown, "")


def test_handler_lead_finds_a_try_body_with_no_handler():
    assert handler_lead("x = f()", "try:\n    ", "") == ""
    assert handler_lead("x = f()\n        y = 2", "def g():\n    try:\n        ", "") == "    "
    assert handler_lead("x = f()", "def g():\n\ttry:\n\t\t", "") == "\t"
    # a handler in the completion or after the cursor, another statement, no body
    assert handler_lead("x = f()\nexcept E:\n    pass", "try:\n    ", "") is None
    assert handler_lead("x = f()\nfinally:\n    pass", "try:\n    ", "") is None
    assert handler_lead("x = f()", "try:\n    ", "\n\n# note\nexcept E:\n    pass\n") is None
    assert handler_lead("x = f()", "if x:\n    ", "") is None
    assert handler_lead("   ", "try:\n    ", "") is None
    # the body of the try's handler is not a try's body
    assert handler_lead("x = 0", "try:\n    x = f()\nexcept E:\n    ", "") is None


def test_fits_tells_a_completion_with_which_the_code_parses():
    assert fits("x = f()\nexcept E:\n    pass", "try:\n    ", "")
    assert not fits("x = f()", "try:\n    ", "")  # nothing can be told: not a fit either
    assert not fits("x = (", "def f():\n    ", "")
    assert fits("x = f()\r\nexcept E:\r\n    pass", "try:\r\n    ", "")
