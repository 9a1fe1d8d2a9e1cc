"""Alternatives through the real server over stdio, on the packaged model: after a start
where the model's greedy block (under the syntax guard, finished as usual) would leave the
code unparsable, the editor gets a block from another first token, which parses; with
`alternatives: 0` it gets the greedy one, which does not.  A block that parses is the
same either way.  The "Complete function body" action likewise tries other first tokens
when no start of its greedy body parses."""
import ast

import pytest
import pytest_lsp
from lsprotocol import types as T
from pytest_lsp import LanguageClient

from cromwell_lsp.features.postprocess import breaks_code
from tests.server_helpers import (SERVER, apply_text_edits, end_of, init_params, inline_params,
                                  open_doc)

# a held-out start after which the packaged model's greedy block (steps 34,400 and 34,875) writes an
# `else:` that no statement before it can take
BROKEN = "with tm.set_locale(new_locale, lc_category):\n    "
FINE = "def add(a, b):\n    "


@pytest_lsp.fixture(config=SERVER)
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(init_params())
    yield
    await lsp_client.shutdown_session()


async def _block(client: LanguageClient, uri: str, start: str) -> str:
    got = await client.text_document_inline_completion_async(inline_params(uri, end_of(start)))
    assert got is not None and len(got.items) == 1
    item = got.items[0]
    return item.insert_text if isinstance(item.insert_text, str) else item.insert_text.value


async def test_a_block_that_would_break_the_code_is_replaced_by_one_that_parses(
        client: LanguageClient):
    open_doc(client, "file:///tmp/alt.py", BROKEN)
    open_doc(client, "file:///tmp/fine.py", FINE)
    shown = await _block(client, "file:///tmp/alt.py", BROKEN)
    fine = await _block(client, "file:///tmp/fine.py", FINE)
    assert shown.strip() and not breaks_code(shown, BROKEN, "")
    ast.parse(BROKEN + shown)

    client.workspace_did_change_configuration(T.DidChangeConfigurationParams(
        settings={"cromwell": {"alternatives": 0}}))
    greedy = await _block(client, "file:///tmp/alt.py", BROKEN)
    assert greedy != shown and breaks_code(greedy, BROKEN, "")
    with pytest.raises(SyntaxError):
        ast.parse(BROKEN + greedy)
    assert await _block(client, "file:///tmp/fine.py", FINE) == fine


# a held-out function's header (validation corpus) after which the packaged model's greedy
# body, cut to its longest start that parses, keeps nothing: the "Complete function body"
# action had no edit to offer before it tried other first tokens (the model with its
# bracket edit; the `try` edit's was `def test_unchanged_func(self):`, step 34,875's
# `def test_spacing(self):` and step 34,400's `def main():`, whose greedy bodies now parse)
EMPTY = "def test_invalid_bounds(self):\n    pass\n"


async def _body_edit(client: LanguageClient, uri: str) -> str | None:
    where = T.Range(T.Position(1, 0), T.Position(1, 0))
    listed = await client.text_document_code_action_async(T.CodeActionParams(
        text_document=T.TextDocumentIdentifier(uri=uri), range=where,
        context=T.CodeActionContext(diagnostics=[])))
    body = [a for a in listed if a.title.startswith("Complete function body")]
    assert len(body) == 1
    action = await client.code_action_resolve_async(body[0])
    return None if action.edit is None else apply_text_edits(EMPTY, action.edit.changes[uri])


async def test_a_function_body_with_no_start_that_parses_is_generated_again(
        client: LanguageClient):
    uri = "file:///tmp/body.py"
    open_doc(client, uri, EMPTY)
    client.workspace_did_change_configuration(T.DidChangeConfigurationParams(
        settings={"cromwell": {"maxTokens": 64, "alternatives": 0}}))
    assert await _body_edit(client, uri) is None
    client.workspace_did_change_configuration(T.DidChangeConfigurationParams(
        settings={"cromwell": {"maxTokens": 64, "alternatives": 2}}))
    new = await _body_edit(client, uri)
    assert new is not None and new.startswith("def test_invalid_bounds(self):\n    ") and "pass" not in new
    ast.parse(new)
