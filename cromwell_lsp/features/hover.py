"""Hover text: on a function or class, its signature and a generated one-paragraph
explanation (the explain task); on another name, its line and an explanation of that
line; on an image path or markdown image link, which code of the workspace the screenshot
shows and its transcription (screenshot.explain_image).
Markdown out, no LSP here.
"""
from __future__ import annotations

from ..positions import with_line_ending
from .actions import explanation
from .analysis import image_refs, symbol_at
from .screenshot import explain_image, resolve_image

HOVER_MAX_TOKENS = 48


def signature(lines: list[str], first: int, last: int) -> str:
    """The def/class header: from its line up to the line that ends with ':'."""
    out = []
    for line in lines[first:last + 1]:
        out.append(line)
        if line.rstrip().endswith(":"):
            break
    return "\n".join(out)


def hover_text(model, session, text: str, line: int, col: int, settings, cancel=None, *,
               doc_path=None, roots=None, documents=None, index=None) -> str | None:
    """Markdown for a hover at (line, col) (0-based, code points), or None.  doc_path,
    roots (workspace folders) and documents (open uri -> text) serve image hovers."""
    text = with_line_ending(text, "\n")
    lines = text.split("\n")
    if not 0 <= line < len(lines):
        return None
    for start, end, path in image_refs(lines[line]):
        if start <= col <= end:
            if model is None:
                return f"screenshot: `{path}`"
            try:
                image = resolve_image(path, doc_path, roots)
                return explain_image(model, image, roots, settings, documents, index, cancel)
            except ValueError as exc:  # outside the workspace, missing, not an image
                return f"screenshot: `{path}`: {exc}"
    sym = symbol_at(text, line, col)
    if sym is None:
        return None
    max_tokens = min(HOVER_MAX_TOKENS, settings.max_tokens)
    if sym.definition is not None:
        d = sym.definition
        head = signature(lines, d.line, d.end_line)
        code = "\n".join(lines[d.line:d.end_line + 1])
    else:
        head = code = lines[line].strip()
    words = explanation(model, session, code, max_tokens, cancel) if model else ""
    body = f"```python\n{head}\n```"
    return body + (f"\n\n{words}" if words else "")
