"""Completion post-processing: what the editor would insert for typical model outputs."""
import pytest

from cromwell_lsp.features.postprocess import (balance_brackets, continued, cut_repetition,
                                               finish, mode)


def test_mode():
    assert mode("def f():\n    x = foo(", ")\n") == "line"
    assert mode("def f():\n    ", "\n") == "block"
    assert mode("def f():\n", "") == "block"


def test_block_stops_at_dedent():
    prefix = "def area(r):\n    "
    raw = "return 3.14 * r * r\n\ndef other():\n    pass\n"
    assert finish(raw, prefix, "") == "return 3.14 * r * r"


def test_block_without_editor_indent_keeps_the_body():
    prefix = "class Stack:\n    def push(self, item):\n"
    raw = "        self.items.append(item)\n        return self\n\n    def pop(self):\n        ..."
    out = finish(raw, prefix, "")
    assert out == "        self.items.append(item)\n        return self"


def test_block_at_module_level_stops_at_blank_line():
    assert finish("import os\nimport sys\n\n\nprint(1)\n", "", "") == "import os\nimport sys"


def test_line_mode_takes_the_rest_of_the_line():
    assert finish("range(10):\n        print(i)", "for i in ", "\n") == "range(10):"


def test_trims_what_the_suffix_already_has():
    assert finish("x, y)", "    total = add(", ")\n") == "x, y"
    prefix = "def f(a):\n    "
    suffix = "\n    return result\n"
    raw = "result = a * 2\n    return result\n"
    assert finish(raw, prefix, suffix) == "result = a * 2"


def test_unmatched_closer_is_cut_and_opened_brackets_closed():
    assert balance_brackets("x))", "f(", "\n", True) == "x)"
    assert balance_brackets("len(items", "n = ", "\n", True) == "len(items)"
    assert balance_brackets("d['a'", "v = ", "\n", True) == "d['a']"
    # brackets inside strings and comments do not count
    assert balance_brackets("'(' + s  # )", "x = ", "\n", True) == "'(' + s  # )"
    # the suffix already closes it: add nothing
    assert balance_brackets("a, b", "f(", ")\n", True) == "a, b"


def test_line_endings_and_no_trailing_space():
    prefix = "def f():\r\n    "
    out = finish("a = 1   \n    return a\n", prefix, "\r\n", "\r\n")
    assert out == "a = 1\r\n    return a"


def test_a_docstring_blank_line_does_not_end_a_module_level_block():
    raw = ('def add(a, b):\n    """Add two numbers.\n\n    Returns their sum.\n    """\n'
           '    return a + b\n\n\ndef other():\n    pass\n')
    assert finish(raw, "", "") == (
        'def add(a, b):\n    """Add two numbers.\n\n    Returns their sum.\n    """\n'
        '    return a + b')


def test_string_lines_left_of_the_block_do_not_end_it():
    raw = 'return """\nUsage: tool [options]\n\nOptions:\n  -h  help\n"""\n\ndef main():\n    pass'
    assert finish(raw, "def usage():\n    ", "") == (
        'return """\nUsage: tool [options]\n\nOptions:\n  -h  help\n"""')


def test_a_signature_closed_left_of_the_block_does_not_end_it():
    # a call or signature the completion opened goes on whatever its lines' indentation
    raw = "total = add(\n  1,\n  2)\n    return total\nx = 3"
    assert finish(raw, "def f():\n    ", "") == "total = add(\n  1,\n  2)\n    return total"
    # a closer of a bracket the prefix opened still ends the block at its dedent
    raw = "'a': 1,\n        'b': 2,\n    }\n    return table"
    assert finish(raw, "def f():\n    table = {\n        ", "") == "'a': 1,\n        'b': 2,"


def test_continued_lines():
    assert continued("f(a,\n  b)\nc\n") == [True, False, False]
    assert continued('x = """\n\n"""\ny') == [True, True, False]
    assert continued("# (\nx = '('\ny") == [False, False]
    assert continued(")\nx\n") == [False, False]


def test_a_block_cut_by_the_token_limit_drops_its_unfinished_statement():
    prefix = "def mean(xs):\n    "
    raw = "total = 0\n    for x in xs:\n        total += x\n    return tot"
    assert finish(raw, prefix, "", truncated=True) == (
        "total = 0\n    for x in xs:\n        total += x")
    assert finish(raw, prefix, "") == raw  # a block that ended by itself stays whole
    # an unfinished call over several lines goes whole
    raw = "x = 1\n    y = f(a,\n          b"
    assert finish(raw, prefix, "", truncated=True) == "x = 1"
    # a lone statement keeps its whole lines
    assert finish("if x:\n        return fo", prefix, "", truncated=True) == "if x:"
    # a finished last statement stays, and so does a block that ended before the limit
    assert finish("x = 1\n    y = 2\n", prefix, "", truncated=True) == "x = 1\n    y = 2"
    assert finish("x = 1\n    y = 2\nz = 3\nw = ", prefix, "", truncated=True) == (
        "x = 1\n    y = 2")
    # line mode completes the rest of one line, cut or not
    assert finish("g(b", "    y = f(a, ", "\n", truncated=True) == "g(b)"


