"""The Cromwell language server (pygls 2.x): thin handlers that convert LSP types to
document text and offsets, call a pure function in features/, and convert back
(the shape of jedi-language-server's handlers).

Threading: the model runs in one worker thread (cffi releases the GIL), so the event loop
keeps answering while a completion computes.  Each model call gets a threading.Event:
a newer request for the same document sets the older one's, and $/cancelRequest (pygls
cancels the handler's task) sets it too; generation checks it between tokens.

Idle pre-fill: each didChange (re)starts a timer of settings.idle_ms for its document;
when it fires with nothing computing for that document, the worker fills the document's
cache with the prompt of a completion at the end of the last edit (Completer.prefill,
keyed by the uri like a completion, so the next request supersedes it).  A completion
request stops the timer: it fills the cache itself.

Without a model (no modelPath, or it failed to load) the server says so once with
window/showMessage and answers model requests with empty results; it never exits.
"""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from lsprotocol import types as T
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from . import __version__
from .features import actions, hover
from .features.analysis import syntax_errors
from .features.completion import Completer
from .features.screenshot import SnippetIndex
from .features.idle import edit_end
from .features.session import Session, Sessions
from .model.healing import vocab_index
from .positions import Lines, with_line_ending
from .settings import Settings

STATS = "cromwell/stats"


class CromwellServer(LanguageServer):
    """Server state: settings, the model, per-document sessions, the model worker."""

    def __init__(self):
        super().__init__("cromwell", __version__)
        self.settings = Settings()
        self.model = None
        self.model_error = "no model loaded yet"
        self.sessions: Sessions | None = None
        self.completer: Completer | None = None
        self.task_session: Session | None = None
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="cromwell-model")
        self.inflight: dict[str, threading.Event] = {}
        self.pending_messages: list[tuple[T.MessageType, str]] = []
        self.snippet_index = SnippetIndex()
        self.texts: dict[str, str] = {}  # each open document's text as of its last change
        self.idle_timers: dict[str, asyncio.TimerHandle] = {}
        self.idle_tasks: set[asyncio.Task] = set()  # referenced until done

    # ---- settings and model -------------------------------------------------------
    def apply_settings(self, raw) -> None:
        old = self.settings
        self.settings, errors = Settings.parse(raw, old)
        for e in errors:
            self.say(T.MessageType.Warning, f"Cromwell: {e}")
        if self.settings.threads:
            from . import kernels
            kernels.set_threads(self.settings.threads)
        if self.model is None or self.settings.model_path != old.model_path:
            self.load_model()
        elif self.sessions is not None:
            self.sessions.budget_bytes = self.settings.cache_budget_mb << 20
            self.sessions.evict()

    def load_model(self) -> None:
        from .model import CromwellVLJEPA

        path = self.settings.model_path or None
        try:
            self.model = CromwellVLJEPA.load(path)
            if self.model.tokenizer is None:
                raise ValueError(f"{path}: no tokenizer.json beside the weights")
        except Exception as exc:  # any failure: keep serving without completions
            self.model, self.model_error = None, str(exc)
            self.say(T.MessageType.Error, f"Cromwell: no model, completions are off: {exc}. "
                     "HINT: set cromwell.modelPath (initializationOptions.modelPath) to a "
                     ".safetensors file with its tokenizer.json beside it")
            return
        new_cache = lambda: self.model.new_cache(256)  # noqa: E731
        self.sessions = Sessions(new_cache, self.settings.cache_budget_mb << 20)
        self.completer = Completer(self.model, self.sessions)
        self.task_session = Session(new_cache())
        # token healing's vocabulary index (~50 ms): built on the worker now, so neither
        # the event loop nor the first keystroke waits for it
        self.worker.submit(vocab_index, self.model.tokenizer)

    def say(self, kind: T.MessageType, message: str) -> None:
        """window/showMessage now, or after `initialized` when the client is not ready."""
        if self.pending_messages is not None:
            self.pending_messages.append((kind, message))
        else:
            self.window_show_message(T.ShowMessageParams(type=kind, message=message))

    # ---- documents and compute ---------------------------------------------------
    def document(self, uri: str):
        """(text, Lines, position encoding) of an open document."""
        doc = self.workspace.get_text_document(uri)
        enc = self.workspace.position_encoding
        return doc.source, Lines.of(doc.source), str(getattr(enc, "value", enc) or "utf-16")

    def roots(self) -> list[str]:
        """The workspace folders' paths (the root path when the client gave no folders)."""
        ws = self.workspace
        paths = [to_fs_path(f.uri) for f in (getattr(ws, "folders", None) or {}).values()]
        if not paths and getattr(ws, "root_path", None):
            paths = [ws.root_path]
        return [p for p in paths if p]

    def documents(self) -> dict[str, str]:
        """A snapshot of the open documents' texts (uri -> text), for the worker."""
        return {uri: d.source for uri, d in self.workspace.text_documents.items()}

    def offset(self, uri: str, pos: T.Position) -> tuple[str, Lines, str, int]:
        text, lines, enc = self.document(uri)
        return text, lines, enc, lines.offset(max(0, pos.line), max(0, pos.character), enc)

    async def compute(self, key: str | None, fn, *args):
        """Run fn(*args, cancel) on the model worker; a newer call with the same key sets
        the older one's cancel event, and so does cancelling this coroutine."""
        cancel = threading.Event()
        if key is not None:
            if key in self.inflight:
                self.inflight[key].set()
            self.inflight[key] = cancel
        try:
            if key is not None and self.settings.debounce_ms:
                await asyncio.sleep(self.settings.debounce_ms / 1000)
            if cancel.is_set():
                return None
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.worker, lambda: fn(*args, cancel))
        except asyncio.CancelledError:
            cancel.set()
            raise
        finally:
            if key is not None and self.inflight.get(key) is cancel:
                del self.inflight[key]

    def edited(self, params: T.DidChangeTextDocumentParams) -> None:
        """Note where the last edit ended and (re)start the document's idle timer."""
        uri = params.text_document.uri
        text, lines, enc = self.document(uri)
        old, self.texts[uri] = self.texts.get(uri, ""), text
        self.stop_idle(uri)
        s = self.settings
        if (self.completer is None or not s.idle_ms or not s.kv_cache
                or not (s.features.inline_completion or s.features.completion)):
            return
        last = params.content_changes[-1] if params.content_changes else None
        if isinstance(last, T.TextDocumentContentChangePartial):
            start = last.range.start
            at = lines.offset(max(0, start.line), max(0, start.character), enc) + len(last.text)
        else:
            at = edit_end(old, text)
        loop = asyncio.get_running_loop()

        def fire():
            task = loop.create_task(self.idle_prefill(uri, at))
            self.idle_tasks.add(task)
            task.add_done_callback(self.idle_tasks.discard)
        self.idle_timers[uri] = loop.call_later(s.idle_ms / 1000, fire)

    def stop_idle(self, uri: str) -> None:
        timer = self.idle_timers.pop(uri, None)
        if timer is not None:
            timer.cancel()

    async def idle_prefill(self, uri: str, at: int) -> None:
        self.idle_timers.pop(uri, None)
        text = self.texts.get(uri)
        if self.completer is None or text is None or uri in self.inflight:
            return
        try:
            await self.compute(uri, self.completer.prefill, uri, text, min(at, len(text)),
                               self.settings)
        except Exception as exc:  # a pre-fill is an optimisation: never fail loudly
            self.window_log_message(T.LogMessageParams(
                type=T.MessageType.Warning, message=f"Cromwell: idle pre-fill of {uri} failed: {exc}"))

    def publish_syntax(self, uri: str, version) -> None:
        if not self.settings.features.diagnostics or not uri.endswith((".py", ".pyi")):
            return
        text, lines, enc = self.document(uri)
        diags = [T.Diagnostic(range=_range(lines, p.line, p.col, p.end_line, p.end_col, enc),
                              message=p.message, severity=T.DiagnosticSeverity.Error,
                              source="cromwell")
                 for p in syntax_errors(with_line_ending(text, "\n"))]
        self.text_document_publish_diagnostics(
            T.PublishDiagnosticsParams(uri=uri, diagnostics=diags, version=version))


