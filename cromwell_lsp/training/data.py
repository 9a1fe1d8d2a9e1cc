"""Batches for training: the task mixture (tasks.py) over the corpus, packed into
fixed-length token rows, plus image batches (rendered screenshots -> code).

Text rows: examples are encoded (ids + loss mask) and concatenated, each followed by its
own end token, into rows of seq_len + 1 tokens (inputs are row[:-1], targets row[1:]);
an example longer than a row continues in the next one.  Everything is drawn from one
seeded `random.Random`, and `state()` / `restore()` capture the stream's position (file
order, index, RNG, the partly filled row), so a resumed run sees exactly the batches an
uninterrupted one would have.

Image rows: a function of the corpus rendered in a random style, padded to a fixed
square (its corner colour), with the prompt <image> <fim_middle> and the code as the
answer; the alignment loss pairs each screenshot with its code.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from ..model import prompts
from . import screenshots, tasks

TASK_WEIGHTS = {"file": 1.0, "explain": 0.35, "repair": 0.25}
BLOCKS_PER_FILE = 6  # block examples (a bare start -> its whole block) drawn from each file


class TextStream:
    def __init__(self, texts: list[tuple[str, str]], tok, seq_len: int, seed: int = 0,
                 rank: int = 0, world: int = 1, blocks_per_file: int = BLOCKS_PER_FILE,
                 own: list[tuple[str, str]] | None = None, own_per_file: int = 0,
                 block_cap: int = 0, openings: dict[str, int] | None = None):
        self.texts = texts[rank::world]
        self.blocks_per_file = blocks_per_file
        # a block whose opening more than block_cap blocks of the corpus share (openings:
        # tasks.opening_counts) is drawn with probability block_cap / that count
        self.block_cap, self.openings = block_cap, openings or {}
        # the model's own working completions (owncompletions.py): this many with each file
        self.own, self.own_per_file = own or [], own_per_file if own else 0
        self.tok, self.seq_len = tok, seq_len
        self.rng = random.Random(seed * 1000 + rank)
        self.order: list[int] = []
        self.index = 0
        self.epoch = 0
        self.pending: list[tuple[str, list[int], list[int]]] = []  # (task, ids, mask)
        self.row_ids: list[int] = []
        self.row_mask: list[int] = []
        self.row_tasks: list[str] = []

    # ---- position ----------------------------------------------------------------------
    def state(self) -> dict:
        return {"order": self.order, "index": self.index, "epoch": self.epoch,
                "rng": self.rng.getstate(), "pending": self.pending, "row_ids": self.row_ids,
                "row_mask": self.row_mask, "row_tasks": self.row_tasks}

    def restore(self, s: dict) -> None:
        self.order, self.index, self.epoch = list(s["order"]), s["index"], s["epoch"]
        rng = s["rng"]
        self.rng.setstate((rng[0], tuple(rng[1]), rng[2]))
        self.pending = [tuple(p) for p in s["pending"]]
        self.row_ids, self.row_mask, self.row_tasks = s["row_ids"], s["row_mask"], s["row_tasks"]
        if self.order and len(self.order) != len(self.texts):
            # the files changed under the checkpoint (other source weights): a new shuffle
            self.order, self.index = [], 0

    # ---- examples ----------------------------------------------------------------------
    def _next_file(self) -> tuple[str, str]:
        if self.index >= len(self.order):
            if self.order:
                self.epoch += 1
            self.order = list(range(len(self.texts)))
            self.rng.shuffle(self.order)
            self.index = 0
        path, text = self.texts[self.order[self.index]]
        self.index += 1
        return path, text

    def _examples(self):
        path, text = self._next_file()
        ex = [tasks.lm_or_fim(path, text, self.rng)]
        pairs = tasks.explain_pairs(text)
        if pairs and self.rng.random() < TASK_WEIGHTS["explain"]:
            ex.append(tasks.explain_example(*self.rng.choice(pairs)))
        if self.rng.random() < TASK_WEIGHTS["repair"]:
            snippets = tasks.function_snippets(text)
            if snippets:
                good = self.rng.choice(snippets)
                bad = tasks.corrupt(good, self.rng)
                if bad:
                    ex.append(tasks.repair_example(bad, good))
        blocks = [b for b in tasks.block_snippets(text) if self._keep_block(b)]
        for _ in range(min(self.blocks_per_file, len(blocks))):
            ex.append(tasks.block_example(self.rng.choice(blocks), self.rng))
        for _ in range(self.own_per_file):
            ex.append(tasks.start_example("own", *self.rng.choice(self.own)))
        return ex

    def _keep_block(self, code: str) -> bool:
        """May the block task draw this block of the file?  Yes, but for an opening shared
        by more than block_cap blocks of the corpus: then with probability block_cap / that
        count, so an epoch offers about block_cap of such an opening's blocks in all."""
        if not self.block_cap:
            return True
        n = self.openings.get(tasks.block_opening(code), 1)
        return n <= self.block_cap or self.rng.random() < self.block_cap / n

    def next_row(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """ids [seq_len + 1] int64, mask [seq_len + 1] float32, tasks present."""
        need = self.seq_len + 1
        while len(self.row_ids) < need:
            if not self.pending:
                for ex in self._examples():
                    ids, mask = tasks.encode(ex, self.tok)
                    self.pending.append((ex.task, ids, mask))
                continue
            task, ids, mask = self.pending[0]
            room = need - len(self.row_ids)
            self.row_ids += ids[:room]
            self.row_mask += mask[:room]
            self.row_tasks.append(task)
            if len(ids) > room:
                self.pending[0] = (task, ids[room:], mask[room:])
            else:
                self.pending.pop(0)
        ids = np.array(self.row_ids[:need], dtype=np.int64)
        mask = np.array(self.row_mask[:need], dtype=np.float32)
        tasks_in_row = sorted(set(self.row_tasks))
        self.row_ids, self.row_mask, self.row_tasks = [], [], []
        return ids, mask, tasks_in_row

    def batch(self, n: int):
        rows = [self.next_row() for _ in range(n)]
        return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])


