"""`cromwell train eval`: how good a trained model is, measured the ways the editor uses it.

1. Validation loss per task (file LM, FIM in both orders, explain, repair) on held-out
   files, and bits per byte on held-out standard-library files, for the trained twin, the
   same model untrained (its initial weights) and a unigram model of the training tokens;
   and the same for the engine on the weights file evaluated (int8 as shipped): what the
   C kernels on the exported weights score, beside the fp32 twin.
2. Greedy completions of ordinary Python starts, through the engine and the server's SPM
   prompt (token-healed, as the server sends it), cut at the end of their block: do they
   parse, and do they parse without looping (a repeated line parses, yet helps nobody)
   and without being trivial (a body of only `return` or `pass`)?
   And rest-of-line completions inside held-out files, one per file, with the server's
   prompt window and post-processing: exact, and how much of the line matched.
3. Screenshot -> code retrieval in the joint space, through the engine: held-out functions
   rendered as screenshots; for each image, is its own code the nearest of the candidates,
   by the image's pooled vector and by the vector of the code its reading head reads?
"""
from __future__ import annotations

import random
import re
import time
from pathlib import Path

import numpy as np

from ..features.analysis import parses
from ..features.postprocess import code_lines, goes_on, statement_word

STARTS = (
    "def fibonacci(n):\n    ",
    "class Stack:\n    ",
    "for i in range(",
    "def is_prime(n):\n    ",
    "import os\n\n\ndef read_lines(path):\n    ",
    "with open(path) as f:\n    ",
    'if __name__ == "__main__":\n    ',
    "def add(a, b):\n    ",
    "while True:\n    ",
    "try:\n    ",
)

# twenty more ordinary starts, reported beside the ten above (whose rate stays comparable
# with earlier evaluations): with ten, one start moves the rate by 10 points
MORE_STARTS = (
    "def factorial(n):\n    ",
    "def reverse_string(s):\n    ",
    "def main():\n    ",
    "class Node:\n    def __init__(self, value):\n        ",
    "import sys\n\n\ndef main(argv):\n    ",
    "for line in lines:\n    ",
    "if x is None:\n    ",
    "def max_value(values):\n    ",
    "def count_words(text):\n    ",
    "def flatten(items):\n    ",
    "class Point:\n    def __init__(self, x, y):\n        ",
    "def is_palindrome(s):\n    ",
    "def mean(numbers):\n    ",
    "def gcd(a, b):\n    ",
    "import json\n\n\ndef read_json(path):\n    ",
    "def parse_args():\n    ",
    "for key, value in d.items():\n    ",
    "def binary_search(items, target):\n    ",
    "class Config:\n    ",
    "def square(x):\n    ",
)


def cut_at_block_end(text: str, start: str = "") -> str:
    """The start plus its completion up to the end of the first top-level block: the first
    non-blank line at column 0 after an indented line ends it, unless it is a clause
    that may go on the block's statement (`except` after a `try:` body, `elif` or `else`
    after an `if`'s, as postprocess.goes_on reads them: its own body then goes on the
    block); trailing blanks dropped.
    The start's own full lines are kept whole, never judged: a header the developer typed
    over several lines (a decorator with an argument list, a signature split one parameter
    per line and closed by `):` at column 0) is not the end of its block.  After them, a
    line that begins inside a bracket or a string goes on with what came before, as it
    does for Python: a signature the completion writes that way, or a docstring's line at
    column 0, does not end the block either.  `text` begins with `start`."""
    lines = text.split("\n")
    head = max(1, start.count("\n"))
    kept, indented, statement = [], False, None
    for i, (line, (_, _, _, in_string, top)) in enumerate(zip(lines, code_lines(text))):
        if in_string or top is not None:
            pass  # goes on inside a string or a bracket: neither a body nor its end
        elif line.strip() and not line[:1].isspace():
            if indented and not (statement := goes_on(statement, line)):
                break
            if not indented:
                statement = goes_on(statement, line) or statement_word(line) or statement
        elif line.strip() and i >= head:
            indented = True
        kept.append(line)
    return "\n".join(kept).rstrip() + "\n"


_LOOP = re.compile(r"(.{2,12}?)\1{5,}", re.S)


