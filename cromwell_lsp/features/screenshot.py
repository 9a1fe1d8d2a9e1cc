"""Screenshots of code: which code of the workspace an image shows, and its transcription.

  resolve_image(ref, doc_path, roots)   the file an image reference names, checked: a
                                        supported suffix, inside a workspace root, present
  transcribe(model, path, ...)          the code the screenshot shows: what the vision
                                        encoder's reading head reads (transcription)
  screenshot_vector(model, pixels, read) what snippets are ranked against
  snippets_of(path, text)               the pieces of a Python file a screenshot could show:
                                        every def and class, and windows over the rest
  SnippetIndex                          joint-space vectors of snippets, cached by content
  explain_image(model, path, roots, ...) markdown: the nearest snippets among the open
                                        documents and the workspace's Python files (links
                                        to their lines) and the transcription

The screenshot goes through the same canvas the model was trained on
(CromwellVLJEPA.read_screenshot).  No LSP here: the server and the command line call
these with paths and texts.
"""
from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..model import prompts
from ..model.generation import GenerationConfig
from ..model.images import IMAGE_SUFFIXES
from ..model.sampling import SamplingParams
from ..positions import with_line_ending
from .analysis import _definitions, _parse

WINDOW_LINES = 12
MAX_WORKSPACE_FILES = 400
MAX_FILE_BYTES = 512 << 10
SKIP_DIRS = {".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", "venv", ".tox",
             ".mypy_cache", ".pytest_cache", "build", "dist", "site-packages", ".cache"}


# ---- images --------------------------------------------------------------------------
def resolve_image(ref: str, doc_path: str | Path | None, roots) -> Path:
    """The image file a reference names (relative to the document's folder, else to a
    root), checked; ValueError with a message for the user otherwise."""
    if not ref.lower().endswith(IMAGE_SUFFIXES):
        raise ValueError(f"{ref}: not a supported image (png, jpg, jpeg, webp)")
    roots = [Path(r).resolve() for r in (roots or [Path.cwd()])]
    raw = Path(os.path.expanduser(ref))
    bases = [raw] if raw.is_absolute() else (
        ([Path(doc_path).parent / raw] if doc_path else []) + [r / raw for r in roots])
    for cand in bases:
        path = cand.resolve()
        if not any(path == r or r in path.parents for r in roots):
            raise ValueError(f"{ref}: outside the workspace ({', '.join(map(str, roots))}); "
                             "only images inside it are read")
        if path.is_file():
            return path
    raise ValueError(f"{ref}: no such image file in the workspace")


def transcribe(model, image_path, max_tokens: int = 128, cancel=None) -> str:
    """The code a screenshot file shows ("" when the model reads nothing)."""
    pixels = model.read_screenshot(image_path)
    return transcription(model, pixels, model.read_text(pixels), max_tokens, cancel)


def transcription(model, pixels, read: str, max_tokens: int = 128, cancel=None) -> str:
    """The code a screenshot's canvas shows: what the vision encoder's reading head read
    (`read`, model.read_text), or, for weights whose head reads nothing, what the
    language model writes after the image prompt."""
    if read.strip():
        return read
    config = GenerationConfig(max_tokens=max_tokens, sampling=SamplingParams(0.0))
    text = "".join(model.stream(prompts.image_to_code(), config, image=pixels, cancel=cancel))
    return text.strip("\n").rstrip()


# ---- snippets ------------------------------------------------------------------------
@dataclass(frozen=True)
class Snippet:
    path: str        # file path (or an unsaved document's uri)
    line: int        # 0-based first line
    end_line: int    # 0-based last line
    name: str        # "def name", "class Name" or "lines a-b"
    text: str


def snippets_of(path: str, text: str) -> list[Snippet]:
    """Every def and class of a Python text, or windows of WINDOW_LINES lines when it does
    not parse (or defines nothing)."""
    text = with_line_ending(text, "\n")
    lines = text.split("\n")
    tree = _parse(text)
    out = []
    if tree is not None:
        for d in _definitions(tree):
            first = d.line
            node = d.node
            for dec in getattr(node, "decorator_list", []):
                first = min(first, dec.lineno - 1)
            body = "\n".join(lines[first:d.end_line + 1])
            kw = "class" if d.kind == "class" else "def"
            out.append(Snippet(path, first, d.end_line, f"{kw} {d.name}", body))
    if not out:
        for a in range(0, len(lines), WINDOW_LINES):
            chunk = "\n".join(lines[a:a + WINDOW_LINES])
            if chunk.strip():
                b = min(len(lines), a + WINDOW_LINES) - 1
                out.append(Snippet(path, a, b, f"lines {a + 1}-{b + 1}", chunk))
    return out


