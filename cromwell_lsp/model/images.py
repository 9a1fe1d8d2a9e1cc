"""Reading images safely and putting screenshots on the canvas the model was trained on.

Training renders each code snippet, scales it down so neither side exceeds the training
side S (a model property: `CromwellVLJEPA.screenshot_side`, stored in the weights'
metadata), and pastes it at the top left of an S x S canvas filled with the image's corner
colour.  `screenshot_canvas` is that exact transformation, used by training and by the
editor features, so a user's screenshot reaches the vision encoder at the scale it learnt.

`open_image` turns every way a file can be bad (missing, not an image, truncated,
a decompression bomb, too large) into a ValueError that names the file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MAX_IMAGE_BYTES = 32 << 20
MAX_IMAGE_PIXELS = 40_000_000


def open_image(path):
    """A decoded RGB PIL image from a file, or ValueError naming the file and the problem."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ValueError(f"cannot read image {path}: {exc.strerror or exc}") from None
    if size > MAX_IMAGE_BYTES:
        raise ValueError(f"image {path} is {size >> 20} MiB; the limit is {MAX_IMAGE_BYTES >> 20} MiB")
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > MAX_IMAGE_PIXELS:
                raise ValueError(f"image {path} is {w}x{h} pixels; the limit is "
                                 f"{MAX_IMAGE_PIXELS:,} pixels")
            im.load()
            return im.convert("RGB")
    except ValueError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{path} is not an image that can be read ({exc})") from None
    except (OSError, SyntaxError) as exc:  # truncated or corrupt data
        raise ValueError(f"image {path} is damaged or truncated ({exc})") from None


def fit_scale(size: tuple[int, int], max_side: int) -> float:
    """The factor to_array scales an image of `size` (w, h) by: down to max_side, never up."""
    return min(1.0, max_side / max(size))


def to_array(image, max_side: int = 512) -> np.ndarray:
    """An RGB PIL image as float32 [H, W, 3] on the engine's scale (uint8 / 127.5 - 1, so
    [-1, 1]), H and W multiples of 4 (padded with the image's corner colour), scaled down
    so neither side exceeds max_side."""
    from PIL import Image

    w, h = image.size
    scale = fit_scale(image.size, max_side)
    if scale < 1.0:
        image = image.resize((max(4, int(w * scale)), max(4, int(h * scale))), Image.BILINEAR)
    arr = np.asarray(image, dtype=np.float32) * np.float32(1 / 127.5) - np.float32(1)
    H, W = arr.shape[:2]
    out = np.empty(((H + 3) // 4 * 4, (W + 3) // 4 * 4, 3), dtype=np.float32)
    out[...] = arr[0, 0]
    out[:H, :W] = arr
    return out


def screenshot_canvas(image, side: int) -> np.ndarray:
    """A screenshot (PIL RGB image) as float32 [side, side, 3]: scaled to fit, at the top
    left, the rest filled with its corner colour (the training layout)."""
    img = to_array(image, max_side=side)
    canvas = np.empty((side, side, 3), dtype=np.float32)
    canvas[...] = img[0, 0]
    h, w = min(side, img.shape[0]), min(side, img.shape[1])
    canvas[:h, :w] = img[:h, :w]
    return canvas
