"""The training task formats: FIM splits and orders, explain pairs, repair corruptions,
and the token/mask encoding."""
import ast
import random
import textwrap

import pytest

from cromwell_lsp.training import tasks as T

SOURCE = textwrap.dedent('''
    import math


    def area(radius):
        """Area of a circle with the given radius, in square units."""
        return math.pi * radius ** 2


    class Stack:
        """A last-in first-out container of items."""

        def push(self, item):
            """Put an item on top of the stack for later."""
            self.items.append(item)

        def peek(self):
            """The top item, without removing it from the stack."""
            ...

        def size(self):
            return len(self.items)
    ''')


@pytest.mark.parametrize("seed", range(40))
def test_fim_split_reassembles(seed):
    rng = random.Random(seed)
    prefix, middle, suffix = T.fim_split(SOURCE, rng)
    assert prefix + middle + suffix == SOURCE


def test_fim_orders():
    rng = random.Random(0)
    psm = T.fim_example(SOURCE, rng, spm=False)
    spm = T.fim_example(SOURCE, rng, spm=True)
    assert [k for k, _ in psm.segments][:3] == ["special", "text", "special"]
    kinds = [p for k, p in spm.segments if k == "special"]
    assert kinds == ["fim_prefix", "fim_suffix", "fim_middle", "endoftext"]
    # SPM: the prefix text comes right before the middle, so typing only appends
    texts = [p for k, p in spm.segments if k == "text"]
    assert texts[1] + texts[2] + texts[0] == SOURCE


def test_explain_pairs():
    pairs = dict((doc, code) for code, doc in T.explain_pairs(SOURCE))
    assert "Area of a circle with the given radius, in square units." in pairs
    code = pairs["Area of a circle with the given radius, in square units."]
    assert code.startswith("def area(radius):") and '"""' not in code
    assert "return math.pi" in code
    peek = pairs["The top item, without removing it from the stack."]
    ast.parse(peek)  # a docstring-only body becomes `...`
    assert all(ast.parse(c) for c, _ in T.explain_pairs(SOURCE))
    assert not any("size" in c.split("(")[0] for c, _ in T.explain_pairs(SOURCE))


def test_corruptions_break_and_original_parses():
    rng = random.Random(3)
    snippets = T.function_snippets(SOURCE)
    assert len(snippets) == 4
    broken = [T.corrupt(s, rng) for s in snippets * 5]
    assert sum(b is not None for b in broken) >= 15
    for b, s in zip(broken, snippets * 5):
        if b is not None:
            assert b != s
            with pytest.raises(SyntaxError):
                ast.parse(b)
            ast.parse(s)


def test_encode_masks_only_the_answer(small_tokenizer):
    tok, _ = small_tokenizer
    ex = T.explain_example("def f(): ...\n", "Does nothing.")
    ids, mask = T.encode(ex, tok)
    assert len(ids) == len(mask)
    first = mask.index(1)
    assert ids[0] == tok.special("explain") and ids[first - 1] == tok.special("fim_middle")
    assert tok.decode(ids[first:-1]) == "Does nothing." and ids[-1] == tok.special("endoftext")
    assert all(mask[first:]) and not any(mask[:first])


def test_encode_lm_masks_everything(small_tokenizer):
    tok, _ = small_tokenizer
    ids, mask = T.encode(T.file_example("a.py", SOURCE), tok)
    assert all(mask) and tok.decode(ids) == "a.py\n" + SOURCE


BLOCKS = textwrap.dedent('''
    import os


    @cache
    def load(path):
        """Read a file once and keep it for the next callers."""
        with open(path) as f:
            return f.read()


    for name in os.listdir("."):
        if name.endswith(".py"):
            print(name)
        elif name.endswith(".txt"):
            pass


    try:
        import json
    except ImportError:
        json = None
    ''')


def test_block_snippets_are_whole_compound_statements():
    blocks = T.block_snippets(BLOCKS)
    heads = sorted(b.split("\n")[0] for b in blocks)
    # the decorated def (from its decorator), its `with`, the loop, its `if` (not the
    # inner `elif`, which starts with another keyword), the try; no one-line statements
    assert heads == ['@cache', 'for name in os.listdir("."):', 'if name.endswith(".py"):',
                     'try:', 'with open(path) as f:']
    for b in blocks:
        ast.parse(b)
        assert b.endswith("\n") and not b[0].isspace()
    assert T.block_snippets("def broken(:\n    pass\n") == []
    assert T.block_snippets(BLOCKS, max_lines=4) == [b for b in blocks if b.count("\n") <= 4]


@pytest.mark.parametrize("seed", range(30))
def test_block_cut_reassembles_and_opens_the_body(seed):
    rng = random.Random(seed)
    for code in T.block_snippets(BLOCKS):
        start, rest = T.block_cut(code, rng)
        assert start + rest == code and start and rest
        if "\n" in start:  # cut after the header: the body's indentation is typed already
            line = start.split("\n")[-1]
            assert line and not line.strip()
            assert start.split("\n")[-2].rstrip().endswith(":")
        else:  # inside the first line
            assert 3 <= len(start) < len(code.split("\n")[0])


def test_block_example_is_the_server_prompt_without_suffix():
    rng = random.Random(5)
    load = next(b for b in T.block_snippets(BLOCKS) if b.startswith("@cache"))
    seen_doc = seen_bare = False
    for _ in range(40):
        ex = T.block_example(load, rng)
        assert ex.task == "block" and ex.answer_from == 0
        *prompt, (k1, rest), (k2, end) = ex.segments
        assert (k1, k2, end) == ("text", "special", "endoftext")
        start = prompt[-1][1]
        assert prompt == T.prompts.fim_spm(start, "")  # an empty suffix, as at a file's end
        code = start + rest
        ast.parse(code)
        assert "with open(path) as f:" in code
        if '"""' in code:
            seen_doc = True
            assert code == load
        else:
            seen_bare = True
            assert code == load.replace(
                '    """Read a file once and keep it for the next callers."""\n', "")
    assert seen_doc and seen_bare
    # a docstring that is the whole body stays (the body must not become empty)
    only = 'def f():\n    """Only a docstring here."""\n'
    assert T._drop_docstring(only) == only


def test_a_try_statements_body_ends_where_its_first_clause_begins():
    block = "try:\n    x = f(\n        1)\n    y = 2\nexcept ValueError:\n    y = 0\n"
    end = T.try_body_end(block)
    assert block[:end] == "try:\n    x = f(\n        1)\n    y = 2\n"
    assert block[end:].startswith("except")
    commented = "try:\n    y = 2\n# why\nfinally:\n    pass\n"
    assert commented[T.try_body_end(commented):].startswith("# why")
    assert T.try_body_end("for x in y:\n    pass\n") is None
    assert T.try_body_end("try:\n    x = (\n") is None