@pytest.mark.parametrize("raw", ["", "\n", "   ", "\n\n\n"])
def test_empty_outputs(raw):
    assert finish(raw, "def f():\n    ", "").strip() == ""


def test_a_looping_block_keeps_its_first_copy():
    # what the step-8,638 model wrote after "class Stack:" (greedy, cut by the token limit)
    method = "    def __init__(self, *args):\n        return self.__name__\n\n"
    raw = "pass\n" + method * 3 + "    def __init__(self, other):\n        return self"
    assert finish(raw, "class Stack:\n    ", "") == (
        "pass\n    def __init__(self, *args):\n        return self.__name__")
    # one line three times running
    assert cut_repetition("x = 1\ny += x\ny += x\ny += x\nz") == "x = 1\ny += x"


def test_a_short_piece_looping_to_the_token_limit_is_cut():
    raw = "x, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0"
    assert cut_repetition(raw) == "x, 1, 1, 1, 0"
    assert finish(raw, "for i in range(", "\n") == "x, 1, 1, 1, 0"
    assert cut_repetition("The `n` is `n` is `n` is `n` is `n` is `n` is `n` is `n` is `") == (
        "The `n` is")


@pytest.mark.parametrize("code", [
    "grid = [0, 0, 0, 0, 0, 0, 0, 0]\nreturn grid",            # a finished run is code
    "# ------------------------------------------------\nx = 1",  # rules and underlines
    "a = 1\na = 1\nb = 2",                                     # twice is not a loop
    "if a:\n    pass\nelif b:\n    pass\nelse:\n    pass",   # same line, not in a row
    "x = f(\n)\n)\n)",                                        # lone closers carry no text
])
def test_code_that_repeats_a_little_is_kept(code):
    assert cut_repetition(code) == code


def test_a_stream_stops_where_the_cut_would_cut():
    from cromwell_lsp.features.completion import STREAM_PIECE_COPIES, _loops
    method = "    def __init__(self):\n        return 1\n\n"
    # the block cut drops trailing blank lines, so three copies of a unit ending in a
    # blank line loop only once the next line is there, as cut_repetition sees it too
    stream = "pass\n" + method * 3
    assert not _loops(stream) and cut_repetition(stream.rstrip()) == stream.rstrip()
    stream += "    def __init__(self):\n"
    assert _loops(stream)
    assert cut_repetition(stream.rstrip()) == "pass\n" + method.rstrip()
    # a line still being written does not count: "ab" may become "abc"
    assert not _loops("x = ab\nx = ab\nx = ab")
    assert _loops("x = ab\nx = ab\nx = ab\n")
    # a list still being written is not a loop until STREAM_PIECE_COPIES copies
    assert not _loops("[" + "0, " * (STREAM_PIECE_COPIES - 1) + "0")
    assert _loops("[" + "0, " * STREAM_PIECE_COPIES + "0")


@pytest.mark.parametrize("completion, suffix, kept", [
    # a loop cut or the token limit left a bracket or a string the completion opened
    ("x = 1\n    y = f(a,\n        b", "", "x = 1"),
    ('x = 1\n    raise ValueError("no such', "", "x = 1"),
    # a header left with no body goes, and a header above it left bodiless goes too
    ("x = 1\n    if x:\n        # a comment", "", "x = 1"),
    ("x = 1\n    for y in x:\n        if y:\n", "", "x = 1"),
    ("x = 1\n    if (x and\n            y):", "", "x = 1"),
    # ...unless the code after the cursor is the header's body
    ("x = 1\n    if x:\n", "\n        y()\n", "x = 1\n    if x:\n"),
    ("x = 1\n    if x:\n", "\n    y()\n", "x = 1"),
    # whole endings stay
    ("x = 1\n    if x:\n        y = 2", "", "x = 1\n    if x:\n        y = 2"),
    ("if x: y()", "", "if x: y()"),
    # a lone statement left open gets its quote and brackets when its end can close...
    ("return f(a,\n        b", "", "return f(a,\n        b)"),
    ("return f(g(a, [1,", "", "return f(g(a, [1,]))"),
    ('raise ValueError("no such', "", 'raise ValueError("no such")'),
    # ...and stays as it is where closing would not make code (an operator, a comment)
    ("return f(a +", "", "return f(a +"),
    ("if g(x, (1, 2", "", "if g(x, (1, 2"),  # a header would still want its colon
    ("x = 1\n    if g(x", "", "x = 1"),
    ("return f(a,  # note", "", "return f(a,  # note"),
])
def test_a_block_completion_ends_where_python_can(completion, suffix, kept):
    from cromwell_lsp.features.postprocess import drop_open_end

    prefix = "def f(a):\n    "
    assert drop_open_end(completion, prefix, suffix) == kept
    # inside a docstring the text before the cursor opened, an apostrophe is no string
    assert drop_open_end("it's\n    the", 'def f():\n    """', "") == "it's\n    the"