def loops(code: str) -> bool:
    """Does the completion repeat itself: a line (not blank, not a lone bracket) three
    times or more, or a short piece six times in a row ("1, 1, 1, ...")?  Such text can
    parse (a run of string literals does) without being a useful completion."""
    lines = [l.strip() for l in code.splitlines() if len(l.strip()) > 1]
    if lines and max(lines.count(l) for l in set(lines)) >= 3:
        return True
    return bool(_LOOP.search(code))


_CLOSERS = ")]}"


def _hanging(code: str, pos: int) -> bool:
    """Is the bracket at code[pos] the last thing on its line (comments aside)?"""
    end = code.find("\n", pos)
    return not code[pos + 1:end if end >= 0 else len(code)].split("#")[0].strip()


def misaligned_spans(code: str) -> list[tuple[int, int]]:
    """Lines inside open brackets laid out as no formatter or style guide lays them out,
    each as the span from the line break before it through its first character: a line
    that goes on inside a bracket indented no deeper than the line that opened it
    (`def f(self,` / `x):`), or a closing bracket back at that line's indentation when the
    bracket did not end its line (`def __init__(self,` / `):`, where black writes
    `def f(` / `    self,` / `):`).  Such code parses, but a developer would not keep
    it; a small model trained on its own completions that merely parse learnt the second
    one (docs/MODEL.md).  Strings and comments are skipped; a line that begins inside a
    string is never judged."""
    spans = []
    for brk, j, indent, in_string, top in code_lines(code):
        if top is None or in_string or j >= len(code) or code[j] in "\n#":
            continue
        pos, base = top
        if not (indent > base or (code[j] in _CLOSERS and indent == base
                                  and _hanging(code, pos))):
            spans.append((max(brk, 0), j + 1))
    return spans


def misaligned_after(start: str, completion: str) -> bool:
    """Does the completion (not the start the developer typed) have a line
    misaligned_spans finds in start + completion?"""
    return any(b > len(start) for _, b in misaligned_spans(start + completion))


# statements that do nothing: a body of only these parses and never loops, and helps nobody
TRIVIAL = frozenset({"return", "return None", "pass", "..."})


def _statement_lines(completion: str) -> list[str]:
    """The completion's lines, stripped, blank lines and comment lines left out."""
    lines = [l.strip() for l in completion.splitlines()]
    return [l for l in lines if l and not l.startswith("#")]


def trivial(completion: str) -> bool:
    """Is every statement line of the completion (comments and blank lines aside) one of
    TRIVIAL (`def fibonacci(n):` -> `return`)?  Counted apart, since a model pushed off
    its loops can learn to close every block that way and still "parse"."""
    code = _statement_lines(completion)
    return bool(code) and all(l in TRIVIAL for l in code)


_BARE_RETURN = re.compile(r"return\s+(?:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*|-?\.?\d[\w.]*"
                          r"|[rRbBuUfF]{0,2}(?:'[^'\n]*'|\"[^\"\n]*\"))")


def one_line_return(completion: str) -> bool:
    """Is the completion's only statement (comments and blank lines aside) a `return` of
    a bare name, attribute or literal (`return False`, `return n`, `return self._value`)?
    Such a body parses and does something, and is sometimes right (a property), but it
    is also what a small model falls back on for any start; tally counts the useful ones
    apart, so that a model which parses more by answering that way shows it."""
    code = _statement_lines(completion)
    return len(code) == 1 and bool(_BARE_RETURN.fullmatch(code[0]))


def judged(start: str, text: str) -> dict:
    """A completion cut at its block's end (`completion`) and the eval's three tests on
    it: does the start plus it parse, does it loop, does it do nothing."""
    code = cut_at_block_end(start + text, start)
    comp = code[len(start):]
    return {"completion": comp, "parses": parses(code), "loops": loops(comp),
            "trivial": trivial(comp), "misaligned": misaligned_after(start, comp)}


def useful(judgement: dict) -> bool:
    """Does a judged completion parse, not loop, do something, and lay out its brackets
    as a formatter would?  (Judgements written before the last test existed are judged
    on it from their start and completion.)"""
    return (judgement["parses"] and not judgement["loops"] and not judgement["trivial"]
            and not _misaligned(judgement))


def _misaligned(j: dict) -> bool:
    return j["misaligned"] if "misaligned" in j else misaligned_after(j["start"], j["completion"])


FAILURES = ("loop_noparse", "loop_parses", "syntax", "trivial", "misaligned")


