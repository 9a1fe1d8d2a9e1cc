"""The syntax guard through the real server over stdio, on the packaged model: after a
start where the model's own greedy choice is a header colon inside an open round bracket,
the editor gets a block that parses; with `syntaxGuard: false` (and `alternatives: 0`,
which would otherwise try other first tokens) it gets the model's own block, which does
not."""
import ast

import pytest
import pytest_lsp
from lsprotocol import types as T
from pytest_lsp import LanguageClient

from cromwell_lsp.features.syntaxguard import LexState, scan
from tests.server_helpers import SERVER, end_of, init_params, inline_params, open_doc

# a held-out start after which the packaged model (step 34,400), left alone, writes
# `if not isinstance(e, (e.e. f):` (step 34,250 did after `def transform(row):`)
START = "for ext in extensions:\n    "
URI = "file:///tmp/guarded.py"


@pytest_lsp.fixture(config=SERVER)
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(init_params(maxTokens=48))
    yield
    await lsp_client.shutdown_session()


async def _block(client: LanguageClient) -> str:
    got = await client.text_document_inline_completion_async(inline_params(URI, end_of(START)))
    assert got is not None and len(got.items) == 1
    item = got.items[0]
    return item.insert_text if isinstance(item.insert_text, str) else item.insert_text.value


def _broken_rule(block: str):
    """Where the block first breaks a guard rule (an offset in START + block), or None."""
    return scan(START + block, LexState(), since=len(START))


async def test_the_guard_turns_a_broken_header_into_one_that_parses(client: LanguageClient):
    open_doc(client, URI, START)
    guarded = await _block(client)
    assert guarded.strip() and _broken_rule(guarded) is None
    ast.parse(START + guarded)

    client.workspace_did_change_configuration(T.DidChangeConfigurationParams(
        settings={"cromwell": {"syntaxGuard": False, "alternatives": 0}}))
    own = await _block(client)
    at = _broken_rule(own)
    assert at is not None and (START + own)[at] == ":", own
    assert own != guarded
    with pytest.raises(SyntaxError):
        ast.parse(START + own)
