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


def test_glyph_cells_hold_the_ink_and_label_the_patches():
    code = "def area(r):\n    return 3.14159 * r ** 2\n"
    for seed in range(4):
        img, glyphs = S.render_with_layout(code, random.Random(seed), font_size=11)
        drawn = "".join(g.char for g in glyphs).replace(" ", "")
        assert set(code.replace(" ", "").replace("\n", "")) <= set(drawn)
        a = np.asarray(img).astype(int)
        ink = np.abs(a - a[0, 0]).sum(-1) > 60
        for g in glyphs:  # every visible character has ink inside its own cell
            cell = ink[int(g.y):int(g.y + g.h), int(g.x):int(g.x + g.w)]
            assert g.char == " " or cell.any(), (seed, g)
        side = 4 * ((max(img.size) + 3) // 4)
        labels = S.char_labels(glyphs, 1.0, side)
        assert {S.char_class(c) for c in drawn} == set(np.unique(labels)) - {0}
        # patches labelled with a character are inkier than background patches
        h, w = ink.shape
        padded = np.zeros((side, side), dtype=bool)
        padded[:h, :w] = ink
        density = padded.reshape(side // 4, 4, side // 4, 4).mean((1, 3))
        assert density[labels > 0].mean() > 4 * density[labels == 0].mean()
        half = S.char_labels(glyphs, 0.5, side // 2)  # the same text, scaled down
        assert set(np.unique(half)) <= set(np.unique(labels)) and (half > 0).sum() > 0