def test_finish_never_leaves_a_block_completion_open():
    from cromwell_lsp.features.postprocess import finish

    raw = "total = 0\n    for x in xs:\n        total += g(x, [1, 2, 3, 4, 5"
    assert finish(raw, "def f(xs):\n    ", "", python=True) == "total = 0"
    # other languages are not lexed as Python: the step is Python's alone
    assert finish(raw, "def f(xs):\n    ", "") == raw


@pytest.mark.parametrize("completion, prefix, suffix, kept", [
    # a line Python rejects: the completion goes back to the lines before it
    ('y = x + 1\n    if not in [""]:\n        return y', "def f(x):\n    ", "", "y = x + 1"),
    ("y = x\n    try:\n        y = g(y)", "def f(x):\n    ", "", "y = x"),
    # completions that parse stay, the code after the cursor up to the next def included
    ("y = x + 1\n    return y", "def f(x):\n    ", "\n\ndef g():\n    pass\n",
     "y = x + 1\n    return y"),
    ("return self.x", "class A:\n    def f(self):\n        ",
     "\n\n    def g(self):\n        pass\n", "return self.x"),
    # code that only this completion breaks, below the cursor: the completion is cut
    ("y = x\n    return y\n  z = 2", "def f(x):\n    ", "\n\ndef g():\n    pass\n",
     "y = x\n    return y"),
    # the code before the cursor does not parse: nothing can be told, the text stays
    ('y = x + 1\n    if not in [""]:', "def f(x:\n    ", "", 'y = x + 1\n    if not in [""]:'),
    # nor when no start of the completion parses (the code after it is broken)
    ("y = x\n    if not in y:", "def f(x):\n    ", "\n    return y +\n",
     "y = x\n    if not in y:"),
    # the code before the last top-level def is not parsed: it may be half written
    ("y = x\n    if not in y:\n        pass", "x = (\n\ndef f(x):\n    ", "", "y = x"),
])
def test_a_block_completion_keeps_the_code_around_it_parsing(completion, prefix, suffix, kept):
    from cromwell_lsp.features.postprocess import keep_parsing

    assert keep_parsing(completion, prefix, suffix) == kept


