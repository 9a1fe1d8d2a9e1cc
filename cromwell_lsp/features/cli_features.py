"""The editor features on the command line: `cromwell complete | edit | explain` run the
same functions the language server runs (completion.Completer, actions.list_actions and
actions.resolve, hover.hover_text), on a file instead of an open document.

Coordinates are the ones compilers print: 1-based lines and 1-based columns counted in
characters (code points), as `file.py:12:5`.  Files are read as UTF-8 (a byte-order mark
is kept) with their line endings untouched, and written back the same way.

Errors: bad input raises `UsageError` (the command exits 2 with its message on stderr);
`NothingFound` means the input was fine but there was nothing to do (exit 1).
"""
from __future__ import annotations

import difflib
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..positions import Lines
from .analysis import IMAGE_SUFFIXES

BOM = "\ufeff"


class UsageError(ValueError):
    """Bad input: a missing file, a position out of range, a bad spec."""


class NothingFound(Exception):
    """Nothing to do or nothing usable came out (not the user's mistake)."""


@dataclass(frozen=True)
class Source:
    path: Path
    text: str        # without the byte-order mark, line endings as in the file
    bom: bool

    def encode(self, text: str) -> bytes:
        return ((BOM if self.bom else "") + text).encode("utf-8")


# ---- input ----------------------------------------------------------------------------
def parse_spec(spec: str, fields: int) -> tuple[str, list[int]]:
    """"FILE:LINE:COL" (fields=2) or "FILE:LINE" (fields=1) -> (FILE, [numbers])."""
    parts = spec.rsplit(":", fields)
    want = "FILE:LINE:COL" if fields == 2 else "FILE:LINE"
    example = "app.py:12:5" if fields == 2 else "app.py:12"
    if len(parts) != fields + 1 or not parts[0] or not all(p.isdigit() for p in parts[1:]):
        raise UsageError(f"bad position {spec!r}: expected {want} with 1-based numbers, "
                         f"like {example}")
    return parts[0], [int(p) for p in parts[1:]]


def read_source(path: str | Path) -> Source:
    """A UTF-8 text file, or a UsageError that names the problem."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{path}: no such file")
    if p.is_dir():
        raise UsageError(f"{path} is a directory, not a file")
    data = p.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UsageError(f"{path} is not UTF-8 text (byte 0x{data[err.start]:02x} at offset "
                         f"{err.start}); Cromwell reads UTF-8 files only") from None
    bom = text.startswith(BOM)
    return Source(p, text[1:] if bom else text, bom)


def load_model(path: str | None, threads: int | None = None):
    """The model at `path` (None: the packaged default), ready to generate."""
    from .. import kernels
    from ..model import CromwellVLJEPA

    if threads:
        kernels.set_threads(threads)
    if path is not None and not Path(path).is_file():
        raise UsageError(f"{path}: no such model file (expected a .safetensors file with its "
                         "tokenizer.json beside it)")
    model = CromwellVLJEPA.load(path)
    if model.tokenizer is None:
        raise UsageError(f"{path}: no tokenizer.json beside the weights")
    return model


# ---- complete -------------------------------------------------------------------------
def offset_of(src: Source, line: int, col: int) -> int:
    """The text offset of a 1-based line and column; UsageError when out of range."""
    try:
        return Lines.of(src.text).from_cli(line, col)
    except ValueError as err:
        raise UsageError(f"{src.path}:{line}:{col}: {err}") from None


def complete(model, src: Source, line: int, col: int, settings) -> dict:
    """The completion at a 1-based line and column, with what it cost."""
    from .completion import Completer
    from .session import Sessions

    offset = offset_of(src, line, col)
    completer = Completer(model, Sessions(lambda: model.new_cache(256), 1 << 40))
    t0 = time.perf_counter()
    got = completer.complete(src.path.resolve().as_uri(), src.text, offset, settings)
    ms = (time.perf_counter() - t0) * 1000
    return {"file": str(src.path), "line": line, "col": col, "completion": got.text,
            "prefill_tokens": got.prefill_tokens, "ms": round(ms, 1),
            "stop_reason": got.stop_reason}


# ---- edit -----------------------------------------------------------------------------
TITLES = {"body": "Complete function body", "docstring": "Add docstring",
          "fix": "Fix syntax error", "screenshot": "screenshot reference"}


def find_action(text: str, kind: str, line: int | None):
    """The action of `kind` at 0-based `line` (the innermost def around it), else the one
    nearest to it; without a line, the first in the file.  None when there is none."""
    from . import actions

    everywhere = [a for a in actions.list_actions(text, 0, text.count("\n") + 1) if a.kind == kind]
    if not everywhere:
        return None
    if line is None:
        return min(everywhere, key=lambda a: a.line)
    here = [a for a in actions.list_actions(text, line, line) if a.kind == kind]
    if here:
        return max(here, key=lambda a: a.line)  # the innermost
    return min(everywhere, key=lambda a: (abs(a.line - line), a.line))


def edit(model, src: Source, kind: str, line: int | None, settings):
    """(the action, the new text) for an action on a file; NothingFound when the file has
    no such action or the model produced nothing usable."""
    from . import actions
    from .session import Session

    action = find_action(src.text, kind, None if line is None else line - 1)
    if action is None:
        what = "no screenshot reference found" if kind == "screenshot" else \
            f"no {TITLES[kind]!r} action"
        raise NothingFound(f"{src.path}: {what}" + (f" (looked near line {line})" if line else ""))
    session = Session(model.new_cache(256))
    try:
        change = actions.resolve(model, session, action, src.text, settings,
                                 doc_path=src.path.resolve(), roots=[Path.cwd()])
    except ValueError as err:  # a screenshot outside the current folder, or unreadable
        raise UsageError(f"{src.path}:{action.line + 1}: {err}") from None
    if change is None:
        raise NothingFound(f"{src.path}:{action.line + 1}: {action.title}: the model "
                           "produced no usable edit")
    return action, src.text[:change.start] + change.text + src.text[change.end:]


def unified_diff(old: str, new: str, name: str) -> str:
    """A unified diff (git's a/ b/ names) that marks a last line without a line break."""
    out = []
    for row in difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                    f"a/{name}", f"b/{name}"):
        out.append(row if row.endswith(("\n", "\r")) else row + "\n\\ No newline at end of file\n")
    return "".join(out)


