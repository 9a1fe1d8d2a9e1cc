"""A minimal JSON-RPC client for driving a language server over stdio (LSP base protocol:
`Content-Length` framed JSON), for benchmarks that must see what an editor sees.

    with LspClient([sys.executable, "-m", "cromwell_lsp", "--stdio"]) as lsp:
        lsp.request("initialize", {...}); lsp.notify("initialized", {})
        lsp.request("textDocument/inlineCompletion", {...}, timeout_s=60)

A reader thread queues every message; `request` waits for its answer and keeps the
notifications it passes (`notifications`); requests from the server are answered with
null (this client has no capabilities to offer).  The server's stderr goes to a temp
file whose tail is quoted when the server dies or times out.
"""
from __future__ import annotations

import json
import queue
import subprocess
import tempfile
import threading


class LspError(RuntimeError):
    """The server answered with an error, died, or did not answer in time."""


class LspClient:
    def __init__(self, command: list[str], env: dict | None = None, cwd: str | None = None):
        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, env=env, cwd=cwd)
        self._inbox: queue.Queue = queue.Queue()
        self._next_id = 0
        self.notifications: list[dict] = []
        self._answers: dict[int, dict] = {}  # answers that arrived before their wait()
        self._methods: dict[int, str] = {}
        threading.Thread(target=self._read, daemon=True).start()

    # ---- wire -------------------------------------------------------------------------
    def _send(self, message: dict) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode("utf-8")
        try:
            self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise LspError(f"the server exited (code {self.proc.poll()}){self._stderr_tail()}")

    def _read(self) -> None:
        out = self.proc.stdout
        while True:
            length = None
            while True:
                line = out.readline()
                if not line:
                    self._inbox.put(None)  # end of stream
                    return
                line = line.strip()
                if not line:
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length is not None:
                self._inbox.put(json.loads(out.read(length)))

    def _stderr_tail(self, chars: int = 2000) -> str:
        self._log.seek(0)
        tail = self._log.read().decode("utf-8", "replace")[-chars:]
        return f"; its stderr ends with:\n{tail}" if tail.strip() else ""

    # ---- messages ---------------------------------------------------------------------
    def notify(self, method: str, params) -> None:
        self._send({"method": method, "params": params})

    def request(self, method: str, params, timeout_s: float = 120):
        return self.wait(self.send_request(method, params), timeout_s)

    def send_request(self, method: str, params) -> int:
        """Send a request without waiting; `wait(id)` collects its answer later."""
        self._next_id += 1
        self._methods[self._next_id] = method
        self._send({"id": self._next_id, "method": method, "params": params})
        return self._next_id

    def answered(self, rid: int) -> bool:
        """Whether the answer to `rid` has been read (by an earlier wait for a later one)."""
        return rid in self._answers

    def wait(self, rid: int, timeout_s: float = 120):
        """The result of request `rid` (answers to other requests are kept for their wait)."""
        method = self._methods.get(rid, "request")
        while rid not in self._answers:
            try:
                msg = self._inbox.get(timeout=timeout_s)
            except queue.Empty:
                raise LspError(f"no answer to {method} within {timeout_s} s"
                               f"{self._stderr_tail()}") from None
            if msg is None:
                raise LspError(f"the server exited (code {self.proc.wait()}) during {method}"
                               f"{self._stderr_tail()}")
            if "method" in msg and "id" in msg:  # a request from the server
                self._send({"id": msg["id"], "result": None})
            elif "method" in msg:
                self.notifications.append(msg)
            elif "id" in msg:
                self._answers[msg["id"]] = msg
        msg = self._answers.pop(rid)
        self._methods.pop(rid, None)
        if "error" in msg:
            raise LspError(f"{method}: {msg['error'].get('message', msg['error'])}")
        return msg.get("result")

    def close(self, timeout_s: float = 10) -> None:
        if self.proc.poll() is None:
            try:
                self.request("shutdown", None, timeout_s)
                self.notify("exit", None)
                self.proc.wait(timeout_s)
            except (LspError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def __enter__(self) -> "LspClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