SCREENSHOT_LINES, SCREENSHOT_COLUMNS = 12, 60  # a function this size is drawn legibly enough
SCREENSHOT_FONT_SIZES = (9, 10, 11)


def fits_screenshot(code: str) -> bool:
    return max(len(line) for line in code.splitlines()) <= SCREENSHOT_COLUMNS


@dataclass
class Screenshot:
    code: str
    canvas: np.ndarray  # [side, side, 3]: the render scaled onto the training canvas
    glyphs: list        # screenshots.Glyph of every drawn character, in render pixels
    scale: float        # render pixels -> canvas pixels


def draw_snippet(texts, rng: random.Random) -> str:
    """A random function of the corpus that fits a screenshot."""
    while True:
        _, text = rng.choice(texts)
        snippets = tasks.function_snippets(text, max_lines=SCREENSHOT_LINES)
        if not snippets:
            continue
        code = rng.choice(snippets)
        if fits_screenshot(code):
            return code


def snippet_pool(texts, rng: random.Random, files: int) -> list[str]:
    """Every function that fits a screenshot in `files` random files of the corpus: a pool
    to draw many screenshots from without parsing a file for each."""
    pool = []
    for _, text in rng.sample(texts, min(files, len(texts))):
        pool += [c for c in tasks.function_snippets(text, max_lines=SCREENSHOT_LINES)
                 if fits_screenshot(c)]
    return pool


def draw_screenshot(texts, rng: random.Random, side: int) -> Screenshot:
    """A random function of the corpus that fits a screenshot, drawn in a random look."""
    return screenshot_of(draw_snippet(texts, rng), rng, side)


def screenshot_of(code: str, rng: random.Random, side: int) -> Screenshot:
    """`code` drawn in a random look on the training canvas."""
    image, glyphs = screenshots.render_with_layout(
        code, rng, font_size=rng.choice(SCREENSHOT_FONT_SIZES))
    return Screenshot(code, screenshots.screenshot_canvas(image, side), glyphs,
                      screenshots.fit_scale(image.size, side))


def pad_rows(rows: list[list[int]], pad: int, masks: list[list[int]] | None = None):
    """Token rows padded to the longest: ids [n, L] int64 and a float32 mask (the given
    masks, else 1 on every real token)."""
    L = max(map(len, rows))
    ids = np.full((len(rows), L), pad, dtype=np.int64)
    mask = np.zeros((len(rows), L), dtype=np.float32)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
        mask[i, :len(r)] = masks[i] if masks is not None else 1.0
    return ids, mask


def image_batch(texts, tok, rng: random.Random, n: int, side: int, max_tokens: int):
    """n screenshots [n, side, side, 3] float32 in [0, 1], token rows [n, L] (prompt + code
    + end, padded), loss masks, code-only token rows for the alignment loss [n, Lc],
    and the prompt span (p0, p1) the image->text attention reads."""
    images, rows, masks, codes = [], [], [], []
    head = prompts.image_to_code()
    for _ in range(n):
        shot = draw_screenshot(texts, rng, side)
        ids, mask = prompts.encode(head + [("text", shot.code), ("special", "endoftext")], tok,
                                   answer_from=len(head))
        images.append(shot.canvas)
        rows.append(ids[:max_tokens])
        masks.append(mask[:max_tokens])
        codes.append(tok.encode(shot.code)[:max_tokens])
    pad = tok.special("pad")
    ids, msk = pad_rows(rows, pad, masks)
    cod, cod_mask = pad_rows(codes, pad)
    n_prompt = len(prompts.encode(head, tok)[0])
    return np.stack(images), ids, msk, cod, cod_mask, (0, n_prompt)
