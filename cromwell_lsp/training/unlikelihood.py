"""Sequence-level unlikelihood against the model's own loops (the `--ul-every` steps).

A small model completing a bare start greedily falls into loops: `self.x = x` line after
line, `b, b, b, ...`, `data.data.data`.  Lower next-token loss on real code did not
remove them (docs/MODEL.md), because the LM loss never sees the model's own output.
These steps do: the twin completes bare starts drawn from the training files as the
server prompts them (SPM prompt, empty suffix, token healing; greedy), the tokens where
the completion fails are marked (a line it already wrote, a short piece it has written
three times in a row, a block closed with no statement or with only `return`, a line
inside brackets indented as no formatter would, a header's colon ending its line inside
an open bracket), and a margin loss on each marked token
lowers it below the best other token at that point, leaving every unmarked token alone
(sequence-level unlikelihood training, Welleck et al. 2019, with a bounded loss in place
of -log(1 - p); see unlikelihood_loss).  The LM loss of the same step keeps the rest of
the distribution where the real code puts it.
"""
from __future__ import annotations

import codeop
import random
import re
import warnings

import torch
import torch.nn.functional as F

from ..model import prompts
from ..model.healing import LeadConstraint, heal_prompt
from ..features.postprocess import code_chars
from ..features.syntaxguard import HEADERS
from .evaluate import TRIVIAL, code_lines, misaligned_spans
from .owncompletions import draw_cuts

# lines that real code does write twice in a few lines: not a loop
SHORT_REPEATS = frozenset({"pass", "else:", "try:", "break", "continue", "return", "finally:",
                           "return None", "return True", "return False", "raise", "yield",
                           '"""', "'''", ")", "]", "}", "),", "],", "},"})
_RUN = re.compile(r"(.{1,32}?)\1{2,}", re.S)  # a piece written three times or more in a row