def _range(lines: Lines, line: int, col: int, end_line: int, end_col: int, enc: str) -> T.Range:
    """An LSP range from 0-based lines and code-point columns."""
    def pos(l, c):
        l = min(l, len(lines) - 1)
        return T.Position(*lines.position(lines.starts[l] + min(c, len(lines.line(l))), enc))
    return T.Range(pos(line, col), pos(end_line, end_col))


server = CromwellServer()


@server.feature(T.INITIALIZE)
def initialize(ls: CromwellServer, params: T.InitializeParams):
    ls.apply_settings(params.initialization_options or {})


@server.feature(T.INITIALIZED)
def initialized(ls: CromwellServer, params: T.InitializedParams):
    pending, ls.pending_messages = ls.pending_messages, None
    for kind, message in pending or []:
        ls.say(kind, message)


@server.feature(T.WORKSPACE_DID_CHANGE_CONFIGURATION)
def did_change_configuration(ls: CromwellServer, params: T.DidChangeConfigurationParams):
    ls.apply_settings(params.settings)


@server.feature(T.TEXT_DOCUMENT_DID_OPEN)
def did_open(ls: CromwellServer, params: T.DidOpenTextDocumentParams):
    ls.texts[params.text_document.uri] = params.text_document.text
    ls.publish_syntax(params.text_document.uri, params.text_document.version)


@server.feature(T.TEXT_DOCUMENT_DID_CHANGE)
def did_change(ls: CromwellServer, params: T.DidChangeTextDocumentParams):
    ls.publish_syntax(params.text_document.uri, params.text_document.version)
    ls.edited(params)


@server.feature(T.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: CromwellServer, params: T.DidCloseTextDocumentParams):
    ls.stop_idle(params.text_document.uri)
    ls.texts.pop(params.text_document.uri, None)
    if ls.completer is not None:
        ls.completer.forget(params.text_document.uri)


