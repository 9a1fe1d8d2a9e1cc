"""The training task mixture, as text-level examples turned into token sequences.

Every example is a list of segments: (kind, payload).  `kind` is "special" (a special
token's name), "text" (tokenized on its own, so segment boundaries are token boundaries,
as they are at inference) or "image" (a rendered screenshot, see screenshots.py).  The
loss covers every text token of the causal and FIM tasks, and only the answer of the
explain, repair and screenshot tasks (the segments after the answer marker).

Formats: the prompts of model/prompts.py (the server builds its prompts with the same
functions) followed by the answer and <eot>; plus whole files, <file_sep> path \n source <eot>.
"""
from __future__ import annotations

import ast
import random
import re
import textwrap
from dataclasses import dataclass, field

from ..model import prompts

FIM_RATE = 0.5
SPM_SHARE = 0.5


@dataclass
class Example:
    task: str
    segments: list = field(default_factory=list)  # (kind, payload)
    answer_from: int = 0  # index of the first segment the loss covers


def file_example(path: str, text: str) -> Example:
    return Example("lm", [("special", "file_sep"), ("text", f"{path}\n{text}"),
                          ("special", "endoftext")])


def fim_split(text: str, rng: random.Random) -> tuple[str, str, str]:
    """Cut text into prefix, middle, suffix at two random points; half the time the middle
    is whole lines (a block), otherwise it starts mid-line (the rest-of-line case)."""
    n = len(text)
    if rng.random() < 0.5:
        starts = [m.end() for m in re.finditer("\n", text)]
        starts = [0] + starts[:-1] if starts else [0]
        a = rng.choice(starts)
        ends = [m.end() for m in re.finditer("\n", text[a:])][: rng.randint(1, 12)]
        b = a + (ends[-1] if ends else n - a)
    else:
        a = rng.randrange(n + 1)
        line_end = text.find("\n", a)
        b = n if line_end < 0 else line_end
        if rng.random() < 0.3:
            b = min(n, a + rng.randint(0, 400))
    return text[:a], text[a:b], text[b:]


def fim_example(text: str, rng: random.Random, spm: bool | None = None) -> Example:
    prefix, middle, suffix = fim_split(text, rng)
    spm = rng.random() < SPM_SHARE if spm is None else spm
    end = [("text", middle), ("special", "endoftext")]
    if spm:
        return Example("fim_spm", prompts.fim_spm(prefix, suffix) + end)
    return Example("fim_psm", prompts.fim_psm(prefix, suffix) + end)


def lm_or_fim(path: str, text: str, rng: random.Random) -> Example:
    return fim_example(text, rng) if rng.random() < FIM_RATE else file_example(path, text)


