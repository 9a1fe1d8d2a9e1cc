"""Code actions on Python documents: listed instantly from analysis.py (no model), computed
by the model only when the editor resolves one (codeAction/resolve).

  "Complete function body"  a def whose body is only a docstring, `pass` or `...`: the
                            placeholder lines are replaced by a fill-in-the-middle block,
                            cut to its longest start that leaves the document parsing;
                            when no start does, the block is generated again from
                            another first token (settings.alternatives times at most)
  "Add docstring"           a def or class without one: the explain task, as a docstring
                            (offered only when the document still parses with it)
  "Fix syntax error"        each syntax error: the repair task on the lines around it; the
                            edit is offered only when the repaired document parses
  "Insert code from screenshot"  an image path or markdown image link on the line: the
                            code the screenshot shows, inserted below that line (a fenced
                            block in markdown), read by the image task (screenshot.py)

An action is an `Action` (title, kind, line); `resolve` returns an `Edit` (offsets into the
document text, code points) or None when the model found nothing usable.  No LSP here.
"""
from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass

from ..model import prompts
from ..model.generation import GenerationConfig, GenerationStats
from ..positions import line_ending, with_line_ending
from .analysis import empty_functions, image_refs, parses, syntax_errors, undocumented
from .completion import generate_text, healed_prompt, prompt_budget, with_alternatives
from .postprocess import finish

REPAIR_CONTEXT_LINES = 8


@dataclass(frozen=True)
class Action:
    title: str
    kind: str   # "body" | "docstring" | "fix" | "screenshot"
    line: int   # 0-based: the def's line, the syntax error's line or the image link's line


@dataclass(frozen=True)
class Edit:
    start: int  # offset of the first replaced character
    end: int    # offset after the last replaced character
    text: str


def list_actions(text: str, first_line: int, last_line: int) -> list[Action]:
    """The actions for a cursor or selection on lines first_line..last_line (0-based)."""
    text = with_line_ending(text, "\n")
    hit = lambda d: d.line <= last_line and first_line <= d.end_line  # noqa: E731
    out = [Action(f"Complete function body of {d.name}", "body", d.line)
           for d in empty_functions(text) if hit(d) and d.body_line > d.line]
    out += [Action(f"Add docstring to {d.name}", "docstring", d.line)
            for d in undocumented(text) if hit(d) and d.body_line > d.line]
    out += [Action(f"Fix syntax error: {p.message}", "fix", p.line)
            for p in syntax_errors(text) if first_line <= p.line <= last_line]
    lines = text.split("\n")
    for n in range(max(0, first_line), min(len(lines), last_line + 1)):
        out += [Action(f"Insert code from screenshot {path}", "screenshot", n)
                for _, _, path in image_refs(lines[n])[:1]]
    return out


def resolve(model, session, action: Action, text: str, settings, cancel=None, *,
            doc_path=None, roots=None) -> Edit | None:
    """Run the model for an action; None when it produced nothing usable.  doc_path and
    roots (the workspace folders) locate the image of a screenshot action; an image
    outside the roots or unreadable raises ValueError with the reason."""
    if "\r" in text:  # offsets below are computed on "\n" text; map them back at the end
        edit = resolve(model, session, action, with_line_ending(text, "\n"), settings, cancel,
                       doc_path=doc_path, roots=roots)
        return None if edit is None else _to_crlf(edit, text)
    if action.kind == "screenshot":
        return _screenshot(model, action, text, settings, cancel, doc_path, roots)
    fn = {"body": _body, "docstring": _docstring, "fix": _fix}.get(action.kind)
    return fn(model, session, action, text, settings, cancel) if fn else None


def _to_crlf(edit: Edit, original: str) -> Edit:
    """Offsets in the "\\n" text -> offsets in the original text with its line endings."""
    ending = line_ending(original)
    extra = len(ending) - 1
    lf = with_line_ending(original, "\n")
    start = edit.start + lf.count("\n", 0, edit.start) * extra
    end = edit.end + lf.count("\n", 0, edit.end) * extra
    return Edit(start, end, edit.text.replace("\n", ending))


def _line_starts(text: str) -> list[int]:
    starts = [0]
    for i, c in enumerate(text):
        if c == "\n":
            starts.append(i + 1)
    return starts


def _find(defs, line):
    return next((d for d in defs if d.line == line), None)