def repeat_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of `text` (a completion) that repeat what it wrote before it:
    (a) a line equal, stripped, to an earlier line of the completion (not blank, not one
    of SHORT_REPEATS, not an `except` clause or decorator); (b) in a run of one piece of up
    to 32 characters written three times or more in a row, everything after its first two
    copies ("b, b, " of "b, b, b, b, "), unless the piece is only spaces (indentation) or
    one character repeated fewer than 8 times in all (`===`, `0000`).
    Sorted, overlapping spans merged.  Far more eager than the server's cut_repetition
    (features/postprocess.py), which must not cut real code the editor shows: here a
    repeat only costs a small push on a token the model was not asked to write."""
    spans, seen, pos = [], set(), 0
    for line in text.split("\n"):
        s = line.strip()
        if s:
            if s in seen and s not in SHORT_REPEATS and not s.startswith(("except", "@")):
                a = pos + len(line) - len(line.lstrip())
                spans.append((a, a + len(s)))
            seen.add(s)
        pos += len(line) + 1
    for m in _RUN.finditer(text):
        unit = m.group(1)
        if not unit.strip() or len(set(unit)) == 1 and len(m.group(0)) < 8:
            continue
        spans.append((m.start() + 2 * len(unit), m.end()))
    merged: list[tuple[int, int]] = []
    for a, b in sorted(spans):  # overlapping marks (a repeated line inside a run) as one
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def _body(start: str, completion: str):
    """The body the start opens, as the completion wrote it: (its statement lines as
    (text, start, end) offsets in `completion`, the offset in `completion` of the first
    line back at column 0, which ends the block, or None when it has not ended; lines
    inside a bracket or a string go on with their statement, as evaluate.cut_at_block_end
    has them).  None when the start's last line is not a body's bare indentation (a point
    in a header)."""
    line_start = start.rfind("\n") + 1
    if line_start == 0 or start[line_start:].strip() or not start[line_start:]:
        return None
    text, statements = start + completion, []
    for brk, j, _, in_string, top in code_lines(text):
        if brk + 1 < line_start or in_string or top is not None:
            continue  # the header, or a line going on inside a string or a bracket
        end = text.find("\n", j)
        s = text[j:end if end >= 0 else len(text)].strip()
        if s and j == brk + 1:
            return statements, j - len(start)
        if s and not s.startswith("#"):
            statements.append((s, max(j - len(start), 0), j - len(start) + len(s)))
    return statements, None


def empty_body_end(start: str, completion: str, stopped: bool) -> tuple[int, int] | None:
    """When the block the start opens ends with no statement in its body (only comments,
    blank lines, or nothing), the span of `completion` (the text after `start`) that ends
    it: from the newline before the first line back at column 0 through that line's first
    character, or (len, len + 1) for the stop token when the completion stopped there
    (`stopped`; a completion cut by the token limit has not ended its block).  None when
    the body has a statement, or when the start is not at a body's first line (a point
    inside a header's first line).  `def f():` closed at once does not parse, and is what
    a small model does most often after a bare start once its loops are pushed down."""
    body = _body(start, completion)
    if body is None or body[0]:
        return None
    end = body[1]
    if end is not None:
        return max(end - 1, 0), end + 1
    return (len(completion), len(completion) + 1) if stopped else None


# the evaluation's do-nothing statements less `...`, which real typing stubs and protocols have
DO_NOTHING = TRIVIAL - {"..."}


def trivial_body(start: str, completion: str, stopped: bool) -> tuple[int, int] | None:
    """When the start opens a block other than an `if` (a definition, loop, with, try)
    and the completion closes it with a body of one DO_NOTHING statement (`return`, `pass`),
    the span of that statement in `completion`; else None (also for a start inside a
    header's first line, or a body the token limit cut).  Pushed down once the loops were:
    a bare `return` parses and never loops, and became the model's answer to a third of
    the held-out starts (`def fibonacci(n):` -> `return`).  An `if` is left alone: real
    code often returns early from one."""
    header = next((l for l in start.split("\n") if l[:1].strip() and l[0] not in "@#"), "")
    if header.split("(")[0].split()[:1] in (["if"], ["elif"], ["else:"]):
        return None
    body = _body(start, completion)
    if body is None or (body[1] is None and not stopped) or len(body[0]) != 1:
        return None
    statement, a, b = body[0][0]
    return (a, b) if statement in DO_NOTHING else None


def misaligned_in(start: str, completion: str, offset: int = 0) -> list[tuple[int, int]]:
    """The spans of evaluate.misaligned_spans that fall in the completion (a line break
    and the misaligned line's first character: `def __init__(self,` then `):` at the
    def's column, which parses and which the own-completion rounds had taught), as
    offsets in the completion plus `offset`."""
    n = len(start)
    return [(max(a - n, 0) + offset, b - n + offset)
            for a, b in misaligned_spans(start + completion) if b > n]


# a compound statement's header whose line a colon ends after an expression: the syntax
# guard's HEADERS (rule 2), and `def` and `class` too (a default's or a base's bracket)
_HEADER = re.compile(r"[ \t]*(?:async[ \t]+)?(?:%s)\b" % "|".join(sorted(HEADERS | {"def", "class"})))


def open_header_colons(start: str, completion: str, offset: int = 0) -> list[tuple[int, int]]:
    """Spans in the completion of a compound header's colon that ends its line inside an
    open round bracket (`for i in range(len(x):`, `if not isinstance(x, (a, b):`), the
    colon alone, as offsets in the completion plus `offset`.  Only the colon: the line
    break after it is one token with the next line's indentation, which ends every
    correct header too, and marking it taught a model to write bodies unindented.  Python
    reads the next line as going on inside the bracket, so the block never parses; the
    bracket should have closed where the colon is.  A quarter of the syntax errors of step
    34,250's greedy completions of held-out starts were this, and none of its completions
    that parse had one.  Strings and comments are skipped; a colon inside a square or
    curly bracket (a slice, a dict) is not judged."""
    text, n = start + completion, len(start)
    spans, stack, state = [], [], {}
    statement, last = 0, None  # where the current statement began; its line's last code
    for i, c in code_chars(text, state):
        if c == "\n":
            inside = state.get("quote") is not None
            if (stack and stack[-1] == "(" and not inside and last is not None and last >= n
                    and text[last] == ":" and text[last + 1:i].strip()[:1] in ("", "#")
                    and _HEADER.match(text, statement)):
                spans.append((last - n + offset, last + 1 - n + offset))
            if not stack and not inside:
                statement = i + 1
            last = None
        elif not c.isspace():
            last = i
            if c in "([{":
                stack.append(c)
            elif c in ")]}" and stack:
                stack.pop()
    return spans


def unfinished_ends(start: str, completion: str, stopped: bool) -> list[tuple[int, int]]:
    """Spans of `completion` (the text after `start`) where the code ended unfinished, as
    Python itself judges it (codeop, the interactive interpreter's test for "more input
    needed"): the stop token, (len, len + 1), when the completion `stopped` at a point no
    code can end (a bracket or a triple-quoted string left open, a `try:` body with no
    handler yet, a header with no body); and the first character of a statement that
    comes back to a `try`'s column with no `except` or `finally` before it.  A bare
    `try:` was the one fixed start every shipped model failed alone: each wrote a body and
    stopped (`if not is_torch_available(): return False`), and none of 1,000 `try` starts
    of the training files came out whole greedily.  None of the other marks sees this:
    the body is neither empty, nor a loop, nor only `return`."""
    text = start + completion
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escapes and the like: not ours to judge
        try:
            code = codeop.compile_command(text, "<completion>", "exec")
        except SyntaxError as e:
            if not (e.msg or "").startswith("expected 'except' or 'finally' block") \
                    or "\r" in text:  # Python counts a lone \r as a line: no line to point at
                return []
            lines = text.split("\n")
            if not e.lineno or e.lineno > len(lines):
                return []
            line = lines[e.lineno - 1]
            at = sum(len(l) + 1 for l in lines[:e.lineno - 1]) + len(line) - len(line.lstrip())
            return [(at - len(start), at - len(start) + 1)] if at >= len(start) else []
        except (ValueError, OverflowError, RecursionError, MemoryError):
            return []  # a null byte, a literal too large, nesting too deep: not this mark
    return [(len(completion), len(completion) + 1)] if code is None and stopped else []


def marked_tokens(pieces: list[str], spans: list[tuple[int, int]]) -> list[bool]:
    """For each token (its text, in order), does it overlap a span of repeat_spans?"""
    out, pos = [], 0
    for piece in pieces:
        a, b = pos, pos + len(piece)
        out.append(any(x < b and a < y for x, y in spans) if b > a else False)
        pos = b
    return out


def draw_starts(texts: list[tuple[str, str]], rng: random.Random, n: int,
                tries: int = 200, kinds: frozenset[str] | None = None) -> list[str]:
    """n bare starts (a block's header and its first body line's indentation, or a point
    in its first line), cut from blocks of random training files as block_example does
    (of the `kinds` of block only, when given)."""
    return [start for _, start, _ in draw_cuts(texts, rng, n, tries, kinds)]


def draw_kind_starts(texts: list[tuple[str, str]], rng: random.Random, n: int,
                     kinds: frozenset[str] | None, share: float = 1.0) -> list[str]:
    """n bare starts, round(n * share) of them from blocks of the `kinds` and the rest
    from any block: a leg aimed at one kind (`try`) still sees the loops and empty
    bodies of the others, which it would otherwise be free to fall into.  share 1 (or
    no kinds) draws as draw_starts does, the same starts for the same rng."""
    if kinds is None or share >= 1.0:
        return draw_starts(texts, rng, n, kinds=kinds)
    k = round(n * share)
    return draw_starts(texts, rng, k, kinds=kinds) + draw_starts(texts, rng, n - k)


@torch.no_grad()
def greedy(model, prompt_ids: list[list[int]], n_tokens: int, stop: int, constraints=None):
    """Greedy continuations of prompts, left-padded with `stop` (no cache: the twin
    recomputes, which at these lengths is a few forwards a second), on the model's device.
    `constraints`: per prompt, a healing.LeadConstraint (or None) that restricts its first
    tokens as the server's generation does.  Returns (ids [B, P + new] with `stop` after a
    row's stop token, the padded prompt length P, keep [B, P + new]: False on the left
    padding).  The padding is masked out of attention (CromwellTwin's keep), so each row
    is completed as the server completes its prompt alone: seen by the twin, two dozen
    end-of-text tokens before a short prompt (`try:`) turned H3's completion into
    garbage, and the marks then fell on text the server never writes."""
    device = next(model.parameters()).device
    B, P = len(prompt_ids), max(len(p) for p in prompt_ids)
    ids = torch.full((B, P), stop, dtype=torch.long, device=device)
    keep = torch.zeros((B, P), dtype=torch.bool, device=device)
    for i, p in enumerate(prompt_ids):
        ids[i, P - len(p):] = torch.as_tensor(p, device=device)
        keep[i, P - len(p):] = True
    done = torch.zeros(B, dtype=torch.bool, device=device)
    constraints = constraints or [None] * B
    was = model.training
    model.eval()
    for _ in range(n_tokens):
        logits = model(ids, jepa=False, keep=keep).logits[:, -1].float()
        for i, c in enumerate(constraints):
            if c is not None and c.active:
                allowed = torch.full_like(logits[i], float("-inf"))
                allowed[torch.as_tensor(c.allowed(), device=device)] = 0.0
                logits[i] += allowed
        nxt = logits.argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, stop), nxt)
        for i, c in enumerate(constraints):
            if c is not None and c.active:
                c.advance(int(nxt[i]))
        ids = torch.cat([ids, nxt[:, None]], 1)
        keep = torch.cat([keep, torch.ones_like(keep[:, :1])], 1)
        done |= nxt == stop
        if bool(done.all()):
            break
    model.train(was)
    return ids, P, keep


RULES = ("repeat", "empty_body", "trivial", "misaligned", "header_colon", "unfinished")
# the marks of a run that names none: those before `unfinished`, so that the commands in
# docs/MODEL.md train as they did
DEFAULT_RULES = frozenset(RULES) - {"unfinished"}


def parse_rules(spec: str) -> frozenset:
    """`--ul-rules` ("repeat,trivial") -> the set of marks to use; DEFAULT_RULES when
    empty."""
    names = {r.strip() for r in spec.split(",") if r.strip()} or set(DEFAULT_RULES)
    unknown = sorted(names - set(RULES))
    if unknown:
        raise ValueError(f"unknown unlikelihood rule(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(RULES)}")
    return frozenset(names)


def unlikelihood_batch(model, tok, texts, rng: random.Random, n: int, n_tokens: int,
                       rules: frozenset = DEFAULT_RULES, kinds: frozenset[str] | None = None,
                       kinds_share: float = 1.0):
    """Complete n bare starts greedily (of the `kinds` of block only, when given: see
    owncompletions.draw_cuts), prompted as the server prompts them (SPM, empty
    suffix, token healing), and mark the failing tokens of the chosen `rules` (RULES:
    repeat_spans, empty_body_end, trivial_body, misaligned_in, open_header_colons,
    unfinished_ends):
    (ids [B, T], marks [B, T] float, 1 where the token at t fails, so the loss applies to
    the prediction at t - 1, the share of generated tokens marked, keep [B, T]: False on
    the left padding, for the loss's forward as greedy had it), or (None, None, share,
    None) when no completion failed."""
    starts = draw_kind_starts(texts, rng, n, kinds, kinds_share)
    if not starts:
        return None, None, 0.0, None
    stop = tok.special("endoftext")
    healed = [heal_prompt(prompts.encode(prompts.fim_spm(s, ""), tok, None)[0], tok)
              for s in starts]
    ids, P, keep = greedy(model, [h[0] for h in healed], n_tokens, stop,
                    [LeadConstraint(tok, lead) if lead else None for _, lead in healed])
    marks = torch.zeros(ids.shape, dtype=torch.float32)
    generated = 0
    for i, row in enumerate(ids[:, P:].tolist()):
        stopped = stop in row
        if stopped:
            row = row[:row.index(stop)]
        pieces = [tok.decode([t]) for t in row]
        generated += len(row)
        text, lead = "".join(pieces), healed[i][1]
        spans = repeat_spans(text) if "repeat" in rules else []
        if text.startswith(lead):  # the text after the start, as the editor gets it
            for name, rule in (("empty_body", empty_body_end), ("trivial", trivial_body)):
                end = rule(starts[i], text[len(lead):], stopped) if name in rules else None
                if end is not None:
                    spans.append((end[0] + len(lead), end[1] + len(lead)))
            if "misaligned" in rules:
                spans += misaligned_in(starts[i], text[len(lead):], len(lead))
            if "header_colon" in rules:
                spans += open_header_colons(starts[i], text[len(lead):], len(lead))
            if "unfinished" in rules:
                spans += [(a + len(lead), b + len(lead))
                          for a, b in unfinished_ends(starts[i], text[len(lead):], stopped)]
        # the stop token, one place past the text, is marked when a span covers that place
        flags = marked_tokens(pieces + ["\0"] if stopped else pieces, spans)
        for j, f in enumerate(flags):
            if f:
                marks[i, P + j] = 1.0
    share = float(marks.sum()) / max(generated, 1)
    if not marks.any():
        return None, None, share, None
    return ids, marks.to(ids.device), share, keep


def unlikelihood_loss(logits, ids, marks, margin: float = 1.0):
    """Mean over the marked t of max(0, logit(ids[t]) - max other logit + margin), the
    logits [B, T-1, V] being those of inputs ids[:, :-1]: each repeating token is pushed
    until it is `margin` nats below the best other token at its place, so greedy
    decoding no longer picks it there, and then left alone.  The textbook unlikelihood
    -log(1 - p) was tried first: its gradient grows as 1 / (1 - p), and on these loops
    (p near 1) it outweighed the LM loss under the gradient clip; within 170 steps at
    weight 1 the model completed every start with text-like garbage (runs/lm7-collapsed)."""
    lg = logits.float()
    tgt = ids[:, 1:]
    own = lg.gather(-1, tgt[..., None])[..., 0]
    other = lg.scatter(-1, tgt[..., None], float("-inf")).amax(-1)
    m = marks[:, 1:]
    return (F.relu(own - other + margin) * m).sum() / m.sum().clamp_min(1.0)
