"""Code screenshots for the vision tasks: deterministic per seed, independent of earlier
renders, varied in look, and converted to arrays the vision encoder accepts."""
import random

import numpy as np

from cromwell_lsp.training import screenshots as S

CODE = "def area(r):\n    return 3.14159 * r ** 2\n"


def test_same_seed_same_image_and_no_leftovers():
    a = np.asarray(S.render(CODE, random.Random(5)))
    S.render("x = 1\n" * 30, random.Random(5))  # a large render in between
    b = np.asarray(S.render(CODE, random.Random(5)))
    assert a.shape == b.shape and np.array_equal(a, b)


def test_looks_vary_and_text_is_drawn():
    dark = np.asarray(S.render(CODE, style="monokai", font_size=14, line_numbers=False))
    light = np.asarray(S.render(CODE, style="default", font_size=14, line_numbers=False))
    assert dark.mean() < 100 < light.mean()
    assert dark.std() > 5 and light.std() > 5  # glyphs, not a blank canvas
    big = S.render(CODE, style="default", font_size=16, line_numbers=True)
    assert big.size[0] > light.shape[1] and big.size[1] > light.shape[0]


def test_to_array_shapes():
    img = S.render(CODE * 40, random.Random(1))
    arr = S.to_array(img, max_side=256)
    assert arr.dtype == np.float32 and arr.shape[2] == 3
    assert arr.shape[0] % 4 == 0 and arr.shape[1] % 4 == 0 and max(arr.shape[:2]) <= 256
    assert -1.0 <= arr.min() and arr.max() <= 1.0  # the engine's scale (uint8 / 127.5 - 1)
    from cromwell_lsp.model.vision import preprocess
    small = S.render(CODE, random.Random(2))  # no resize below max_side: same pixels
    raw = np.asarray(small)
    h, w = raw.shape[:2]
    assert np.allclose(preprocess(raw)[:h, :w], S.to_array(small, max_side=4096)[:h, :w], atol=1e-6)