def check_writable_here(path: Path) -> Path:
    """The resolved path when it lies inside the current directory's tree; a UsageError
    otherwise (the command line only rewrites files the user is working on)."""
    full, cwd = path.resolve(), Path.cwd().resolve()
    if not full.is_relative_to(cwd):
        raise UsageError(f"refusing to write {path}: it is outside the current directory "
                         f"({cwd}). HINT: run cromwell from a folder that contains the file")
    return full


def write_atomic(src: Source, new_text: str) -> None:
    """Replace the file's contents in one step: a temp file in the same folder, then
    os.replace; keeps its permissions, encoding (and BOM) and line endings.  Refuses when
    the file changed on disk since it was read."""
    path = check_writable_here(src.path)
    if path.read_bytes() != src.encode(src.text):
        raise UsageError(f"{src.path} changed on disk while the model ran; nothing written")
    mode = path.stat().st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".cromwell", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(src.encode(new_text))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---- explain --------------------------------------------------------------------------
_DEF = re.compile(r"^\s*(?:async\s+def|def|class)\s+([^\W\d]\w*)")


def explain_column(src: Source, line: int) -> int:
    """The 0-based column to explain on a 1-based line: on a def or class line, the name
    it defines; otherwise the line's first non-blank character.  UsageError when the line
    does not exist or is blank."""
    lines = Lines.of(src.text)
    if not 1 <= line <= len(lines):
        raise UsageError(f"{src.path}:{line}: line {line} is past the end of the file "
                         f"({len(lines)} lines)")
    row = lines.line(line - 1)
    if not row.strip():
        raise UsageError(f"{src.path}:{line}: the line is blank; nothing to explain")
    m = _DEF.match(row)
    return m.start(1) if m else len(row) - len(row.lstrip())


def explain_line(model, src: Source, line: int, settings) -> str:
    """The hover text for a 1-based line (see explain_column for where on the line)."""
    from .hover import hover_text
    from .session import Session

    col = explain_column(src, line)
    session = Session(model.new_cache(256))
    text = hover_text(model, session, src.text, line - 1, col, settings)
    if not text:
        raise NothingFound(f"{src.path}:{line}: nothing to explain on this line")
    return text


def is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_SUFFIXES)


def check_image(path: str) -> None:
    """UsageError, before any model loads, when the image file is missing."""
    if not Path(path).is_file():
        raise UsageError(f"{path}: no such image file")


def explain_image(model, path: str, settings) -> str:
    """What the screenshot module says about an image (the workspace: the current folder)."""
    from .screenshot import explain_image as explain

    check_image(path)
    try:
        return explain(model, Path(path), [Path.cwd()], settings)
    except ValueError as err:  # unreadable, too large, not an image
        raise UsageError(f"{path}: {err}") from None