def workspace_python_files(roots, limit: int = MAX_WORKSPACE_FILES) -> list[Path]:
    """Python files under the roots (skipping VCS, virtual-env and build folders), at most
    `limit`, each at most MAX_FILE_BYTES."""
    found: list[Path] = []
    for root in roots or []:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
            for name in sorted(filenames):
                if name.endswith(".py"):
                    p = Path(dirpath) / name
                    try:
                        if p.stat().st_size <= MAX_FILE_BYTES:
                            found.append(p)
                    except OSError:
                        continue
                    if len(found) >= limit:
                        return found
    return found


class SnippetIndex:
    """Joint-space vectors of snippet texts, cached by content (a bounded LRU), so asking
    again after an edit embeds only what changed."""

    def __init__(self, max_entries: int = 4096):
        self.max_entries = max_entries
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()

    def vector(self, model, text: str) -> np.ndarray:
        key = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        v = self._vectors.get(key)
        if v is None:
            ids = model.tokenizer.encode(text)[: model.config.max_seq_len]
            v = self._vectors[key] = model.embed_text(ids or [model.tokenizer.special("pad")])
            while len(self._vectors) > self.max_entries:
                self._vectors.popitem(last=False)
        else:
            self._vectors.move_to_end(key)
        return v

    def nearest(self, model, image_vector: np.ndarray, snippets: list[Snippet], k: int = 3,
                cancel=None) -> list[tuple[float, Snippet]]:
        scored = []
        for s in snippets:
            if cancel is not None and cancel.is_set():
                break
            scored.append((float(np.dot(self.vector(model, s.text), image_vector)), s))
        scored.sort(key=lambda x: -x[0])
        return scored[:k]


def screenshot_vector(model, pixels, read: str) -> np.ndarray:
    """The vector snippets are ranked against: the joint-space vector of the code the
    screenshot's reading head reads, or the image's own pooled vector when it reads
    nothing.  (On 100 held-out screenshots the shipped model finds the right function
    first 96 times by what it reads, once by the pooled vector, 95 times by the two
    together: docs/bench/eval-tiny-29250.json.)
    pixels: a canvas or its VisionState; read: what model.read_text read from it."""
    return model.embed_text(read) if read.strip() else model.embed_image(pixels)


def candidate_snippets(documents: dict[str, str] | None, roots) -> list[Snippet]:
    """Snippets of the open documents (their current text) and of the workspace's other
    Python files (from disk)."""
    out: list[Snippet] = []
    seen: set[str] = set()
    for key, text in (documents or {}).items():
        path = _uri_path(key)
        if path.endswith((".py", ".pyi")):
            out += snippets_of(path, text)
            seen.add(os.path.realpath(path))
    for p in workspace_python_files(roots):
        if os.path.realpath(p) in seen:
            continue
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        out += snippets_of(str(p), text)
    return out


def _uri_path(key: str) -> str:
    if key.startswith("file://"):
        from urllib.parse import unquote, urlparse
        return unquote(urlparse(key).path)
    return key


def _link(s: Snippet, roots) -> str:
    path = Path(s.path)
    label = path.name
    for r in roots or []:
        try:
            label = str(path.resolve().relative_to(Path(r).resolve()))
            break
        except ValueError:
            continue
    uri = path.resolve().as_uri() if path.is_absolute() else s.path
    return f"[{label}:{s.line + 1}]({uri}#L{s.line + 1}) `{s.name}`"


def explain_image(model, path, roots, settings=None, documents: dict[str, str] | None = None,
                  index: SnippetIndex | None = None, cancel=None, k: int = 3) -> str:
    """Markdown about a screenshot: the nearest snippets (links) and the transcription."""
    path = Path(path)
    roots = [Path(r) for r in (roots or [Path.cwd()])]
    out = [f"**Screenshot** `{path.name}`"]
    pixels = model.read_screenshot(path)
    read = model.read_text(pixels)  # once: the ranking and the transcription both use it
    index = index or SnippetIndex()
    snippets = candidate_snippets(documents, roots)
    if snippets:
        vec = screenshot_vector(model, pixels, read)
        best = index.nearest(model, vec, snippets, k, cancel)
        out.append("Most similar code in the workspace:")
        out += [f"- {_link(s, roots)} (similarity {score:.2f})" for score, s in best]
    else:
        out.append("No Python files in the workspace to compare it with.")
    max_tokens = getattr(settings, "max_tokens", 128) if settings is not None else 128
    code = transcription(model, pixels, read, max(16, max_tokens), cancel)
    if code:
        out.append("Transcription:\n```python\n" + code.replace("```", "`\u200b``") + "\n```")
    return "\n\n".join(out)