def test_keep_parsing_looks_no_further_than_its_window():
    from cromwell_lsp.features.postprocess import WINDOW, keep_parsing, parse_window

    long_body = "    x = 1\n" * (WINDOW // 10 + 1)
    prefix = "def f(x):\n" + long_body + "    "
    assert parse_window(prefix, "") is None  # the def is out of reach
    assert keep_parsing("y = 1\n    if not in y:", prefix, "") == "y = 1\n    if not in y:"
    assert parse_window("def f(x):\n    ", "\n" + long_body) is None
    # the code after the cursor is parsed to the end of the cursor's block
    assert parse_window("class A:\n    def f(self):\n        ",
                        "\n        return 1\n    # note\n    def g(self):\n        pass\n") == (
        "class A:\n    def f(self):\n        ", "\n        return 1\n    # note\n")
    assert parse_window("if x:\n\tif y:\n\t\t", "\n\t\tz\n\telse:\n\t\tpass\n") == (
        "if x:\n\tif y:\n\t\t", "\n\t\tz\n")
    # a script with no def at all is parsed from its start
    assert parse_window("import os\nfor x in y:\n    ", "\nprint(1)\n") == (
        "import os\nfor x in y:\n    ", "\n")
    assert parse_window("import os\n", "\nprint(1)\n") == ("import os\n", "\nprint(1)\n")


def test_finish_keeps_a_python_block_parsing_and_leaves_other_languages():
    from cromwell_lsp.features.postprocess import finish

    raw = 'total = 0\n    if not in [""]:\n        total += 1'
    assert finish(raw, "def f(xs):\n    ", "", python=True) == "total = 0"
    assert finish(raw, "def f(xs):\n    ", "") == raw
    # in line mode (code before the cursor on its line) the step does not apply
    assert finish("1 +", "def f(xs):\n    return ", "", python=True) == "1 +"


@pytest.mark.parametrize("completion, prefix, suffix, breaks", [
    ("return x + 1", "def f(x):\n    ", "", False),
    ('if not in [""]:\n        pass', "def f(x):\n    ", "", True),
    # only a comment, or nothing, where the block needs its first statement
    ("# GH#4188", "def test_f(x):\n    # a note\n\n    ", "", True),
    ("", "def f(x):\n    ", "", True),
    # nothing is needed: the block has its statement after the cursor
    ("", "def f(x):\n    ", "\n    return x\n", False),
    ("# keep x", "def f(x):\n    ", "\n    return x\n", False),
    # the code after the cursor is half written: nothing can be told
    ("return x", "def f(x):\n    ", "\n    return y +\n", False),
    ("return x +", "def f(x):\n    ", "\n    return y +\n", False),
    # Windows line endings in the finished text (with_line_ending) are read as breaks
    ("if x:\r\n        return 1\r\n    return 2", "def f(x):\r\n    ", "", False),
    ("if x:\r\n    return 1", "def f(x):\r\n    ", "", True),
])
def test_breaks_code_tells_a_completion_that_leaves_the_block_unparsable(completion, prefix,
                                                                          suffix, breaks):
    from cromwell_lsp.features.postprocess import breaks_code

    assert breaks_code(completion, prefix, suffix) is breaks


@pytest.mark.parametrize("raw, prefix, suffix, kept", [
    # a try: body goes on through its handlers, an if's through elif / else
    ("x = f()\nexcept ValueError:\n    x = None\nfinally:\n    g()\nprint(x)\n",
     "import os\ntry:\n    ", "", "x = f()\nexcept ValueError:\n    x = None\nfinally:\n    g()"),
    ("return 1\n    elif y:\n        return 2\n    else:\n        return 3\n    z = 1\n",
     "def f(x, y):\n    if x:\n        ", "",
     "return 1\n    elif y:\n        return 2\n    else:\n        return 3"),
    ("a()\nelse:\n    b()\nelse:\n    c()\n", "for x in xs:\n    ", "", "a()\nelse:\n    b()"),
    # a try's else (after an except) may still have its finally; an if's else may not
    ("b()\n  finally:\n    c()\n  d()\n", "def g():\n  try:\n    a()\n  except E:\n    a()\n"
     "  else:\n    ", "", "b()\n  finally:\n    c()"),
    ("b()\n  finally:\n    c()\n", "def g():\n  if a:\n    a()\n  else:\n    ", "", "b()"),
    # clauses that may not go on the statement, or at another indentation, end it
    ("a()\nexcept E:\n    b()\n", "def f():\n    ", "", "a()"),
    ("a()\nelse:\n    b()\n", "try:\n    ", "", "a()"),
    ("b()\n  except E:\n    c()\n", "def g():\n    try:\n        ", "", "b()"),
    # the document already goes on the statement after the cursor: nothing written twice
    ("x = f()\nexcept ValueError:\n    x = None\n", "try:\n    ", "\nexcept OSError:\n    pass\n",
     "x = f()"),
    ("x = f()\nexcept ValueError:\n    x = None\n", "try:\n    ",
     "\n    y = 2\n\n# done\nfinally:\n    pass\n", "x = f()"),
    # Windows line endings and tabs read the same
    ("x = f()\r\n\texcept E:\r\n\t\tx = 0\r\n\ty()\r\n", "def f():\r\n\ttry:\r\n\t\t", "",
     "x = f()\r\n\texcept E:\r\n\t\tx = 0"),
])
def test_a_python_block_goes_on_through_the_clauses_of_its_statement(raw, prefix, suffix, kept):
    """A `try:` body alone never parses: what the editor inserts goes on through the
    clauses the model wrote for the block's statement, at its header's indentation."""
    ending = "\r\n" if "\r\n" in prefix else "\n"
    assert finish(raw, prefix, suffix, ending, python=True) == kept
    # other languages end the block at the first line indented less, as before
    assert finish(raw, prefix, suffix, ending) == kept.split(ending)[0]


def test_statement_words_and_the_clauses_that_go_on_them():
    from cromwell_lsp.features.postprocess import goes_on, statement_word

    assert [statement_word(s) for s in ("  async for x in y:", "except* E:", "else:",
                                         "elsewhere = 1", "# else:", "@dec", "")] == \
        ["for", "except", "else", "elsewhere", None, None, None]
    assert goes_on("try", "except E:") == "except" and goes_on("try", "finally:") == "finally"
    assert goes_on("except", "else:") == "try-else" and goes_on("if", "else:") == "else"
    assert goes_on("try-else", "finally:") == "finally"
    for statement, line in (("try", "else:"), ("else", "finally:"), ("finally", "else:"),
                            ("def", "else:"), ("with", "except E:"), (None, "else:"),
                            ("if", "elsewhere = 1"), ("while", "elif x:")):
        assert goes_on(statement, line) is None
