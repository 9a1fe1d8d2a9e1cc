"""A header finished in the middle of its line gets its body, through the real server over
stdio on the packaged model: the editor is shown the rest of the header's line and a block
deeper than the header, and the code parses with it.  No body when the file already has
one, when code follows the cursor on its line, when maxTokens leaves too little, or
outside Python."""
import ast

import pytest_lsp
from lsprotocol import types as T
from pytest_lsp import LanguageClient

from cromwell_lsp.features import completion
from cromwell_lsp.features.completion import MIN_BODY_TOKENS, _body_indent
from cromwell_lsp.features.postprocess import finish_checked, indent_of
from cromwell_lsp.features.syntaxguard import lex
from cromwell_lsp.positions import with_line_ending
from tests.server_helpers import SERVER, init_params, inline_text

LOOP = "def f(xs):\n    for x in xs"      # the model closes the header with `:`
AFTER_COLON = "def add(a, b):"              # the cursor right after a header's colon


@pytest_lsp.fixture(config=SERVER)
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(init_params(maxTokens=48))
    yield
    await lsp_client.shutdown_session()



def _body_of(doc: str, shown: str, header_indent: int) -> list[str]:
    line, _, body = shown.partition("\n")
    assert (doc + line).rstrip().endswith(":"), shown  # the header's line, finished
    lines = [l for l in body.split("\n") if l.strip()]
    assert lines and all(indent_of(l) > header_indent for l in lines), shown
    return lines


async def test_a_header_finished_mid_line_gets_its_body(client: LanguageClient):
    shown = await inline_text(client, "file:///tmp/loop.py", LOOP)
    _body_of(LOOP, shown, 4)
    ast.parse(LOOP + shown)


async def test_a_cursor_after_a_headers_colon_gets_the_body(client: LanguageClient):
    shown = await inline_text(client, "file:///tmp/colon.py", AFTER_COLON)
    assert shown.startswith("\n")
    _body_of(AFTER_COLON, shown, 0)
    ast.parse(AFTER_COLON + shown)
    crlf = "import os\r\n\r\n\r\n" + AFTER_COLON  # the document's line endings throughout
    shown = await inline_text(client, "file:///tmp/crlf.py", crlf)
    assert shown.startswith("\r\n") and "\n" not in shown.replace("\r\n", "")
    ast.parse(crlf.replace("\r\n", "\n") + shown.replace("\r\n", "\n"))


async def test_no_body_where_the_line_alone_is_wanted(client: LanguageClient):
    # the file has the body already: the header's line alone
    text = LOOP + "\n        print(x)\n"
    shown = await inline_text(client, "file:///tmp/has-body.py", text, T.Position(1, len("    for x in xs")))
    assert "\n" not in shown
    # code after the cursor on its line: the rest of the line alone
    text = "def f(xs):\n    for x in  # loop\n"
    shown = await inline_text(client, "file:///tmp/code-after.py", text, T.Position(1, len("    for x in ")))
    assert "\n" not in shown
    # not Python: the rest of the line alone
    shown = await inline_text(client, "file:///tmp/notes.txt", LOOP, language="plaintext")
    assert "\n" not in shown
    # maxTokens leaves too little after the line: the line alone
    client.workspace_did_change_configuration(T.DidChangeConfigurationParams(
        settings={"cromwell": {"maxTokens": MIN_BODY_TOKENS - 1}}))
    shown = await inline_text(client, "file:///tmp/short.py", AFTER_COLON)
    assert "\n" not in shown


def _header_indent(before: str, suffix: str) -> int | None:
    return completion._header_indent(lex(with_line_ending(before, "\n") + "\n"), suffix)


def test_header_indent_sees_headers_and_bodies():
    assert _header_indent("def f(xs):\n    for x in xs:", "") == 4
    assert _header_indent("def f(xs):", "\n\nx = 1\n") == 0
    assert _header_indent("if a:\n    if b:", "\n    pass\n") == 4  # not deeper: no body yet
    assert _header_indent("def f(xs):\n    for x in xs:", "\n        print(x)\n") is None
    assert _header_indent("for x in xs:", "  # comment\n") is None  # rest of line not blank
    assert _header_indent("x = {1:", "") is None          # a colon inside a bracket
    assert _header_indent("for x in range(3)", "") is None  # no colon yet
    assert _header_indent("s = 'if x:'", "") is None      # a colon in a string
    assert _header_indent("if x:  # why", "") == 0        # a comment after the colon
    assert _header_indent("if x: return 1", "") is None   # a one-line body
    assert _header_indent("def f():\r\n    while True:", "\r\n") == 4
    assert MIN_BODY_TOKENS >= 1


def test_body_indent_follows_the_file():
    assert _body_indent("for x in xs:", 0) == "    "  # no body before: 4 spaces
    assert _body_indent("def f(xs):\n    for x in xs:", 4) == "        "
    two = "def g():\n  return 1\n\n\ndef f(xs):\n  for x in xs:"
    assert _body_indent(two, 2) == "    "  # the file's step: 2 spaces
    tabs = "def f(xs):\n\tfor x in xs:"
    assert _body_indent(tabs, 1) == "\t\t"  # a tab under a tab-indented header
    assert _body_indent("x = [\n    1,\n]\nif x:", 0) == "    "  # a bracket's lines: no step
    assert _body_indent("class A:\n    # note\n\n    def f(self):", 4) == "        "


def test_the_parse_that_decides_sees_the_header():
    """A body is shown when finishing says the code around the cursor parses with it
    (False), not when it breaks the code (True) or nothing can be told (None)."""
    def broken(prefix, body, suffix):
        return finish_checked(body, prefix, suffix, python=True)[1]

    at = "def total(items):\n    s = 0\n    for i in range(len(items)):\n        "
    assert broken(at, "s += items[i]", "\n    return s\n") is False
    assert broken(at, "s +=", "\n    return s\n") is True
    assert broken("for x in xs:\n    ", "# only a comment", "") is True
    # a header broken in itself: its body cannot make it parse, and breaks_code cannot tell
    bad = "def total(items):\n    for i in range(len(items)\n        if i == 1):\n        "
    assert broken(bad, "return s", "") is None
    assert finish_checked("x)", "print(", "", python=True)[1] is None  # a line: not judged