def failure(judgement: dict) -> str | None:
    """Why a judged completion is not useful (one of FAILURES), None when it is: it loops
    and does not parse, loops and parses, does not parse otherwise, does nothing, or
    lays out a bracket as no formatter would."""
    if useful(judgement):
        return None
    if judgement["loops"]:
        return "loop_parses" if judgement["parses"] else "loop_noparse"
    if not judgement["parses"]:
        return "syntax"
    return "trivial" if judgement["trivial"] else "misaligned"


def token_cap(model, max_tokens: int) -> int:
    """The tokens a bare start's completion may take: as asked, within half the context."""
    return min(max_tokens, model.engine.cfg.max_seq_len // 2)


def server_prompt(model, start: str, max_tokens: int) -> tuple[list[int], str, int]:
    """(prompt ids, healed lead, max_tokens within half the context) for a bare start, as
    the server's completion prompts it: SPM, empty suffix, the server's prompt budget."""
    from ..features.completion import healed_prompt, prompt_budget
    from ..settings import Settings

    max_tokens = token_cap(model, max_tokens)
    ids, lead = healed_prompt(start, "", model.tokenizer,
                              prompt_budget(Settings(max_tokens=max_tokens),
                                            model.engine.cfg.max_seq_len))
    return ids, lead, max_tokens


def completions(model, starts=STARTS, max_tokens: int = 96, guard: bool = False,
                editor: bool = False, alternatives: int | None = None,
                raw: bool = False) -> list[dict]:
    """Greedy completion of each start (SPM prompt, empty suffix), cut at its block's end;
    the prompt budget is the server's for the model's context length.  `guard`: decoded
    under the syntax guard, as the server decodes Python (otherwise the model's own).
    `editor`: what the server inserts in the editor instead, from the server's own
    Completer (decoded under the guard, stopped where it starts to loop, finished as the
    server finishes a completion, and generated again from another first token when it
    would break the code, up to `alternatives` times: the server's default when None);
    `empty` then says the editor got nothing.  `raw`: each row also keeps the text as
    decoded (`text`, before the judge's cut), so that a later judge can count it again."""
    from ..features.completion import Completer, generate_text
    from ..features.session import Session, Sessions
    from ..model.generation import GenerationConfig, GenerationStats
    from ..model.sampling import SamplingParams
    from ..settings import Settings

    guard = guard or editor
    settings = Settings(max_tokens=token_cap(model, max_tokens), temperature=0.0,
                        alternatives=_alternatives(alternatives))
    completer = Completer(model, Sessions(model.new_cache, 1 << 40)) if editor else None
    out = []
    for start in starts:
        t0 = time.perf_counter()
        if editor:
            text = completer.complete("file:///start.py", start, len(start), settings).text
            completer.forget("file:///start.py")
        else:
            ids, lead, n = server_prompt(model, start, max_tokens)
            config = GenerationConfig(max_tokens=n, sampling=SamplingParams(temperature=0.0))
            text = generate_text(model, Session(model.new_cache(len(ids) + n)), ids, config,
                                 stats=GenerationStats(), lead=lead,
                                 guard_context=start if guard else None,
                                 guard_after="" if guard else None)
        ms = (time.perf_counter() - t0) * 1000
        row = {"start": start, **judged(start, text), "ms": round(ms, 1)}
        if editor:
            row["empty"] = not text.strip()
        if raw:
            row["text"] = text
        out.append(row)
    return out


def need_tokenizer(weights: Path) -> None:
    """Completing needs the tokenizer the weights were exported with, beside them (the
    engine alone loads without it): a clear error before any model is loaded."""
    from ..model import tokenizer_beside

    if not tokenizer_beside(weights).exists():
        raise ValueError(f"{weights}: no tokenizer.json beside it; completions need the "
                         "tokenizer the model was exported with (train export writes it "
                         "beside the weights: use that folder, or copy it there)")


def _complete_part(job) -> list[dict]:
    weights, starts, options = job
    from .. import kernels
    from ..model import CromwellVLJEPA

    kernels.set_threads(1)
    return completions(CromwellVLJEPA.load(weights), starts, **options)


def completions_in_workers(weights: Path, starts: list[str], workers: int | None = None,
                           model=None, **options) -> list[dict]:
    """completions(model of `weights`, starts, **options) shared out over `workers`
    processes (default: one per core), each with its own model on one kernel thread: a
    decode step of a model this small keeps one core busy, two decodes keep two.  The
    same rows in the same order (each start is decoded alone, greedy); `ms` is the time a
    start took in its process.  One worker: in this process, on `model` when given
    (already loaded from `weights`), with the kernel threads as they are."""
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing

    from .corpus import worker_count

    if model is None:
        need_tokenizer(weights)
    n = max(1, min(worker_count(workers), len(starts)))
    if n == 1:
        from ..model import CromwellVLJEPA

        return completions(model or CromwellVLJEPA.load(weights), starts, **options)
    # spawned, not forked: the parent may already run the kernels' threads
    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = list(pool.map(_complete_part,
                              [(str(weights), starts[i::n], options) for i in range(n)]))
    rows: list[dict] = [{}] * len(starts)
    for i, part in enumerate(parts):
        rows[i::n] = part
    return rows


def _alternatives(asked: int | None) -> int:
    """The server's default number of alternatives (settings.py) when none is asked."""
    from ..settings import Settings

    return Settings().alternatives if asked is None else asked


def _val_cuts(rec: dict) -> list[tuple[str, str]]:
    """(bare start, its block) for each block of a file (function, class, loop, with, if,
    try), its docstring dropped, the start cut after its header and the first body line's
    indentation."""
    from . import tasks

    return [(b[:end], b) for b in map(tasks._drop_docstring, tasks.block_snippets(rec["text"]))
            if (end := tasks.header_end(b)) is not None]


def _val_starts(rec: dict) -> list[str]:
    """Every bare start of a file (_val_cuts)."""
    return [start for start, _ in _val_cuts(rec)]


def heldout_starts(corpus: Path, n: int, seed: int = 13) -> list[str]:
    """Up to n bare starts from held-out files, one per file in a seeded order: a block
    (function, class, loop, with, if, try) of the file, its docstring dropped, cut after
    its header and the first body line's indentation, as a developer who just opened the
    block has typed it.  Many more, and more varied, than STARTS and MORE_STARTS."""
    from .corpus import read_jsonl

    rng = random.Random(seed)
    recs = sorted(read_jsonl(corpus / "val.jsonl"), key=lambda r: r["path"])
    rng.shuffle(recs)
    starts = []
    for rec in recs:
        cuts = _val_starts(rec)
        if cuts:
            starts.append(rng.choice(cuts))
        if len(starts) == n:
            break
    return starts


def wide_starts(corpus: Path, n: int, seed: int = 17) -> list[str]:
    """Up to n distinct bare starts from held-out files, drawn from all of their blocks
    (not one per file as heldout_starts) in a seeded order. 100 starts measure a share of
    about 60% to +-5 points (one standard error), so two models a few points apart there
    may be alike; 3,000 measure it to about +-1."""
    from .corpus import read_jsonl

    seen: set[str] = set()
    starts = []
    for rec in sorted(read_jsonl(corpus / "val.jsonl"), key=lambda r: r["path"]):
        for s in _val_starts(rec):
            if s not in seen:
                seen.add(s)
                starts.append(s)
    random.Random(seed).shuffle(starts)
    return starts[:n]


def real_rests(corpus: Path) -> dict[str, str]:
    """Each held-out bare start (_val_cuts) -> the rest of its file's block after it, cut
    at the block's end (the first block when two share a start)."""
    from .corpus import read_jsonl

    rests: dict[str, str] = {}
    for rec in sorted(read_jsonl(corpus / "val.jsonl"), key=lambda r: r["path"]):
        for start, block in _val_cuts(rec):
            if start not in rests:
                rests[start] = cut_at_block_end(block, start)[len(start):]
    return rests


def closeness(comps: list[dict], rests: dict[str, str], limit: int = 1500) -> dict:
    """How like the files' real blocks the completions are, beside whether they work: the
    mean difflib ratio of each completion to its real rest (both up to `limit`
    characters), how many first lines equal the real one (stripped, not blank), and the
    completions' mean length in characters.  A model can parse more by writing less;
    this says whether it also went away from the code.  `distinct_first_lines`: how many
    different first lines the completions have (a model that falls back on one stock
    answer for many starts has few)."""
    import difflib

    ratios, first, lines = [], 0, set()
    for c in comps:
        real, comp = rests[c["start"]][:limit], (c["completion"] or "")[:limit]
        ratios.append(difflib.SequenceMatcher(None, comp, real, autojunk=False).ratio())
        line = comp.split("\n")[0].strip()
        first += bool(line) and line == real.split("\n")[0].strip()
        lines.add(line)
    n = max(len(comps), 1)
    return {"mean_ratio": round(sum(ratios) / n, 4), "first_line_exact": first,
            "distinct_first_lines": len(lines - {""}),
            "mean_chars": round(sum(len(c["completion"] or "") for c in comps) / n, 1)}


def midline(start: str) -> str | None:
    """A bare start (wide_starts) cut inside its header's line, as a developer mid-way
    through typing it: after the line's first `(` when it has one, else right after its
    colon; None when the header spans lines."""
    head = start[:start.rfind("\n")]
    at = head.rfind("\n") + 1
    header = head[at:]
    if not header.rstrip().endswith(":") or (header.count("(") != header.count(")")):
        return None
    if "(" in header:
        return start[:at + header.index("(") + 1]
    return start[:at + header.rstrip().rindex(":") + 1]


def midline_starts(corpus: Path, n: int) -> list[str]:
    """Up to n held-out starts cut mid-line (midline), in wide_starts' order."""
    cut = (midline(s) for s in wide_starts(corpus, 1 << 30))
    return [s for s in cut if s is not None][:n]


def tally(comps: list[dict]) -> dict:
    """Counts of judged completions: how many, useful, how many of the useful ones are a
    one-line return (one_line_return), and each of FAILURES."""
    why = [failure(c) for c in comps]  # None: useful
    return {"starts": len(comps), "parse": sum(c["parses"] for c in comps),
            "parse_no_loop": sum(c["parses"] and not c["loops"] for c in comps),
            "useful": why.count(None),
            "useful_one_line_return": sum(w is None and one_line_return(c["completion"])
                                          for w, c in zip(why, comps)),
            "failures": {f: why.count(f) for f in FAILURES}}


START_KINDS = ("def", "async", "class", "for", "while", "with", "if", "try")


def line_kind(line: str) -> str:
    """The block statement a line begins (one of START_KINDS), or `other`."""
    word = re.match(r"[A-Za-z_]*", line.lstrip()).group()
    return word if word in START_KINDS else "other"


def parse_kinds(text: str | None, option: str = "--kinds") -> frozenset[str] | None:
    """`class,try` as a set of statement words (those start_kind counts by), None for
    None; a clear error naming `option` for any other word."""
    if text is None:
        return None
    kinds = frozenset(k.strip() for k in text.split(",") if k.strip())
    if not kinds or kinds - set(START_KINDS):
        raise ValueError(f"{option} takes block statements from {', '.join(sorted(START_KINDS))}; "
                         f"got {text!r}")
    return kinds


def start_kind(start: str) -> str:
    """The statement a start opens: the kind of its last line that is not blank
    (`class Stack:` -> class, a decorated def -> def)."""
    return line_kind(next((l for l in reversed(start.split("\n")) if l.strip()), ""))


def by_kind(comps: list[dict], other: list[dict] | None = None) -> dict:
    """Starts and useful completions for each kind of start (start_kind), with the paired
    counts against `other` (the same starts) when given: which kinds a model gains on."""
    zero = {"starts": 0, "useful": 0}
    if other is not None:
        zero |= {"useful_only_this": 0, "useful_only_other": 0}
    out: dict[str, dict] = {}
    for i, c in enumerate(comps):
        row = out.setdefault(start_kind(c["start"]), dict(zero))
        row["starts"] += 1
        row["useful"] += (mine := useful(c))
        if other is not None:
            theirs = useful(other[i])
            row["useful_only_this"] += mine and not theirs
            row["useful_only_other"] += theirs and not mine
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["starts"]))


