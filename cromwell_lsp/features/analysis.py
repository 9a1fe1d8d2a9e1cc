"""What the code actions and hovers look for in a Python document (pure functions over
text; offsets and lines are 0-based, columns in code points — positions.py converts).

  syntax_errors(text)      every syntax error Python reports, one at a time: after each
                           error the offending line is blanked and the parse repeated,
                           so the user sees more than the first one (at most `limit`)
  empty_functions(text)    defs whose body is only a docstring, `pass` or `...`
                           ("Complete function body")
  undocumented(text)       defs and classes without a docstring ("Add docstring")
  symbol_at(text, line, col)  the function, class or name under the cursor (hover)
  image_refs(line)         markdown image links and quoted paths to png/jpg/jpeg/webp
"""
from __future__ import annotations

import ast
import re
import warnings
from dataclasses import dataclass

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")

# Python warns while it parses some valid code ("\d" in a plain string: a
# DeprecationWarning, a SyntaxWarning from 3.12); under -W error or PYTHONWARNINGS=error
# the warning is raised as a SyntaxError, and code that runs would be called broken (or a
# good completion cut).  The document's parses carry their own file name, and the
# warnings are ignored for that name alone, so no other code's warnings change.
_SOURCE = "<cromwell-document>"
warnings.filterwarnings("ignore", module=re.escape(_SOURCE) + "$")


def _ast_parse(text: str):
    return ast.parse(text, filename=_SOURCE)


@dataclass(frozen=True)
class SyntaxProblem:
    line: int        # 0-based
    col: int         # 0-based, code points
    end_line: int
    end_col: int
    message: str


def syntax_errors(text: str, limit: int = 10) -> list[SyntaxProblem]:
    lines = text.split("\n")
    problems: list[SyntaxProblem] = []
    seen_lines: set[int] = set()
    while len(problems) < limit:
        try:
            _ast_parse("\n".join(lines))
            break
        except SyntaxError as err:
            line = max((err.lineno or 1) - 1, 0)
            if line >= len(lines) or line in seen_lines:
                line = min(line, len(lines) - 1)
                if line in seen_lines:
                    break
            col = max((err.offset or 1) - 1, 0)
            end_line = max((getattr(err, "end_lineno", None) or line + 1) - 1, line)
            end_col = (getattr(err, "end_offset", None) or 0) - 1
            if end_line == line and end_col <= col:
                end_col = len(lines[line]) if line < len(lines) else col + 1
            problems.append(SyntaxProblem(line, min(col, len(lines[line])), end_line,
                                          max(end_col, 0), err.msg))
            seen_lines.add(line)
            indent = re.match(r"[ \t]*", lines[line]).group(0)
            lines[line] = indent + "pass" if lines[line].strip() else lines[line]
        except (ValueError, RecursionError, MemoryError) as err:
            problems.append(SyntaxProblem(0, 0, 0, 0, str(err)))
            break
    return problems


def _parse(text: str):
    try:
        return _ast_parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def parses(text: str) -> bool:
    return _parse(text) is not None


def error_line(text: str) -> int | None:
    """The 1-based line of the syntax error Python reports in text, None when it parses."""
    try:
        _ast_parse(text)
    except SyntaxError as err:
        return err.lineno or 1
    except (ValueError, RecursionError, MemoryError):
        return 1
    return None


@dataclass(frozen=True)
class Definition:
    name: str
    kind: str        # "function" | "class"
    line: int        # 0-based line of the `def`/`class` keyword
    end_line: int    # 0-based last line
    body_line: int   # 0-based first line of the body
    has_docstring: bool
    node: object = None


def _definitions(tree) -> list[Definition]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            kind = "class" if isinstance(node, ast.ClassDef) else "function"
            out.append(Definition(node.name, kind, node.lineno - 1, node.end_lineno - 1,
                                  node.body[0].lineno - 1,
                                  ast.get_docstring(node, clean=False) is not None, node))
    return sorted(out, key=lambda d: d.line)


def _is_placeholder(stmt) -> bool:
    if isinstance(stmt, ast.Pass):
        return True
    return (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
            and (stmt.value.value is Ellipsis or isinstance(stmt.value.value, str)))


def empty_functions(text: str) -> list[Definition]:
    tree = _parse(text)
    if tree is None:
        return []
    return [d for d in _definitions(tree)
            if d.kind == "function" and all(_is_placeholder(s) for s in d.node.body)]


def undocumented(text: str) -> list[Definition]:
    tree = _parse(text)
    return [] if tree is None else [d for d in _definitions(tree) if not d.has_docstring]


@dataclass(frozen=True)
class Symbol:
    name: str
    kind: str                    # "function" | "class" | "name"
    definition: Definition | None  # the def/class in this document, when there is one


def symbol_at(text: str, line: int, col: int) -> Symbol | None:
    """The identifier under (line, col) and, when the document defines it, its def."""
    lines = text.split("\n")
    if not 0 <= line < len(lines):
        return None
    src = lines[line]
    for m in re.finditer(r"[^\W\d]\w*", src):
        if m.start() <= col <= m.end():
            name = m.group(0)
            break
    else:
        return None
    tree = _parse(text)
    defs = _definitions(tree) if tree is not None else []
    matches = sorted((d for d in defs if d.name == name), key=lambda d: d.line != line)
    if matches:  # a def on the cursor's line first, then the first def of that name
        return Symbol(name, matches[0].kind, matches[0])
    return Symbol(name, "name", None)


_MD_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_QUOTED = re.compile(r"""(['"])([^'"\n]+?\.(?:png|jpe?g|webp))\1""", re.I)
_BARE = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.(?:png|jpe?g|webp))\b", re.I)


def image_refs(line: str) -> list[tuple[int, int, str]]:
    """(start col, end col, path) of every image reference on a line: markdown image links,
    quoted paths and bare relative paths with an image suffix."""
    found: list[tuple[int, int, str]] = []
    taken: list[tuple[int, int]] = []
    for rx, group in ((_MD_IMAGE, 1), (_QUOTED, 2), (_BARE, 1)):
        for m in rx.finditer(line):
            span = (m.start(), m.end())
            if any(a < span[1] and span[0] < b for a, b in taken):
                continue
            path = m.group(group)
            if path.lower().endswith(IMAGE_SUFFIXES) and "://" not in path:
                found.append((span[0], span[1], path))
                taken.append(span)
    return sorted(found)
