"""Code actions: listed without the model, resolved (the model runs) to WorkspaceEdits;
syntax errors published as diagnostics; a repair is offered only when it parses."""
import ast

import pytest_lsp
from lsprotocol import types as T
from pytest_lsp import LanguageClient

from tests.server_helpers import (  # noqa: F401
    SERVER, apply_text_edits, init_params, open_doc, tiny_model_path)

URI = "file:///tmp/actions.py"
CODE = "import math\n\n\ndef area(radius):\n    pass\n\n\nclass Shape:\n    sides = 0\n"
BROKEN = "def f(x):\n    return (x +\n\n\ny = 2\n"


@pytest_lsp.fixture(config=SERVER)
async def client(lsp_client: LanguageClient, tiny_model_path):  # noqa: F811
    await lsp_client.initialize_session(init_params(tiny_model_path, maxTokens=16))
    yield
    await lsp_client.shutdown_session()


async def _actions(client, line):
    where = T.Range(T.Position(line, 0), T.Position(line, 0))
    return await client.text_document_code_action_async(T.CodeActionParams(
        text_document=T.TextDocumentIdentifier(uri=URI), range=where,
        context=T.CodeActionContext(diagnostics=[])))


async def test_actions_listed_instantly_and_resolved_to_workspace_edits(client: LanguageClient):
    open_doc(client, URI, CODE)
    listed = await _actions(client, 4)
    titles = [a.title for a in listed]
    assert any(t.startswith("Complete function body") for t in titles)
    assert any(t.startswith("Add docstring") for t in titles)
    assert all(a.edit is None for a in listed)  # the model has not run yet
    resolved = [await client.code_action_resolve_async(a) for a in listed]
    edited = [a for a in resolved if a.edit is not None]
    assert edited, "the model produced no edit for any action"
    for a in edited:
        new = apply_text_edits(CODE, a.edit.changes[URI])
        assert new != CODE and "<|" not in new


async def test_docstring_edit_keeps_the_file_valid(client: LanguageClient):
    open_doc(client, URI, CODE)
    listed = [a for a in await _actions(client, 7) if a.title.startswith("Add docstring")]
    assert [a.title for a in listed] == ["Add docstring to Shape"]
    action = await client.code_action_resolve_async(listed[0])
    if action.edit is not None:
        ast.parse(apply_text_edits(CODE, action.edit.changes[URI]))


async def test_syntax_errors_are_diagnostics_and_fixes_only_when_they_parse(client: LanguageClient):
    open_doc(client, URI, BROKEN)
    await client.wait_for_notification(T.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    diags = client.diagnostics[URI]
    assert diags and diags[0].source == "cromwell"
    line = diags[0].range.start.line
    fixes = [a for a in await _actions(client, line) if a.title.startswith("Fix syntax error")]
    assert fixes
    action = await client.code_action_resolve_async(fixes[0])
    if action.edit is not None:
        ast.parse(apply_text_edits(BROKEN, action.edit.changes[URI]))


async def test_diagnostics_point_at_the_same_place_whatever_the_line_ending(client: LanguageClient):
    """A syntax error is reported on the same line and column in an LF, CRLF or lone-CR
    document (the editor counts every one of them as a line break)."""
    code = "def f(x):\n    return x\n\n\ndef g(:\n    pass\n"
    ranges = {}
    for name, eol in (("lf", "\n"), ("crlf", "\r\n"), ("cr", "\r")):
        uri = f"file:///tmp/eol_{name}.py"
        open_doc(client, uri, code.replace("\n", eol))
        while not client.diagnostics.get(uri):
            await client.wait_for_notification(T.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        ranges[name] = [(d.range.start.line, d.range.start.character, d.range.end.line,
                         d.range.end.character) for d in client.diagnostics[uri]]
    assert ranges["lf"][0][:2] == (4, 6)
    assert ranges["crlf"] == ranges["lf"] and ranges["cr"] == ranges["lf"]
