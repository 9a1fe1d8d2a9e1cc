"""Shared by the server tests: a real random-weight tiny model with the real small BPE
tokenizer, written once per test session to a temp folder (weights + tokenizer.json)."""
import shutil

import pytest

from tests.model_helpers import TINY, random_twin

MAX_SEQ_LEN = 1024


@pytest.fixture(scope="session")
def tiny_model_path(small_tokenizer, tmp_path_factory):
    pytest.importorskip("torch")
    from cromwell_lsp.training.model import export_safetensors

    tok, _ = small_tokenizer
    cfg = TINY.replace(vocab_size=tok.vocab_size, max_seq_len=MAX_SEQ_LEN)
    path = tmp_path_factory.mktemp("server-model") / "model.safetensors"
    export_safetensors(random_twin(cfg, seed=5), path, tokenizer_sha256=tok.sha256)
    shutil.copy(tok.path, path.with_name("tokenizer.json"))
    return path


@pytest.fixture(scope="session")
def tiny_model(tiny_model_path):
    from cromwell_lsp.model import CromwellVLJEPA

    return CromwellVLJEPA.load(tiny_model_path)


# ---- end-to-end: the real server over stdio ----------------------------------------------
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from lsprotocol import types as T  # noqa: E402
from pytest_lsp import ClientServerConfig  # noqa: E402

ROOT = str(Path(__file__).resolve().parents[1])
SERVER = ClientServerConfig(
    server_command=[sys.executable, "-m", "cromwell_lsp", "--stdio"],
    server_env={**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")})


def init_params(model_path=None, encodings=None, **options) -> T.InitializeParams:
    """Client parameters: the tiny model, 8 tokens per answer, no debounce, one kernel
    thread (a tiny model gains nothing from two, and on a busy machine loses 100x)."""
    opts = {"maxTokens": 8, "debounceMs": 0, "threads": 1, **options}
    if model_path is not None:
        opts["modelPath"] = str(model_path)
    general = T.GeneralClientCapabilities(position_encodings=encodings) if encodings else None
    return T.InitializeParams(capabilities=T.ClientCapabilities(general=general),
                              initialization_options=opts, root_uri=Path(ROOT).as_uri())


def open_doc(client, uri: str, text: str, version: int = 1, language: str = "python") -> None:
    client.text_document_did_open(T.DidOpenTextDocumentParams(
        T.TextDocumentItem(uri=uri, language_id=language, version=version, text=text)))


async def inline_text(client, uri: str, text: str, pos: T.Position | None = None,
                language: str = "python") -> str:
    """Open a document and ask for an inline completion at `pos` (its end by default):
    the text the editor would show ("" for none)."""
    open_doc(client, uri, text, language=language)
    got = await client.text_document_inline_completion_async(
        inline_params(uri, pos or end_of(text)))
    assert got is not None
    if not got.items:
        return ""
    item = got.items[0]
    return item.insert_text if isinstance(item.insert_text, str) else item.insert_text.value


def replace_doc(client, uri: str, text: str, version: int) -> None:
    client.text_document_did_change(T.DidChangeTextDocumentParams(
        T.VersionedTextDocumentIdentifier(uri=uri, version=version),
        [T.TextDocumentContentChangeWholeDocument(text=text)]))


def end_of(text: str) -> T.Position:
    lines = text.split("\n")
    return T.Position(len(lines) - 1, len(lines[-1]))


def inline_params(uri: str, pos: T.Position) -> T.InlineCompletionParams:
    return T.InlineCompletionParams(
        text_document=T.TextDocumentIdentifier(uri=uri), position=pos,
        context=T.InlineCompletionContext(trigger_kind=T.InlineCompletionTriggerKind.Automatic))


async def stats(client) -> dict:
    """The server's cromwell/stats, as a plain dict per document uri."""
    raw = await client.protocol.send_request_async("cromwell/stats", None)
    docs = raw["documents"] if isinstance(raw, dict) else raw.documents
    out = {}
    for d in docs:
        d = d if isinstance(d, dict) else d._asdict()
        out[d["uri"]] = d
    return out


def apply_text_edits(text: str, edits) -> str:
    """LSP TextEdits (lsprotocol objects, or their JSON as editors send it; utf-16
    positions) applied to text, as an editor applies a WorkspaceEdit's changes."""
    from cromwell_lsp.positions import Lines

    lines, spans = Lines.of(text), []
    for e in edits:
        if isinstance(e, dict):
            r, new = e["range"], e["newText"]
            start, end = (r["start"]["line"], r["start"]["character"]), (r["end"]["line"], r["end"]["character"])
        else:
            r, new = e.range, e.new_text
            start, end = (r.start.line, r.start.character), (r.end.line, r.end.character)
        spans.append((lines.offset(*start), lines.offset(*end), new))
    for a, b, new in sorted(spans, key=lambda sp: sp[:2], reverse=True):
        text = text[:a] + new + text[b:]
    return text