def paired(comps: list[dict], other: list[dict]) -> dict:
    """Start by start, how many completions are useful only in `comps` and only in
    `other` (the same starts, in the same order), and McNemar's z of the difference."""
    if [c["start"] for c in comps] != [c["start"] for c in other]:
        raise ValueError("paired counts need the same starts in the same order "
                         "(both from `cromwell train starts` with the same --starts)")
    a = sum(useful(x) and not useful(y) for x, y in zip(comps, other))
    b = sum(useful(y) and not useful(x) for x, y in zip(comps, other))
    return {"useful_only_this": a, "useful_only_other": b,
            "mcnemar_z": round((a - b) / (a + b) ** 0.5, 2) if a + b else 0.0}


def starts_report(weights: Path, corpus: Path, out: Path, n: int = 10_000,
                  against: Path | None = None, guard: bool = False,
                  editor: bool = False, alternatives: int | None = None,
                  workers: int | None = None, mid_line: bool = False) -> dict:
    """Greedy completions of up to n held-out block starts (wide_starts: all of them when n
    is large enough), judged; the completions written to `out` (JSON, each with the text
    as decoded, for judging again) and tallied, in all
    and over the first 3,000 (what `train eval` counts as completions_wide).  `against`:
    another model's `out` file over the same starts, for paired counts.  `guard`: decoded
    under the server's syntax guard; `editor`: judged on what the server inserts in the
    editor (see completions; `alternatives` as there), with how many inserted nothing.
    The starts are shared out over `workers` processes (completions_in_workers).
    `mid_line`: the starts cut inside their header's line (midline_starts), with how many
    completions go on past that line (`with_body`)."""
    import json

    t0 = time.time()
    starts = midline_starts(corpus, n) if mid_line else wide_starts(corpus, n)
    comps = completions_in_workers(weights, starts, workers, guard=guard, editor=editor,
                                   alternatives=alternatives, raw=True)
    out.write_text(json.dumps(comps))
    report = {"weights": str(weights), "guard": guard or editor, "editor": editor,
              **({"alternatives": _alternatives(alternatives)} if editor else {}),
              "all": tally(comps), "first_3000": tally(comps[:3000]),
              "seconds": round(time.time() - t0, 1)}
    if editor:
        report["all"]["empty"] = sum(c["empty"] for c in comps)
    if not mid_line:
        report["all"]["closeness"] = closeness(comps, real_rests(corpus))
    else:
        report["mid_line"] = True
        report["all"]["with_body"] = sum(any(line.strip() for line in c["completion"].split("\n")[1:])
                                         for c in comps)
    other = json.loads(against.read_text()) if against is not None else None
    if other is not None:
        report["paired"] = {"against": str(against), **paired(comps, other)}
    report["by_kind"] = by_kind(comps, other)
    return report


