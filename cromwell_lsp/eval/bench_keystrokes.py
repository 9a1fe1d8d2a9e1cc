"""`cromwell bench keystrokes`: what typing feels like.  Starts the real server
(`python -m cromwell_lsp --stdio`) and drives it over stdio like an editor: opens a real
Python file with a stretch of it removed, then types that stretch back one character at a
time — an incremental didChange per keystroke, then textDocument/inlineCompletion at the
cursor, waiting for the answer before the next key.

Then, on the server with the cache, requests that need no model (the code-action list,
cromwell/stats) are timed while block completions are computing (`busy_request_*`).

Requests are sent where the cursor's line already has code before it (single-line
completions, the common case while typing); line breaks and indentation are typed
without one.  Latency is measured from the keystroke (didChange) to the answer.  The
whole run is done twice on fresh servers: with the per-document KV cache, and with
kvCache off (every request prefills its whole prompt).  Tokens prefilled per request come
from cromwell/stats (type-ahead answers count as requests that prefilled nothing).

The default file is one of this project's own sources, never in the training corpus
(the standard library and third-party wheels).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from ..positions import Lines
from .lsp_client import LspClient, LspError

PACKAGE = Path(__file__).resolve().parents[1]
DEFAULT_FILE = PACKAGE / "features" / "postprocess.py"
URI = "file:///cromwell-bench/keystrokes.py"


class BenchError(ValueError):
    """The benchmark cannot run (no model, a missing file): the message says why."""


def stretch(text: str, chars: int) -> tuple[int, int]:
    """(start, end) offsets of the text to type: from the start of the first line with
    code at or after the middle of the file, `chars` characters (fewer at the end)."""
    lines = Lines.of(text)
    for i in range(len(lines) // 2, len(lines)):
        row = lines.line(i)
        if row.strip():
            start = lines.starts[i] + len(row) - len(row.lstrip())
            return start, min(len(text), start + chars)
    return 0, min(len(text), chars)


def _position(text: str, offset: int) -> dict:
    line, character = Lines.of(text).position(offset, "utf-16")
    return {"line": line, "character": character}


def type_stretch(lsp: LspClient, text: str, start: int, end: int, log) -> tuple[list, int]:
    """Open the file without text[start:end], type it back; (latencies in ms, requests)."""
    doc = text[:start] + text[end:]
    lsp.notify("textDocument/didOpen", {"textDocument": {
        "uri": URI, "languageId": "python", "version": 1, "text": doc}})
    latencies, version = [], 1
    for i, ch in enumerate(text[start:end]):
        at = start + i
        where = _position(doc, at)
        doc = doc[:at] + ch + doc[at:]
        version += 1
        cursor = at + 1
        ask = doc[doc.rfind("\n", 0, cursor) + 1:cursor].strip()  # code before the cursor
        after = _position(doc, cursor)  # computed before the clock starts
        t0 = time.perf_counter()
        lsp.notify("textDocument/didChange", {
            "textDocument": {"uri": URI, "version": version},
            "contentChanges": [{"range": {"start": where, "end": where}, "text": ch}]})
        if not ask:
            continue  # no code before the cursor on its line: no single-line completion
        lsp.request("textDocument/inlineCompletion", {
            "textDocument": {"uri": URI}, "position": after, "context": {"triggerKind": 2}})
        latencies.append((time.perf_counter() - t0) * 1000)
        if len(latencies) % 50 == 0:
            log(f"  {len(latencies)} requests, last {latencies[-1]:.1f} ms")
    return latencies, len(latencies)


BUSY_TEXT = "import os\n\n\ndef read_config(path):\n    "


def busy_latency(lsp: LspClient, rounds: int = 8) -> dict:
    """Latency of requests that need no model (the code-action list, cromwell/stats) sent
    while a block completion is computing: the event loop must stay free.  Each round
    opens a new document whose body is to be written, asks for its completion without
    waiting, then times the two requests; only rounds where the completion was still
    running when they were answered count."""
    times: list[float] = []
    overlapped = 0
    for r in range(rounds):
        uri = f"file:///cromwell-bench/busy{r}.py"
        text = f"# config reader {r}\n" + BUSY_TEXT
        lsp.notify("textDocument/didOpen", {"textDocument": {
            "uri": uri, "languageId": "python", "version": 1, "text": text}})
        rid = lsp.send_request("textDocument/inlineCompletion", {
            "textDocument": {"uri": uri}, "position": _position(text, len(text)),
            "context": {"triggerKind": 1}})
        time.sleep(0.03)  # let the worker start on it
        got = []
        for method, params in (
                ("textDocument/codeAction", {"textDocument": {"uri": uri}, "range": {
                    "start": {"line": 3, "character": 0}, "end": {"line": 3, "character": 0}},
                    "context": {"diagnostics": []}}),
                ("cromwell/stats", None)):
            t0 = time.perf_counter()
            lsp.request(method, params)
            got.append((time.perf_counter() - t0) * 1000)
        if not lsp.answered(rid):
            overlapped += 1
            times += got
        lsp.wait(rid)
        lsp.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
    out = {"busy_rounds_overlapped": overlapped, "busy_rounds": rounds}
    if times:
        out.update(busy_request_p50_ms=float(np.percentile(times, 50)),
                   busy_request_max_ms=float(max(times)))
    return out


def run_once(text: str, start: int, end: int, options: dict, log, busy: bool = False) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(PACKAGE.parent), os.environ.get("PYTHONPATH")) if p)}
    with LspClient([sys.executable, "-m", "cromwell_lsp", "--stdio"], env=env) as lsp:
        lsp.request("initialize", {"processId": os.getpid(), "rootUri": None,
                                   "capabilities": {}, "initializationOptions": options})
        lsp.notify("initialized", {})
        stats = lsp.request("cromwell/stats", None)
        if not stats.get("model_loaded"):
            said = [n["params"]["message"] for n in lsp.notifications
                    if n["method"] == "window/showMessage"]
            raise BenchError("the server has no model: " + (" ".join(said) or "it did not say why"))
        latencies, requests = type_stretch(lsp, text, start, end, log)
        docs = lsp.request("cromwell/stats", None)["documents"]
        prefilled = next((d["prefilled_tokens"] for d in docs if d["uri"] == URI), 0)
        lsp.notify("textDocument/didClose", {"textDocument": {"uri": URI}})
        extra = busy_latency(lsp) if busy else {}
    if not requests:
        raise BenchError("the stretch has no place for a single-line completion; type more "
                         "characters (--chars)")
    return {"p50_ms": float(np.percentile(latencies, 50)),
            "p95_ms": float(np.percentile(latencies, 95)),
            "prefill_tokens_per_request": prefilled / requests, "requests": requests, **extra}


def run(model: str | None = None, file: str | None = None, chars: int = 200,
        threads: int | None = None, max_tokens: int | None = None, log=print) -> dict:
    path = Path(file) if file else DEFAULT_FILE
    if not path.is_file():
        raise BenchError(f"{path}: no such file")
    if model is not None and not Path(model).is_file():
        raise BenchError(f"{model}: no such model file")
    text = path.read_text(encoding="utf-8")
    start, end = stretch(text, chars)
    options = {"debounceMs": 0}
    if model is not None:
        options["modelPath"] = str(Path(model).resolve())
    if threads is not None:
        options["threads"] = threads
    if max_tokens is not None:
        options["maxTokens"] = max_tokens
    from ..settings import Settings

    out = {"file": str(path), "chars": end - start, "model": model or "default",
           "threads": threads or 0, "max_tokens": max_tokens or Settings().max_tokens}
    for label, extra in (("", {}), ("_nocache", {"kvCache": False})):
        log(f"typing {end - start} characters of {path.name}, cache {'off' if extra else 'on'}")
        try:
            got = run_once(text, start, end, {**options, **extra}, log, busy=not extra)
        except LspError as err:
            raise BenchError(f"the server failed: {err}") from None
        log(f"  p50 {got['p50_ms']:.1f} ms, p95 {got['p95_ms']:.1f} ms, "
            f"{got['prefill_tokens_per_request']:.1f} tokens prefilled per request")
        for key in ("p50_ms", "p95_ms", "prefill_tokens_per_request", "requests"):
            out[key + label] = round(got[key], 2)
        for key in ("busy_request_p50_ms", "busy_request_max_ms", "busy_rounds_overlapped",
                    "busy_rounds"):
            if key in got:
                out[key] = round(got[key], 2)
    return out