def _statements(text: str, kinds: tuple) -> list[tuple[ast.AST, int, list[str]]]:
    """(node, its first line's index, decorators included, the file's lines) for every
    node of the given kinds, in ast.walk order; [] when the text does not parse."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError):
        return []
    lines = text.splitlines(keepends=True)
    return [(node, min([d.lineno for d in getattr(node, "decorator_list", [])]
                       + [node.lineno]) - 1, lines)
            for node in ast.walk(tree) if isinstance(node, kinds)]


# ---- explain: code -> docstring ------------------------------------------------------
def _first_paragraph(doc: str) -> str:
    para = textwrap.dedent(doc).strip().split("\n\n")[0]
    return " ".join(line.strip() for line in para.splitlines())


def explain_pairs(text: str, min_words: int = 4) -> list[tuple[str, str]]:
    """(code without its docstring, first paragraph of the docstring) for every function
    and class with a docstring of at least `min_words` words."""
    pairs = []
    for node, start, lines in _statements(
            text, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        doc = ast.get_docstring(node, clean=True)
        body = node.body
        if not doc or not isinstance(body[0], ast.Expr) or len(doc.split()) < min_words:
            continue
        d0, d1 = body[0].lineno - 1, body[0].end_lineno
        code = "".join(lines[start:d0] + lines[d1:node.end_lineno])
        if len(body) == 1:  # only a docstring: keep a valid body
            indent = re.match(r"\s*", lines[d0]).group(0)
            code = "".join(lines[start:d0]) + indent + "...\n"
        pairs.append((textwrap.dedent(code), _first_paragraph(doc)))
    return pairs


def explain_example(code: str, explanation: str) -> Example:
    segs = prompts.explain(code)
    return Example("explain", segs + [("text", explanation), ("special", "endoftext")],
                   answer_from=len(segs))


# ---- repair: broken code -> original ---------------------------------------------------
def _drop_colon(lines, rng):
    idx = [i for i, l in enumerate(lines) if re.search(r"^\s*(def|class|if|for|while|elif|else|try|except|with)\b.*:\s*$", l)]
    if not idx:
        return None
    i = rng.choice(idx)
    lines[i] = re.sub(r":(\s*)$", r"\1", lines[i])
    return lines


def _drop_closer(lines, rng):
    idx = [i for i, l in enumerate(lines) if re.search(r"[)\]}]", l)]
    if not idx:
        return None
    i = rng.choice(idx)
    pos = [m.start() for m in re.finditer(r"[)\]}]", lines[i])]
    p = rng.choice(pos)
    lines[i] = lines[i][:p] + lines[i][p + 1:]
    return lines


def _misspell_keyword(lines, rng):
    swaps = {"return": "retrun", "def ": "dfe ", "import": "improt", "lambda": "lamda",
             "while": "whlie", "else:": "esle:"}
    idx = [(i, k) for i, l in enumerate(lines) for k in swaps if k in l]
    if not idx:
        return None
    i, k = rng.choice(idx)
    lines[i] = lines[i].replace(k, swaps[k], 1)
    return lines


def _break_indent(lines, rng):
    idx = [i for i, l in enumerate(lines) if l.startswith("    ") and l.strip()]
    if not idx:
        return None
    i = rng.choice(idx)
    lines[i] = lines[i][rng.choice([1, 2, 3]):] if rng.random() < 0.5 else "  " + lines[i]
    return lines


def _unclosed_string(lines, rng):
    idx = [i for i, l in enumerate(lines) if re.search(r"(['\"])[^'\"\n]*\1", l)]
    if not idx:
        return None
    i = rng.choice(idx)
    m = list(re.finditer(r"(['\"])[^'\"\n]*\1", lines[i]))[-1]
    lines[i] = lines[i][:m.end() - 1] + lines[i][m.end():]
    return lines


CORRUPTIONS = (_drop_colon, _drop_closer, _misspell_keyword, _break_indent, _unclosed_string)


def corrupt(code: str, rng: random.Random, tries: int = 8) -> str | None:
    """A realistic single syntax error in code that parses; None when no corruption
    applied to this code makes it fail to parse."""
    for _ in range(tries):
        lines = code.splitlines(keepends=True)
        out = rng.choice(CORRUPTIONS)(lines, rng)
        if out is None:
            continue
        broken = "".join(out)
        try:
            ast.parse(broken)
        except (SyntaxError, ValueError):
            return broken
    return None


def repair_example(broken: str, fixed: str) -> Example:
    segs = prompts.repair(broken)
    return Example("repair", segs + [("text", fixed), ("special", "endoftext")],
                   answer_from=len(segs))


def function_snippets(text: str, max_lines: int = 40) -> list[str]:
    """Top-level and method definitions of a file, dedented, at most max_lines long."""
    return [textwrap.dedent("".join(lines[start:node.end_lineno]))
            for node, start, lines in _statements(text, (ast.FunctionDef, ast.AsyncFunctionDef))
            if node.end_lineno - start <= max_lines]


# ---- block: a bare start -> the rest of its block, then the end ---------------------
BLOCK_NODES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.For, ast.AsyncFor,
               ast.While, ast.With, ast.AsyncWith, ast.If, ast.Try)
BLOCK_KEEP_DOCSTRING = 0.15  # a bare start asks for code; the docstring action writes those


def block_snippets(text: str, max_lines: int = 30) -> list[str]:
    """Compound statements of a file (definitions, loops, with, if, try) of 2 to max_lines
    lines, dedented; those that start a line (not `else:` chains' inner ifs) and read as
    a block of their own."""
    out = []
    for node, start, lines in _statements(text, BLOCK_NODES):
        if not 2 <= node.end_lineno - start <= max_lines:
            continue
        first = lines[start]
        if not first.lstrip().startswith(("@", "def", "async", "class", "for", "while",
                                          "with", "if", "try")):
            continue  # an `elif` (an If inside orelse) starts with another keyword
        code = textwrap.dedent("".join(lines[start:node.end_lineno]))
        if not code.endswith("\n"):
            code += "\n"
        out.append(code)
    return out


def try_body_end(block: str) -> int | None:
    """Where the body of a `try` statement (a block_snippets block) ends: the offset just
    past its last statement's last line, where its first clause begins unless blank or
    comment lines come between; None when the block is no `try` statement."""
    try:
        node = ast.parse(block).body[0]
    except (SyntaxError, ValueError, RecursionError, IndexError):
        return None
    if not isinstance(node, ast.Try):
        return None
    return sum(map(len, block.splitlines(keepends=True)[:node.body[-1].end_lineno]))


def block_opening(code: str) -> str:
    """A block's opening: its first two lines (the header and the first body line, or a
    decorator and its def), the part a bare start's greedy answer is made of.  Blocks that
    share one by the hundred are boilerplate (`try:` / `if not is_torch_available():`,
    `def __init__(self, config):` / `super().__init__()`), which data.TextStream's
    block cap draws less often."""
    return "\n".join(code.split("\n", 2)[:2])


def opening_counts(texts: list[tuple[str, str]], above: int = 1) -> dict[str, int]:
    """How many blocks (block_snippets) of the files `texts` ((path, text) pairs; a file
    listed twice, as a weighted source's are, counts twice) share each opening, for the
    openings shared by more than `above`."""
    copies: dict[str, int] = {}
    for path, _ in texts:
        copies[path] = copies.get(path, 0) + 1
    counts: dict[str, int] = {}
    for path, text in dict(texts).items():
        for code in block_snippets(text):
            key = block_opening(code)
            counts[key] = counts.get(key, 0) + copies[path]
    return {k: n for k, n in counts.items() if n > above}


def _drop_docstring(code: str) -> str:
    """The snippet without the docstring of its outer def or class (when it has more)."""
    try:
        node = ast.parse(code).body[0]
    except (SyntaxError, ValueError, RecursionError, IndexError):
        return code
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return code
    if ast.get_docstring(node) is None or len(node.body) < 2:
        return code
    lines = code.splitlines(keepends=True)
    doc = node.body[0]
    return "".join(lines[:doc.lineno - 1] + lines[doc.end_lineno:])


def header_end(code: str) -> int | None:
    """Where the first statement of the block's body starts (after its indentation), when
    the body is on a line below the header; else None."""
    lines = code.splitlines(keepends=True)
    try:
        body_line = ast.parse(code).body[0].body[0].lineno - 1
    except (SyntaxError, ValueError, RecursionError, IndexError, AttributeError):
        return None
    if body_line <= 0:
        return None
    body = lines[body_line]
    return len("".join(lines[:body_line])) + len(body) - len(body.lstrip())


def block_cut(code: str, rng: random.Random) -> tuple[str, str]:
    """(start, rest): mostly the header through its line's end and the first body line's
    indentation, as a developer who just opened a block has typed; otherwise a point
    inside the first line (`for i in range(`)."""
    lines = code.splitlines(keepends=True)
    header = header_end(code)
    if rng.random() < 0.75 and header is not None:
        a = header
    else:
        first = lines[0].rstrip()
        a = rng.randint(min(3, len(first)), max(3, len(first) - 1))
    return code[:a], code[a:]


def block_example(code: str, rng: random.Random) -> Example:
    """The server's prompt with no suffix (a block being written at the end of what is
    there): the start, then the rest of the block and the end of text, so a bare start
    is completed as a whole block that stops."""
    if rng.random() >= BLOCK_KEEP_DOCSTRING:
        code = _drop_docstring(code)
    return start_example("block", *block_cut(code, rng))


def start_example(task: str, start: str, rest: str) -> Example:
    """The server's prompt for a bare start (SPM, no suffix), then what completes it and
    the end of text: the file's real block ("block") or the model's own working
    completion ("own", owncompletions.py)."""
    return Example(task, prompts.fim_spm(start, "") + [("text", rest), ("special", "endoftext")])


# ---- token sequences ----------------------------------------------------------------
def encode(example: Example, tok) -> tuple[list[int], list[int]]:
    """Token ids and a 0/1 loss mask (1 where the next-token loss applies) for one example;
    image segments are left to the caller (they contribute no text tokens)."""
    return prompts.encode(example.segments, tok, example.answer_from)
