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

import numpy as np

from ..model.images import screenshot_canvas, to_array  # noqa: F401  (the shared transformation)

STYLES = ("default", "monokai", "friendly", "solarized-dark", "solarized-light", "github-dark",
          "vs", "one-dark", "dracula", "zenburn", "tango", "native", "xcode", "nord")
FONT = "DejaVu Sans Mono"


def render(code: str, rng: random.Random | None = None, *, style: str | None = None,
           font_size: int | None = None, line_numbers: bool | None = None):
    """A PIL RGB image of `code` highlighted as Python."""
    from pygments import highlight
    from pygments.formatters import ImageFormatter
    from pygments.lexers import PythonLexer
    from pygments.styles import get_all_styles

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
    return Image.open(io.BytesIO(png)).convert("RGB")


