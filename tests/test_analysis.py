"""What code actions and hovers find in a document."""
from cromwell_lsp.features.analysis import (empty_functions, image_refs, symbol_at,
                                            syntax_errors, undocumented)

DOC = '''import math


def area(r):
    """Area of a circle."""


def todo(x):
    pass


def ellipsis(x): ...


def done(x):
    return x


class Shape:
    def scale(self, k):
        """Scale it."""
        ...
'''


def test_empty_functions():
    assert [d.name for d in empty_functions(DOC)] == ["area", "todo", "ellipsis", "scale"]
    assert empty_functions("def broken(:\n") == []


def test_undocumented():
    assert [d.name for d in undocumented(DOC)] == ["todo", "ellipsis", "done", "Shape"]


def test_syntax_errors_reports_several():
    text = "def f(:\n    pass\n\nx = (1,\ny = 2\n\nfor i in range(3)\n    print(i)\n"
    errs = syntax_errors(text)
    assert len(errs) >= 2
    assert errs[0].line == 0
    assert all(0 <= e.line < len(text.split("\n")) for e in errs)
    assert syntax_errors(DOC) == []
    assert len(syntax_errors("x = 1\x00\n")) == 1  # a null byte: one clear problem, no crash


def test_symbol_at():
    lines = DOC.split("\n")
    line = lines.index("def done(x):")
    sym = symbol_at(DOC, line, 6)
    assert sym.name == "done" and sym.kind == "function" and sym.definition.line == line
    use = symbol_at("y = area(2)\n" + DOC, 0, 5)
    assert use.name == "area" and use.kind == "function"
    assert symbol_at(DOC, 0, 9).kind == "name"  # math
    assert symbol_at(DOC, 999, 0) is None and symbol_at(DOC, 1, 0) is None


def test_image_refs():
    assert image_refs("See ![the screen](docs/shot.png) here") == [(4, 32, "docs/shot.png")]
    assert image_refs("img = load('a b/Shot 1.JPG')")[0][2] == "a b/Shot 1.JPG"
    assert image_refs("# see images/code.webp for the layout")[0][2] == "images/code.webp"
    assert image_refs("![remote](https://example.com/x.png)") == []
    assert image_refs("x = 1") == []


def test_valid_code_python_warns_about_still_parses_under_warnings_as_errors():
    """A plain-string regex ("\\d") is valid code that Python warns about while parsing;
    with PYTHONWARNINGS=error that warning is raised as a SyntaxError.  The document's
    parses must still see valid code, and real syntax errors must still be found."""
    import subprocess
    import sys

    probe = r'''
from cromwell_lsp.features import analysis, postprocess
ok = 'import re\nPAT = re.compile("\\d+")\n'
assert analysis.syntax_errors(ok) == [], analysis.syntax_errors(ok)
assert analysis.parses(ok) and analysis.error_line(ok) is None
bad = 'PAT = "\\d"\ndef f(:\n'
assert analysis.error_line(bad) == 2 and len(analysis.syntax_errors(bad)) == 1
prefix = "def digits(s):\n    "
comp = 'return re.findall("\\d", s)\n'
assert postprocess.keep_parsing(comp, prefix, "") == comp
import warnings
try:  # other code's warnings are as the user set them
    warnings.warn("still an error", DeprecationWarning)
except DeprecationWarning:
    print("OK")
'''
    run = subprocess.run([sys.executable, "-W", "error", "-c", probe], capture_output=True,
                         text=True, timeout=120, env={**__import__("os").environ,
                                                      "PYTHONWARNINGS": "error"})
    assert run.returncode == 0 and run.stdout.strip() == "OK", run.stderr[-2000:]
