"""Screenshots of highlighted code, rendered with Pygments, for the vision tasks: reading
code from an image (image -> code) and aligning screenshots with code in the joint space.

Variety matters more than realism here: each render draws a style (light and dark
themes), a font size, line numbers or none, and padding from a seeded RNG, so the vision
encoder sees the same code in many looks.  A new ImageFormatter is built for every image:
a reused one keeps its earlier drawings (its `drawables` list is never cleared), so every
later image would contain every earlier one.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from ..model.images import fit_scale, screenshot_canvas, to_array  # noqa: F401  (the shared transformation)
from ..model.reading import char_class

STYLES = ("default", "monokai", "friendly", "solarized-dark", "solarized-light", "github-dark",
          "vs", "one-dark", "dracula", "zenburn", "tango", "native", "xcode", "nord")
FONT = "DejaVu Sans Mono"


@dataclass(frozen=True)
class Glyph:
    """One drawn character: its cell (x, y, w, h) in the render's pixels."""
    x: float
    y: float
    w: float
    h: float
    char: str


def render(code: str, rng: random.Random | None = None, **kw):
    """A PIL RGB image of `code` highlighted as Python (see render_with_layout)."""
    return render_with_layout(code, rng, **kw)[0]


def char_labels(glyphs: list[Glyph], scale: float, side: int, patch: int = 4) -> np.ndarray:
    """The character under the centre of each patch of a `side`-pixel canvas that holds
    the render scaled by `scale` at its top left: [side/patch, side/patch] int64 classes
    (char_class; 0 also for the background)."""
    g = side // patch
    out = np.zeros((g, g), dtype=np.int64)
    for gl in glyphs:
        cls = char_class(gl.char)
        if not cls:
            continue
        # patches whose centre (i * patch + patch / 2) / scale lies inside the cell
        lo_x = int(np.ceil(gl.x * scale / patch - 0.5))
        hi_x = int(np.ceil((gl.x + gl.w) * scale / patch - 0.5))
        lo_y = int(np.ceil(gl.y * scale / patch - 0.5))
        hi_y = int(np.ceil((gl.y + gl.h) * scale / patch - 0.5))
        out[max(lo_y, 0):min(hi_y, g), max(lo_x, 0):min(hi_x, g)] = cls
    return out


_FONT_PATHS: dict = {}


def _font_paths_once():
    """Pygments' ImageFormatter asks fc-list (six subprocesses) for the font's files every
    time one is built, 60% of a render here; the answer never changes within a process,
    so the lookup is made once per (font, style)."""
    from pygments.formatters import img

    lookup = getattr(img.FontManager, "_get_nix_font_path", None)
    if lookup is None or getattr(lookup, "cached", False):
        return

    def cached(self, name, style):
        if (name, style) not in _FONT_PATHS:
            _FONT_PATHS[name, style] = lookup(self, name, style)
        return _FONT_PATHS[name, style]

    cached.cached = True
    img.FontManager._get_nix_font_path = cached


def render_with_layout(code: str, rng: random.Random | None = None, *, style: str | None = None,
                       font_size: int | None = None, line_numbers: bool | None = None):
    """(PIL RGB image of `code` highlighted as Python, the Glyph of every character drawn)."""
    from pygments import highlight
    from pygments.formatters import ImageFormatter
    from pygments.lexers import PythonLexer
    from pygments.styles import get_all_styles

    _font_paths_once()
    rng = rng or random.Random(0)
    available = set(get_all_styles())
    style = style or rng.choice([s for s in STYLES if s in available])
    fmt = ImageFormatter(
        style=style, font_name=FONT, image_format="png",
        font_size=font_size or rng.choice((10, 11, 12, 13, 14, 16)),
        line_numbers=rng.random() < 0.5 if line_numbers is None else line_numbers,
        image_pad=rng.randint(4, 16), line_pad=rng.randint(1, 4))
    fmt.drawables = []  # never inherit earlier drawings
    import io

    from PIL import Image

    png = highlight(code, PythonLexer(), fmt)
    glyphs = []  # each drawn run of text (tokens and line numbers) split into characters
    for (x, y), text, *_ in fmt.drawables:
        width = fmt.fonts.get_text_size(text)[0] / max(len(text), 1)
        glyphs += [Glyph(x + i * width, y, width, fmt.fonth, ch) for i, ch in enumerate(text)]
    return Image.open(io.BytesIO(png)).convert("RGB"), glyphs