def _body(model, session, action, text, settings, cancel) -> Edit | None:
    d = _find(empty_functions(text), action.line)
    if d is None:
        return None
    body = d.node.body
    first = body[0]
    keep = first.end_lineno if isinstance(first, ast.Expr) and isinstance(
        getattr(first, "value", None), ast.Constant) and isinstance(first.value.value, str) else None
    starts = _line_starts(text)
    start_line = keep if keep is not None else d.body_line  # 0-based first replaced line
    if start_line > d.end_line:  # only a docstring: insert after it
        start = end = starts[start_line] if start_line < len(starts) else len(text)
    else:
        start = starts[start_line]
        end = starts[d.end_line + 1] - 1 if d.end_line + 1 < len(starts) else len(text)
    indent = " " * first.col_offset
    prefix, suffix = text[:start] + indent, "\n" + text[end:].lstrip("\n") if end < len(text) else ""
    budget = prompt_budget(settings, model.config.max_seq_len)
    ids, lead = healed_prompt(prefix, suffix, model.tokenizer, budget)
    config = GenerationConfig(max_tokens=settings.max_tokens)

    def attempt(avoid=()) -> tuple[Edit | None, bool, GenerationStats]:
        stats = GenerationStats()
        raw = generate_text(model, session, ids, config, cancel, stats, lead=lead,
                            guard_context=prefix if settings.syntax_guard else None,
                            avoid_first=avoid)
        if stats.stop_reason == "cancelled":
            return None, False, stats
        lines = finish(raw, prefix, suffix, python=True).split("\n")
        while lines and any(line.strip() for line in lines):  # the longest start that parses
            new = indent + "\n".join(lines) + ("\n" if start == end else "")
            if parses(text[:start] + new + text[end:]):
                return Edit(start, end, new), False, stats
            lines.pop()
        return None, True, stats  # no start of it parses: another first token, if allowed

    return with_alternatives(attempt(), attempt, settings.alternatives)[0]


def fit_code(code: str, tok, limit: int) -> str:
    """The first lines of code that fit in `limit` tokens (at least one line, cut)."""
    if len(tok.encode(code)) <= limit:
        return code
    kept, used = [], 0
    for line in code.split("\n"):
        n = len(tok.encode(line + "\n"))
        if used + n > limit:
            break
        kept.append(line)
        used += n
    return "\n".join(kept) if kept else tok.decode(tok.encode(code)[:limit])


def explanation(model, session, code: str, max_tokens: int, cancel) -> str:
    """One paragraph about code (the explain task), on one line."""
    room = model.config.max_seq_len - max_tokens - 16
    ids = prompts.encode(prompts.explain(fit_code(code, model.tokenizer, room)), model.tokenizer)[0]
    raw = generate_text(model, session, ids, GenerationConfig(max_tokens=max_tokens), cancel)
    paragraph = raw.strip().split("\n\n", 1)[0]
    return " ".join(paragraph.split())


def _docstring(model, session, action, text, settings, cancel) -> Edit | None:
    d = _find(undocumented(text), action.line)
    if d is None:
        return None
    lines = text.split("\n")
    code = "\n".join(lines[d.line:d.end_line + 1])
    words = explanation(model, session, code, settings.max_tokens, cancel).replace('"""', "'''")
    if not words:
        return None
    indent = " " * d.node.body[0].col_offset
    wrapped = textwrap.fill(words.rstrip('\\"'), width=max(40, 88 - len(indent)),
                            subsequent_indent=indent)
    at = _line_starts(text)[d.body_line]
    new = f'{indent}"""{wrapped}"""\n'
    return Edit(at, at, new) if parses(text[:at] + new + text[at:]) else None


def _fix(model, session, action, text, settings, cancel) -> Edit | None:
    lines = text.split("\n")
    lo = max(0, action.line - REPAIR_CONTEXT_LINES)
    hi = min(len(lines), action.line + REPAIR_CONTEXT_LINES + 1)
    snippet = "\n".join(lines[lo:hi])
    ids = prompts.encode(prompts.repair(snippet), model.tokenizer)[0]
    room = model.config.max_seq_len - len(ids) - 1
    budget = min(1024, room, len(ids) + 32)
    if budget <= 0:
        return None  # the lines around the error are longer than the model's context
    raw = generate_text(model, session, ids, GenerationConfig(max_tokens=budget), cancel,
                        guard_context="" if settings.syntax_guard else None)
    fixed = raw.strip("\n")
    candidate = "\n".join(lines[:lo] + fixed.split("\n") + lines[hi:])
    if not fixed.strip() or fixed == snippet or not parses(candidate):
        return None
    starts = _line_starts(text)
    end = starts[hi] - 1 if hi < len(starts) else len(text)
    return Edit(starts[lo], end, fixed)


def _screenshot(model, action, text, settings, cancel, doc_path, roots) -> Edit | None:
    from .screenshot import resolve_image, transcribe

    lines = text.split("\n")
    if not 0 <= action.line < len(lines):
        return None
    refs = image_refs(lines[action.line])
    if not refs:
        return None
    image = resolve_image(refs[0][2], doc_path, roots)
    code = transcribe(model, image, max(32, settings.max_tokens), cancel)
    if not code.strip():
        return None
    line = lines[action.line]
    indent = line[:len(line) - len(line.lstrip())]
    if str(doc_path or "").lower().endswith((".md", ".markdown")):
        block = f"\n{indent}```python\n" + textwrap.indent(code, indent) + f"\n{indent}```"
    else:
        block = "\n" + textwrap.indent(code, indent)
    at = _line_starts(text)[action.line] + len(line)
    return Edit(at, at, block)
