"""Code completion at a cursor: the fill-in-the-middle prompt, its window on long files,
generation on the document's cached session, post-processing and type-ahead.

Prompt (prompts.fim_spm, SPM order, stable to volatile): <fim_prefix><fim_suffix> suffix
<fim_middle> prefix.  Typing appends to the prefix, so only the new tokens are prefilled.

Window: the prompt gets at most `budget` tokens (settings.context_window, and room for the
answer within the model's max_seq_len).  The suffix keeps its first lines up to a quarter
of it.  The prefix is cut into chunks of whole lines of about `budget // 4` tokens each,
counted from the start of the document; the fewest leading chunks that make it fit are
dropped.  Chunk boundaries depend only on the text before them, so while the user types
the window stays put (and the cache valid) until a whole chunk has to go.

Token healing (model/healing.py): the prompt's last token is backed off and the first
generated tokens must re-spell it, so a cursor after an auto-indent or an open bracket
does not leave the model after a token it rarely saw end a prefix in training.

A header finished mid-line: in Python, when the rest of the line the completion wrote
(or the line already there, the cursor after its colon) ends a block's header and the
code after the cursor holds no body for it (`for i in range(` -> `len(items)):`), the
body is completed too, as a block on the next line indented one step deeper than the
header (the step the file's last body used; 4 spaces by default), with the tokens
max_tokens left; it is kept when the code around the cursor, header and all, parses with
it, else the line comes alone (so a header the line leaves open, `def check(` ->
`self,`, comes alone).

A `try:` body gets its handler: in Python, when a block completion is the body of a
`try:` that has no handler, neither in the completion (the block cut keeps the clauses
the model wrote) nor after the cursor, an `except` line at the header's indentation is
completed after it (`except` then the model's rest of the line, as a header finished
mid-line, body and all), with the tokens max_tokens left; it is kept when the code
around the cursor parses with body and handler, else the body comes alone.  A small
model often ends a try's body with its end-of-text, and a body alone never parses.

Type-ahead (Copilot's behaviour): when the new prefix is the old prefix plus the start of
the last suggestion (same suffix), the rest of that suggestion is the answer, no compute.

Idle pre-fill (`Completer.prefill`): when the user stops typing, the server fills the
document's cache with the prompt a completion at the last edit would use, in chunks that
a newer request can interrupt, so the next request there prefills a token or two.
With settings.kv_cache off, every request starts from an empty cache (for benchmarks).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..model import prompts
from ..model.generation import GenerationConfig, GenerationStats, generate_ids
from ..model.healing import LeadConstraint, heal_prompt
from ..model.sampling import SamplingParams, TextStream
from ..positions import line_ending, with_line_ending
from .postprocess import (finish_checked, fits, handler_lead, indent_of, line_loop_end, mode,
                          piece_loop_end)
from .session import common_prefix
from .syntaxguard import LexCache, LexState, SyntaxGuard, body_pending, follows, is_python, scan

ANSWER_MARGIN = 8  # tokens kept free past max_tokens within max_seq_len
PREFILL_CHUNK = 64  # tokens per forward call of an idle pre-fill (a cancel point each)
MIN_BODY_TOKENS = 8  # a header finished mid-line gets its body, a try its handler, when
                     # this many tokens are left
BODY_INDENT_CHARS = 40_000  # text before a header read for the file's indentation step


@dataclass(frozen=True)
class Completion:
    text: str            # what the editor inserts at the cursor ("" when nothing useful)
    prefill_tokens: int  # tokens this request prefilled (0: type-ahead, no compute)
    cached: bool         # answered from the last suggestion
    stop_reason: str = ""


@dataclass
class _Suggestion:
    prefix: str
    suffix: str
    text: str


STREAM_PIECE_COPIES = 10  # a short piece this many times running, mid-stream, is a loop


def prompt_budget(settings, max_seq_len: int) -> int:
    return max(16, min(settings.context_window, max_seq_len - settings.max_tokens - ANSWER_MARGIN))


def _fit_suffix(suffix: str, tok, limit: int) -> str:
    """The suffix's first lines, as many as fit in `limit` tokens."""
    if not suffix:
        return ""
    lines = suffix.split("\n")
    counts = [len(ids) for ids in tok.encode_batch([l + "\n" for l in lines])]
    total, keep = 0, 0
    for n in counts:
        if total + n > limit:
            break
        total, keep = total + n, keep + 1
    return "\n".join(lines[:keep])


