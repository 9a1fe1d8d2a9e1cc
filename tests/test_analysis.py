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