async def _complete(ls: CromwellServer, uri: str, pos: T.Position, enabled: bool) -> str:
    """The completion text at a position ("" without a model, when off, or cancelled)."""
    if ls.completer is None or not enabled:
        return ""
    ls.stop_idle(uri)
    text, _, _, offset = ls.offset(uri, pos)
    result = await ls.compute(uri, ls.completer.complete, uri, text, offset, ls.settings)
    return result.text if result is not None else ""


@server.feature(T.TEXT_DOCUMENT_INLINE_COMPLETION, T.InlineCompletionOptions())
async def inline_completion(ls: CromwellServer, params: T.InlineCompletionParams):
    enabled = ls.settings.features.inline_completion
    text = await _complete(ls, params.text_document.uri, params.position, enabled)
    if not text:
        return T.InlineCompletionList(items=[])
    where = T.Range(params.position, params.position)
    return T.InlineCompletionList(items=[T.InlineCompletionItem(insert_text=text, range=where)])


@server.feature(T.TEXT_DOCUMENT_COMPLETION, T.CompletionOptions())
async def completion(ls: CromwellServer, params: T.CompletionParams):
    enabled = ls.settings.features.completion
    text = await _complete(ls, params.text_document.uri, params.position, enabled)
    if not text:
        return T.CompletionList(is_incomplete=True, items=[])
    edit = T.TextEdit(range=T.Range(params.position, params.position), new_text=text)
    label = text.strip().split("\n", 1)[0][:60] or text
    item = T.CompletionItem(label=label, kind=T.CompletionItemKind.Snippet, text_edit=edit,
                            detail="Cromwell", sort_text="0", filter_text=label)
    return T.CompletionList(is_incomplete=True, items=[item])


@server.feature(STATS)
def stats(ls: CromwellServer, params=None):
    docs = [s.to_json() for s in ls.sessions.stats()] if ls.sessions is not None else []
    return {"model_loaded": ls.model is not None, "documents": docs}


@server.feature(T.TEXT_DOCUMENT_CODE_ACTION, T.CodeActionOptions(
    code_action_kinds=[T.CodeActionKind.QuickFix, T.CodeActionKind.RefactorRewrite],
    resolve_provider=True))
def code_action(ls: CromwellServer, params: T.CodeActionParams):
    if ls.model is None or not ls.settings.features.code_actions:
        return []
    uri = params.text_document.uri
    text, lines, enc = ls.document(uri)
    first, last = params.range.start.line, params.range.end.line
    kinds = {"fix": T.CodeActionKind.QuickFix}
    return [T.CodeAction(title=a.title, kind=kinds.get(a.kind, T.CodeActionKind.RefactorRewrite),
                         data={"uri": uri, "kind": a.kind, "line": a.line, "title": a.title})
            for a in actions.list_actions(text, first, last)]


@server.feature(T.CODE_ACTION_RESOLVE)
async def code_action_resolve(ls: CromwellServer, action: T.CodeAction):
    data = action.data or {}
    if ls.model is None or not isinstance(data, dict) or "uri" not in data:
        return action
    uri = data["uri"]
    text, lines, enc = ls.document(uri)
    spec = actions.Action(data.get("title", action.title), data["kind"], int(data["line"]))
    run = lambda cancel: actions.resolve(  # noqa: E731
        ls.model, ls.task_session, spec, text, ls.settings, cancel,
        doc_path=to_fs_path(uri), roots=ls.roots())
    try:
        edit = await ls.compute(None, run)
    except ValueError as exc:  # e.g. the screenshot is outside the workspace or unreadable
        ls.say(T.MessageType.Warning, f"Cromwell: {spec.title}: {exc}")
        return action
    if edit is not None:
        where = T.Range(T.Position(*lines.position(edit.start, enc)),
                        T.Position(*lines.position(edit.end, enc)))
        action.edit = T.WorkspaceEdit(changes={uri: [T.TextEdit(range=where, new_text=edit.text)]})
    return action


@server.feature(T.TEXT_DOCUMENT_HOVER)
async def on_hover(ls: CromwellServer, params: T.HoverParams):
    if not ls.settings.features.hover:
        return None
    uri = params.text_document.uri
    text, lines, enc, offset = ls.offset(uri, params.position)
    line, col = lines.position(offset, "utf-32")
    doc_path, roots, docs = to_fs_path(uri), ls.roots(), ls.documents()
    run = lambda cancel: hover.hover_text(  # noqa: E731
        ls.model, ls.task_session, text, line, col, ls.settings, cancel,
        doc_path=doc_path, roots=roots, documents=docs, index=ls.snippet_index)
    value = await ls.compute(None, run)
    if not value:
        return None
    return T.Hover(contents=T.MarkupContent(kind=T.MarkupKind.Markdown, value=value))


def serve(tcp: str | None = None) -> None:
    """Run the server on stdio, or on TCP at "HOST:PORT"."""
    if tcp:
        host, _, port = tcp.rpartition(":")
        server.start_tcp(host or "127.0.0.1", int(port))
    else:
        server.start_io()