def line_cases(corpus: Path, n: int, seed: int = 5) -> list[tuple[str, str, str]]:
    """(prefix, suffix, rest of line) for up to n held-out files, one each: a line of 8 or
    more characters of code (past the file's first 5), the cursor 3 characters into its
    code, the real file before and after it, in a seeded order."""
    from .corpus import read_jsonl

    rng = random.Random(seed)
    recs = list(read_jsonl(corpus / "val.jsonl"))
    rng.shuffle(recs)
    cases = []
    for rec in recs:
        lines = rec["text"].split("\n")
        idx = [i for i in range(5, len(lines)) if len(lines[i].strip()) >= 8]
        if not idx:
            continue
        i = rng.choice(idx)
        line = lines[i]
        k = len(line) - len(line.lstrip()) + 3
        cases.append(("\n".join(lines[:i]) + "\n" + line[:k], "\n" + "\n".join(lines[i + 1:]),
                      line[k:]))
        if len(cases) == n:
            break
    return cases


def in_file_lines(model, cases, max_tokens: int = 32) -> dict:
    """Rest-of-line completions inside real files, as the editor asks for them (the
    server's windowed, token-healed SPM prompt, line mode, its post-processing): how many
    equal the file's own rest of line, and the mean share of it matched from its start."""
    from ..features.completion import generate_text, healed_prompt, prompt_budget
    from ..features.postprocess import finish
    from ..features.session import Session
    from ..model.generation import GenerationConfig
    from ..model.sampling import SamplingParams
    from ..settings import Settings

    budget = prompt_budget(Settings(max_tokens=max_tokens), model.engine.cfg.max_seq_len)
    exact, matched = 0, 0.0
    for prefix, suffix, truth in cases:
        ids, lead = healed_prompt(prefix, suffix, model.tokenizer, budget)
        config = GenerationConfig(max_tokens=max_tokens, stop=("\n",),
                                  sampling=SamplingParams(temperature=0.0))
        raw = generate_text(model, Session(model.new_cache(len(ids) + max_tokens)), ids, config,
                            lead=lead)
        got = finish(raw, prefix, suffix)
        exact += got.strip() == truth.strip()
        j = 0
        while j < min(len(got), len(truth)) and got[j] == truth[j]:
            j += 1
        matched += j / max(1, len(truth))
    n = len(cases)
    return {"cases": n, "exact": exact, "prefix_match": round(matched / n, 4) if n else None}