def _prefix_cuts(prefix: str, tok, limit: int, step: int) -> list[str]:
    """Candidate windows of the prefix, longest first, each fitting `limit` tokens by a
    per-line count: the prefix without its fewest leading chunks (of ~step tokens of
    whole lines, counted from the start of the document), then without more chunks; the
    cursor's line alone (cut by tokens when even it is too long) comes last."""
    lines = prefix.split("\n")
    counts = [len(ids) for ids in tok.encode_batch([l + "\n" for l in lines[:-1]])]
    counts.append(len(tok.encode(lines[-1])) if lines[-1] else 0)
    starts, acc = [0], 0
    for i, n in enumerate(counts[:-1]):
        acc += n
        if acc >= step:
            starts.append(i + 1)
            acc = 0
    total, dropped, cuts = sum(counts), 0, []
    for k, cs in enumerate(starts):
        dropped += sum(counts[starts[k - 1]:cs]) if k else 0
        if total - dropped <= limit:
            cuts.append("\n".join(lines[cs:]))
    last = lines[-1]
    ids = tok.encode(last)
    cuts.append(last if len(ids) <= limit else tok.decode(ids[-limit:]))
    return cuts


def build_prompt(prefix: str, suffix: str, tok, budget: int) -> list[int]:
    """Token ids of the windowed SPM prompt: at most `budget` tokens (unless the cursor's
    line alone is longer)."""
    suffix = _fit_suffix(suffix, tok, budget // 4)
    fixed = len(prompts.encode(prompts.fim_spm("", suffix), tok)[0])
    ids: list[int] = []
    for cut in _prefix_cuts(prefix, tok, max(1, budget - fixed), max(1, budget // 4)):
        ids = prompts.encode(prompts.fim_spm(cut, suffix), tok)[0]
        if len(ids) <= budget:
            break
    return ids


def healed_prompt(prefix: str, suffix: str, tok, budget: int) -> tuple[list[int], str]:
    """build_prompt's ids with token healing applied (heal_prompt): the ids to send and
    the text the generated tokens must spell first (generate_text's `lead`)."""
    return heal_prompt(build_prompt(prefix, suffix, tok, budget), tok)


def generate_text(model, session, prompt_ids, config: GenerationConfig, cancel=None,
                  stats: GenerationStats | None = None, lead: str = "",
                  stop_loops: bool = False, guard_context: str | None = None,
                  guard_after: str | None = None, guard_base=None, avoid_first=()) -> str:
    """Raw generated text after prompt_ids, on a session (its cache reused and restored to
    exactly the prompt afterwards).  Never returns special tokens.  `lead`: the text token
    healing took off the prompt's end (heal_prompt); the tokens must spell it first, and
    it is not part of the result.  `stop_loops`: stop as soon as the text loops
    (_loops): the editor is shown only the first copy anyway, and the
    rest would only add decode time.  `guard_context`: the Python text before the cursor
    (which ends with `lead`); decoding then runs under a SyntaxGuard (syntaxguard), told
    the text after the cursor when `guard_after` gives it, and the lexer's state after
    the text before the lead when `guard_base` gives it (a LexCache's).  `avoid_first`:
    tokens the first one past the lead may not be (stats.first_choice is the one taken)."""
    tok = model.tokenizer
    eot = tok.special("endoftext")
    banned = [i for i in tok.ids.values() if i != eot]
    stream = TextStream(tok, config.stop, lead)
    constraint = LeadConstraint(tok, lead) if lead else None
    guard = None
    if guard_context is not None:
        before = guard_context[:len(guard_context) - len(lead)] if lead else guard_context
        guard = SyntaxGuard(tok, before, lead, guard_after, guard_base)
    new = session.prepare(prompt_ids)
    text = ""
    try:
        for tid in generate_ids(model.engine, session.cache, new, config, stop_ids=[eot],
                                banned_ids=banned, cancel=cancel, stats=stats,
                                constraint=constraint, guard=guard,
                                avoid_first=avoid_first):
            piece = stream.push(tid)
            text += piece
            if stream.stopped:
                if stats is not None:
                    stats.stop_reason = "stop_string"
                break
            if stop_loops and piece and _loops(text, "\n" in piece):
                if stats is not None:
                    stats.stop_reason = "loop"
                break
        if not stream.stopped:
            text += stream.flush()
    finally:
        session.commit(prompt_ids)
    # Byte-level tokens can end in bytes that are not UTF-8 (a weak model does it often):
    # their U+FFFD replacement characters are dropped, never shown or inserted.
    return text.replace("\ufffd", "")


def _loops(text: str, new_line: bool = True) -> bool:
    """Does a stream's text already loop as cut_repetition would cut it: its complete
    lines as the block cut leaves them (trailing blank lines dropped), or a short piece
    STREAM_PIECE_COPIES times running (more than after the fact: a list still being
    written must not count).  new_line: the last piece ended a line (the lines are only
    checked then; they cannot start to loop in between)."""
    if new_line:
        done = text[:text.rfind("\n") + 1].rstrip(" \t\n")
        if done and line_loop_end(done + "\n") is not None:
            return True
    return piece_loop_end(text, STREAM_PIECE_COPIES) is not None


def _header_indent(st: LexState, suffix: str) -> int | None:
    """When the lexer's state after a text and a line break (`st`) says the text ends a
    Python block's header, and nothing after the cursor is its body (the rest of the
    cursor's line is blank and no deeper line follows): the header's indentation in
    characters, which its body must exceed; else None."""
    if suffix.split("\n", 1)[0].strip():
        return None
    return st.body if body_pending(st, follows(suffix)) else None


def _body_indent(before: str, header: int) -> str:
    """The indentation of the first body line under the header that ends `before`
    (indented `header` characters): the header line's own, one step deeper, the step
    being the one the file's last header before it used for its body (4 spaces, or a
    tab under a tab-indented header, when none did)."""
    lines = with_line_ending(before[-BODY_INDENT_CHARS:], "\n").split("\n")
    own = lines[-1][:indent_of(lines[-1])]
    lead = own if len(own) == header else " " * header
    step, opened = ("\t" if "\t" in lead else "    "), None
    for line in lines[-400:-1]:  # the header's own line last: it has no body yet
        code = line.strip()
        if not code or code.startswith("#"):
            continue
        ws = line[:indent_of(line)]
        if opened is not None and len(ws) > len(opened) and ws.startswith(opened):
            step = ws[len(opened):]
        opened = ws if code.endswith(":") else None
    return lead + step


def with_alternatives(first, attempt, tries) -> tuple:
    """A Python block that breaks the code around the cursor (first: text, broken, stats
    as finishing tells it, after its own cuts) is generated again by attempt(avoid), up
    to `tries` times, each time starting with a token none of the earlier ones started
    with (the model's next choices for the first token, then its own continuation); the
    first one that does not break the code is the answer, else the first stays (still
    breaking it).  A cancelled try (text None, broken False) ends it.  Each try decodes on
    the prompt already cached, so only blocks that would have broken the code cost more.
    Inline completions and the "Complete function body" action both use it."""
    out, broken, stats = first
    avoid = []
    while broken and len(avoid) < tries and stats.first_choice is not None:
        avoid.append(stats.first_choice)
        other = attempt(tuple(avoid))
        if not other[1]:
            return other
        stats = other[2]
    return first


class Completer:
    """Completions for documents, each on its session; remembers the last suggestion per
    document for type-ahead.  Not thread-safe: the server calls it from one worker."""

    def __init__(self, model, sessions):
        self.model, self.sessions = model, sessions
        self._last: dict[str, _Suggestion] = {}
        self._lexed = LexCache()  # the syntax guard's lexer state per document

    def complete(self, uri: str, text: str, offset: int, settings, cancel=None) -> Completion:
        prefix, suffix = text[:offset], text[offset:]
        ahead = self._type_ahead(uri, prefix, suffix)
        if ahead is not None:
            return Completion(ahead, 0, True)
        eol = line_ending(text)
        out, _, stats, prefilled = self._generate(uri, prefix, suffix, settings, cancel,
                                                  settings.max_tokens, eol)
        if out is not None and is_python(uri):
            out, stats, more = self._go_on(uri, prefix, out, suffix, settings, cancel, stats,
                                           settings.max_tokens - stats.generated, eol)
            prefilled += more
        if out is None:
            return Completion("", prefilled, False, "cancelled")
        self._last[uri] = _Suggestion(prefix, suffix, out)
        return Completion(out, prefilled, False, stats.stop_reason)

    def _go_on(self, uri: str, prefix: str, out: str, suffix: str, settings, cancel,
               stats: GenerationStats, left: int, eol: str, remember: bool = True
               ) -> tuple[str | None, GenerationStats, int]:
        """A Python completion with what a second decode adds for it to parse, within
        `left` tokens: a header the line finished gets its body, a `try:` body its handler
        (module docstring); (the completion, the stats of its last decode, the tokens
        prefilled), the completion None when cancelled.  `remember`: the guard's lexer
        keeps its state for the document at the cursor (only the first call's is)."""
        if left < MIN_BODY_TOKENS:
            return out, stats, 0
        if mode(prefix, suffix) == "block":
            lead = handler_lead(with_line_ending(out, "\n"), with_line_ending(prefix, "\n"),
                                with_line_ending(suffix, "\n"))
            if lead is None:
                return out, stats, 0
            clause = out + eol + lead + "except"
            line, _, line_stats, more = self._generate(uri, prefix + clause, suffix, settings,
                                                       cancel, left, eol, remember=False)
            if line is None:
                return None, line_stats, more
            line, line_stats, body_more = self._go_on(
                uri, prefix + clause, line, suffix, settings, cancel, line_stats,
                left - line_stats.generated, eol, remember=False)
            if line is None:
                return None, line_stats, more + body_more
            if fits(clause + line, prefix, suffix):
                return clause + line, line_stats, more + body_more
            return out, stats, more + body_more
        # on from the lexer state the guard kept for this document: the cursor's line only
        st = self._lexed.state(uri, with_line_ending(prefix, "\n"), remember)
        scan(with_line_ending(out, "\n") + "\n", st)
        header = _header_indent(st, suffix)
        if header is None:
            return out, stats, 0
        # the body's first line starts where the editor's auto-indent would put it
        indent = _body_indent(prefix + out, header)
        body, broken, body_stats, more = self._generate(
            uri, prefix + out + eol + indent, suffix, settings, cancel, left, eol,
            remember=False)  # the next keystroke goes on from the prefix, not from here
        if body is None:
            return None, body_stats, more
        if broken is False:  # the code around the cursor, header and all, parses with it
            return out + eol + indent + body, body_stats, more
        return out, stats, more

    def _generate(self, uri: str, prefix: str, suffix: str, settings, cancel, max_tokens: int,
                  eol: str, remember: bool = True) -> tuple[str | None, bool, GenerationStats, int]:
        """The finished completion at the cursor between prefix and suffix (None when
        cancelled), whether it breaks the code around the cursor (finish_checked's True,
        False or None), the stats of the attempt shown, and the tokens prefilled.
        `remember`: keep the guard's lexer state for the document there (LexCache)."""
        ids, lead = self._prompt(prefix, suffix, settings)
        guarded = settings.syntax_guard and is_python(uri)
        guard = with_line_ending(prefix, "\n") if guarded else None
        after = suffix if guarded else None
        base = (self._lexed.state(uri, guard[:len(guard) - len(lead)], remember)
                if guarded else None)
        line_mode = mode(prefix, suffix) == "line"
        config = GenerationConfig(
            max_tokens=max_tokens, stop=("\n",) if line_mode else (),
            sampling=SamplingParams(temperature=settings.temperature))
        session = self.sessions.get(uri)
        if not settings.kv_cache:
            session.reset()

        def attempt(avoid=()) -> tuple[str | None, bool, GenerationStats]:
            stats = GenerationStats()
            raw = generate_text(self.model, session, ids, config, cancel, stats, lead,
                                stop_loops=True, guard_context=guard, guard_after=after,
                                guard_base=base, avoid_first=avoid)
            if stats.stop_reason == "cancelled":
                return None, False, stats
            return (*finish_checked(raw, prefix, suffix, eol,
                                    truncated=stats.stop_reason in ("max_tokens", "deadline"),
                                    python=is_python(uri)), stats)

        first = attempt()
        prefilled = session.last_prefill_tokens
        return (*with_alternatives(first, attempt, settings.alternatives), prefilled)

    def prefill(self, uri: str, text: str, offset: int, settings, cancel=None) -> int:
        """Fill the document's cache with the prompt of a completion at `offset`; returns
        the tokens prefilled (0 when the cache already holds it or the cache is off).  A
        cancel between chunks keeps what was prefilled so far."""
        if not settings.kv_cache:
            return 0
        ids, _ = self._prompt(text[:offset], text[offset:], settings)
        session = self.sessions.get(uri)
        if common_prefix(session.ids, ids) >= len(ids) - 1:
            return 0
        new = session.prepare(ids, idle=True)
        done = 0
        try:
            for i in range(0, len(new), PREFILL_CHUNK):
                if cancel is not None and cancel.is_set():
                    break
                self.model.forward(new[i:i + PREFILL_CHUNK], session.cache, last_only=True)
                done += len(new[i:i + PREFILL_CHUNK])
        finally:
            session.commit(ids)  # holds the part of the prompt really prefilled
            session.idle_prefilled_tokens += done
        return done

    def _prompt(self, prefix: str, suffix: str, settings) -> tuple[list[int], str]:
        """The healed prompt: its ids and the text the completion must re-spell first."""
        budget = prompt_budget(settings, self.model.config.max_seq_len)
        return healed_prompt(with_line_ending(prefix, "\n"), with_line_ending(suffix, "\n"),
                             self.model.tokenizer, budget)

    def _type_ahead(self, uri: str, prefix: str, suffix: str) -> str | None:
        last = self._last.get(uri)
        if last is None or suffix != last.suffix or not prefix.startswith(last.prefix):
            return None
        typed = prefix[len(last.prefix):]
        if typed and last.text.startswith(typed) and len(typed) < len(last.text):
            self._last[uri] = _Suggestion(prefix, suffix, last.text[len(typed):])
            return last.text[len(typed):]
        return None

    def forget(self, uri: str) -> None:
        self._last.pop(uri, None)
        self._lexed.forget(uri)
        self.sessions.close(uri)