def heldout_snippets(corpus: Path, n: int, seed: int = 7) -> list[str]:
    """n distinct functions (of 3 lines or more) of the validation files that fit a
    screenshot as the training ones do, in a seeded order."""
    from . import tasks
    from .corpus import read_jsonl
    from .data import SCREENSHOT_LINES, fits_screenshot

    pool = []
    for rec in read_jsonl(corpus / "val.jsonl"):
        for snip in tasks.function_snippets(rec["text"], max_lines=SCREENSHOT_LINES):
            if len(snip.splitlines()) >= 3 and fits_screenshot(snip):
                pool.append(snip)
    pool = sorted(set(pool))
    random.Random(seed).shuffle(pool)
    if len(pool) < n:
        raise ValueError(f"only {len(pool)} held-out snippets fit a screenshot; need {n}")
    return pool[:n]


def _ranks(queries: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """The rank of each query's own key (row i's is key i) by cosine among all keys."""
    sims = queries @ keys.T
    return (sims > sims[np.arange(len(keys)), np.arange(len(keys))][:, None]).sum(1)


def retrieval(model, snippets: list[str], seed: int = 11) -> dict:
    """Screenshot -> code among the snippets, each image rendered in a random style as the
    training renders: top-1 / top-5 by the screenshot's own joint-space vector (the
    pooled vision tokens), by the joint-space vector of the code its reading head reads
    (features.screenshot.screenshot_vector, what the screenshot hover ranks by), and by both
    (the sum of the two cosines); and how much of the code the reading
    gets right (difflib's ratio, 1.0 = all of it)."""
    import difflib

    from ..features.screenshot import screenshot_vector
    from .data import SCREENSHOT_FONT_SIZES
    from .screenshots import render

    rng = random.Random(seed)
    texts = np.stack([model.embed_text(s) for s in snippets])
    states = [model.encode_image(model.read_screenshot(
        render(s, rng, font_size=rng.choice(SCREENSHOT_FONT_SIZES)))) for s in snippets]
    images = np.stack([model.embed_image(v) for v in states])
    direct = _ranks(images, texts)
    reads = [model.read_text(v) for v in states]
    read_vectors = np.stack([screenshot_vector(model, v, r) for v, r in zip(states, reads)])
    by_reading = _ranks(read_vectors, texts)
    both = _ranks(images + read_vectors, texts)  # the sum of the two cosines
    similarity = [difflib.SequenceMatcher(None, r, s.rstrip("\n")).ratio()
                  for r, s in zip(reads, snippets)]
    return {"candidates": len(snippets), "top1": float(np.mean(direct == 0)),
            "top5": float(np.mean(direct < 5)), "chance_top1": 1.0 / len(snippets),
            "by_reading_top1": float(np.mean(by_reading == 0)),
            "by_reading_top5": float(np.mean(by_reading < 5)),
            "both_top1": float(np.mean(both == 0)), "both_top5": float(np.mean(both < 5)),
            "read_similarity": round(float(np.mean(similarity)), 4),
            "read_examples": [{"code": s, "read": r} for s, r in zip(snippets[:3], reads[:3])]}


def unigram_task_losses(trainer, logp: np.ndarray) -> dict:
    """Nats per target token of the unigram model on each validation task's rows."""
    out = {}
    for task, rows in trainer.val["rows"].items():
        nats = n = 0.0
        for ids, mask in rows:
            ids, mask = np.asarray(ids), np.asarray(mask, dtype=bool)
            tgt = ids[1:][mask[1:]]
            nats -= logp[tgt].sum()
            n += len(tgt)
        out[f"val_{task}"] = nats / n if n else None
    return out


class EngineAsTwin:
    """The engine (an exported weights file as the server loads it, int8 or fp32) in the
    twin's place for Trainer.evaluate: the same validation rows and bits per byte,
    computed by the C kernels on the shipped weights, so the report states what the
    quantized model loses, not only what the fp32 twin scores."""

    def __init__(self, model):
        self.model = model

    def __call__(self, ids, jepa: bool = False):
        import torch

        from .model import TwinOutput

        rows = [self.model.forward(row, self.model.new_cache(len(row)))
                for row in ids.tolist()]
        return TwinOutput(logits=torch.as_tensor(np.stack(rows)))

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self


def run(out: Path, weights: Path, corpus: Path, tokenizer: Path, eval_rows: int = 64,
        bpb_bytes: int = 200_000, n_snippets: int = 100, n_lines: int = 400, n_starts: int = 100,
        n_wide: int = 3000, workers: int | None = None, log=print,
        cases: int | None = None) -> dict:
    """The whole report for the run in `out` (its checkpoint) and its exported `weights`,
    also written to out/eval.json.  The fixed, more and held-out starts are completed twice:
    by the model alone (greedy, as `completions`) and as the editor gets them (`{key}_editor`:
    the server's Completer, with its guard, finishing and alternatives).  `cases` caps every
    sample's size (validation rows per task, snippets, in-file lines, held-out and wide
    starts): a quick look, not a measure."""
    need_tokenizer(weights)
    import json

    import torch

    from ..model import CromwellVLJEPA
    from .model import random_init
    from .train import Trainer, TrainConfig, unigram_bpb, unigram_logp

    t0 = time.time()
    if cases is not None:
        eval_rows, n_snippets, n_lines, n_starts, n_wide = (
            min(n, cases) for n in (eval_rows, n_snippets, n_lines, n_starts, n_wide))
    # the run's settings (row length, seed); mapped, the Trainer reads the tensors
    saved = torch.load(out / "ckpt.pt", map_location="cpu", weights_only=False,
                       mmap=True)["train_config"]
    c = TrainConfig(**{**saved, "out": str(out), "corpus": str(corpus), "tokenizer": str(tokenizer),
                       "eval_rows": eval_rows, "bpb_bytes": bpb_bytes,
                       "source_weights": "", "block_cap": 0})  # the training stream's mixture: not used here,
    # and the evaluation corpus may lack the sources the run weighted
    trainer = Trainer(c, log=lambda m: None)
    report: dict = {"cases": cases, "step": trainer.step, "tokens_seen": trainer.tokens_seen,
                    "train_hours": round(trainer.elapsed / 3600, 2),
                    "params": trainer.cfg.n_params()}
    log("validation: trained model")
    report["trained"] = trainer.evaluate()
    log("validation: untrained model")
    trained = trainer.model
    trainer.model = random_init(trainer.cfg, c.seed)
    report["untrained"] = trainer.evaluate()
    trainer.model = trained
    log("validation: unigram model")
    logp = unigram_logp(corpus, trainer.tok)
    uni = unigram_task_losses(trainer, logp)
    uni["val_bpb_stdlib"] = unigram_bpb(corpus, trainer.tok, trainer.val["stdlib"], logp)
    report["unigram"] = uni
    report["val_rows_per_task"] = {k: len(v) for k, v in trainer.val["rows"].items()}
    report["bpb_bytes"] = sum(len(t.encode("utf-8")) for t in trainer.val["stdlib"])

    model = CromwellVLJEPA.load(weights)
    log(f"validation: the engine on {weights.name}")
    trainer.model = EngineAsTwin(model)
    report["engine"] = trainer.evaluate()
    trainer.model = trained
    log("completions")
    for key, starts in (("completions", STARTS), ("completions_more", MORE_STARTS),
                        ("completions_heldout", heldout_starts(corpus, n_starts))):
        comps = completions(model, starts)
        report[key] = comps
        t = tally(comps)
        report[f"{key}_parse"] = f"{t['parse']}/{t['starts']}"
        report[f"{key}_parse_no_loop"] = f"{t['parse_no_loop']}/{t['starts']}"
        report[f"{key}_parse_no_loop_nontrivial"] = f"{t['useful']}/{t['starts']}"
        # and what the editor inserts for the same starts (the server's own Completer)
        edited = completions(model, starts, editor=True)
        report[f"{key}_editor"] = edited
        t = tally(edited)
        report[f"{key}_editor_parse"] = f"{t['parse']}/{t['starts']}"
        report[f"{key}_editor_useful"] = f"{t['useful']}/{t['starts']}"
        report[f"{key}_editor_empty"] = f"{sum(c['empty'] for c in edited)}/{t['starts']}"
    wide = wide_starts(corpus, n_wide)
    log(f"completions of {len(wide)} held-out starts, all blocks")
    # counts only: the completions themselves would swell the report
    report["completions_wide"] = tally(completions_in_workers(weights, wide, workers, model))
    log("rest-of-line completions in held-out files")
    report["in_file_lines"] = in_file_lines(model, line_cases(corpus, n_lines))
    log("screenshot retrieval")
    report["retrieval"] = retrieval(model, heldout_snippets(corpus, n_snippets))
    report["weights"] = str(weights)
    report["eval_s"] = round(time.time() - t0, 1)
    (out / "eval.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    return report
