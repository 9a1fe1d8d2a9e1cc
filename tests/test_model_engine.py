"""The engine (numpy + kernels) against its PyTorch twin on the same random weights, part by
part and whole, and the cache rules an editor relies on: decoding token by token equals a
full recomputation, truncate + re-prefill equals a fresh prefill, and an image read by the
prompt at prefill stays exact while decoding.

Tolerances: the twin runs in float64 as the reference; the fp32 engine must be within a
relative error (max |engine - twin| / max |twin|) of 1e-4.  int8 weights (blocks of 32,
activations quantized on the fly) against the fp32 twin: max-relative error within 5e-2
on the logits with the training init, RMS-relative within 0.1 on the sharper test weights.
"""
import numpy as np
import pytest

from cromwell_lsp.model import CromwellVLJEPA
from cromwell_lsp.model.fusion import Fusion
from cromwell_lsp.model.heads import ARHead, JEPAHead
from cromwell_lsp.model.kvcache import KVCache, KVStack
from cromwell_lsp.model.language import LanguageEncoder
from cromwell_lsp.model.vision import VisionEncoder, VisionState, interp_matrix, preprocess
from tests.model_helpers import TINY, TINY_LLAMA, random_image, random_twin, rel_err

torch = pytest.importorskip("torch")
from cromwell_lsp.training.model import export_safetensors, state_arrays  # noqa: E402

FP32_TOL = 1e-4
INT8_TOL = 5e-2


@pytest.fixture(scope="module")
def twin():
    return random_twin(TINY).double().eval()


@pytest.fixture(scope="module")
def tensors(twin):
    return {k: np.ascontiguousarray(v, np.float32) for k, v in state_arrays(twin).items()}


@pytest.fixture(scope="module")
def model(twin, tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "model.safetensors"
    export_safetensors(twin, path)
    return CromwellVLJEPA.load(path)


def _t(a):
    return torch.as_tensor(np.asarray(a), dtype=torch.float64)


def _toks(n, seed=0, cfg=TINY):
    return np.random.default_rng(seed).integers(0, cfg.vocab_size, n)


def _twin(twin, tokens, image=None, span=None):
    with torch.no_grad():
        img = None if image is None else _t(preprocess(image))[None]
        return twin(torch.as_tensor(tokens)[None], img, span)


# ---- component by component ------------------------------------------------------------
@pytest.mark.parametrize("hw", [(32, 32), (37, 42), (12, 20)])
def test_vision_encoder(twin, tensors, hw):
    """Base grid, a padded grid larger than it and a smaller one (positions resized)."""
    image = random_image(*hw)
    got = VisionEncoder(tensors, TINY)(image)
    with torch.no_grad():
        ref = twin.vision(_t(preprocess(image))[None])[0].numpy()
    assert got.grid == (-(-hw[0] // 4), -(-hw[1] // 4))
    assert rel_err(got.tokens, ref) < FP32_TOL


def test_position_resize_is_torch_bilinear():
    F = torch.nn.functional
    pos = np.random.default_rng(0).standard_normal((8, 8, 3))
    for gh, gw in ((11, 5), (8, 13), (3, 3)):
        ry, rx = interp_matrix(gh, 8), interp_matrix(gw, 8)
        ours = np.einsum("yi,ijc,xj->yxc", ry, pos, rx)
        ref = F.interpolate(_t(pos).permute(2, 0, 1)[None], size=(gh, gw), mode="bilinear",
                            align_corners=False)[0].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_language_encoder(twin, tensors):
    tokens = _toks(11)
    got = LanguageEncoder(tensors, TINY)(tokens, KVStack(TINY.n_layers, 2, 16))
    with torch.no_grad():
        ref = twin.lang(torch.as_tensor(tokens)[None])[0].numpy()
    assert rel_err(got, ref) < FP32_TOL


def test_fusion_with_an_image(twin, tensors):
    rng = np.random.default_rng(3)
    h = rng.standard_normal((9, TINY.d_model)).astype(np.float32)
    v = rng.standard_normal((30, TINY.vision_dim)).astype(np.float32)
    got, attachment = Fusion(tensors, TINY).attach(h, VisionState(v, (5, 6)), p0=0)
    with torch.no_grad():
        ref = twin.fusion(_t(h)[None], _t(v)[None], (0, 9))[0].numpy()
    assert rel_err(got, ref) < FP32_TOL
    assert (attachment.p0, attachment.p1, len(attachment.kv)) == (0, 9, TINY.fusion_layers)
    no_image = Fusion(tensors, TINY)(h.copy(), None)
    with torch.no_grad():
        ref = twin.fusion(_t(h)[None], None, None)[0].numpy()
    assert rel_err(no_image, ref) < FP32_TOL


def test_jepa_head(twin, tensors):
    z = np.random.default_rng(4).standard_normal((7, TINY.joint_dim)).astype(np.float32)
    cache = KVCache(TINY)
    cache.z.append(z)
    got = JEPAHead(tensors, TINY)(cache, n_last=7)
    with torch.no_grad():
        ref = twin.jepa(_t(z)[None])[:, 0].numpy()
    assert got.shape == (TINY.n_future, 7, TINY.joint_dim)
    assert rel_err(got, ref) < FP32_TOL


def test_ar_head(twin, tensors):
    z = np.random.default_rng(5).standard_normal((7, TINY.joint_dim)).astype(np.float32)
    got = ARHead(tensors, TINY)(z, KVCache(TINY).ar)
    with torch.no_grad():
        ref = twin.ar(_t(z)[None])[0].numpy()
    assert rel_err(got, ref) < FP32_TOL


# ---- the whole model -------------------------------------------------------------------
def test_full_model_text(model, twin):
    tokens = _toks(12)
    logits, preds = model.forward(tokens, model.new_cache(), jepa=True)
    ref = _twin(twin, tokens)
    assert rel_err(logits, ref.logits[0].numpy()) < FP32_TOL
    assert rel_err(preds, ref.preds[:, 0].numpy()) < FP32_TOL


def test_full_model_with_image(model, twin):
    tokens, image = _toks(10, seed=1), random_image(37, 42, seed=2)
    logits = model.forward(tokens, model.new_cache(), model.encode_image(image))
    ref = _twin(twin, tokens, image)
    assert rel_err(logits, ref.logits[0].numpy()) < FP32_TOL
    plain = model.forward(tokens, model.new_cache())
    assert rel_err(plain, logits) > 1e-2  # the image matters


def test_llama_shaped_decoder(tmp_path):
    twin = random_twin(TINY_LLAMA).double().eval()
    export_safetensors(twin, tmp_path / "llama.safetensors")
    model = CromwellVLJEPA.load(tmp_path / "llama.safetensors")
    tokens = _toks(9)
    cache = model.new_cache()
    logits = np.concatenate([model.forward(tokens[:5], cache)] +
                            [model.forward(tokens[i:i + 1], cache) for i in range(5, 9)])
    with torch.no_grad():
        ref = twin(torch.as_tensor(tokens)[None]).logits[0].numpy()
    assert rel_err(logits, ref) < FP32_TOL
    with pytest.raises(ValueError, match="no image"):
        model.forward(tokens[:1], cache, jepa=True)


def _int8_model(twin, tmp_path):
    from cromwell_lsp.model import weights as W
    export_safetensors(twin, tmp_path / "f32.safetensors")
    W.quantize_file(tmp_path / "f32.safetensors", tmp_path / "int8.safetensors")
    return CromwellVLJEPA.load(tmp_path / "int8.safetensors")


def _rms_err(got, ref):
    return float(np.sqrt(np.mean((got - ref) ** 2) / np.mean(ref ** 2)))


@pytest.mark.parametrize("seed", [6, 7])
def test_int8_engine_is_close_to_fp32_twin(tmp_path, seed):
    """With the training init: max-relative error < INT8_TOL (measured 1.2-1.9%)."""
    from cromwell_lsp.training.model import random_init
    twin = random_init(TINY, seed).double().eval()
    model = _int8_model(twin, tmp_path)
    tokens, image = _toks(12, seed=seed), random_image(40, 44, seed=seed)
    got = model.forward(tokens, model.new_cache(), model.encode_image(image))
    err = rel_err(got, _twin(twin, tokens, image).logits[0].numpy())
    assert 1e-4 < err < INT8_TOL  # int8 really ran, and stays close


def test_int8_on_sharp_weights(twin, tmp_path):
    """Weights of std 1/sqrt(fan_in) through ~20 layers amplify rounding: RMS-relative
    error < 0.1 (measured 4-5%)."""
    model = _int8_model(twin, tmp_path)
    tokens, image = _toks(12, seed=8), random_image(40, 44, seed=8)
    got = model.forward(tokens, model.new_cache(), model.encode_image(image))
    assert 1e-3 < _rms_err(got, _twin(twin, tokens, image).logits[0].numpy()) < 0.1


# ---- the cache rules -------------------------------------------------------------------
def _decode(model, tokens, n_prompt, image=None, jepa=False):
    cache = model.new_cache(capacity=2)  # small: growth by doubling is exercised
    first = model.forward(tokens[:n_prompt], cache, image, jepa=jepa)
    steps = [model.forward(tokens[i:i + 1], cache, image, jepa=jepa)
             for i in range(n_prompt, len(tokens))]
    if jepa:
        return (np.concatenate([first[0]] + [s[0] for s in steps]),
                np.concatenate([first[1]] + [s[1] for s in steps], axis=1), cache)
    return np.concatenate([first] + steps), cache


def test_cached_decode_equals_full_recompute(model):
    tokens = _toks(14, seed=8)
    logits, preds, cache = _decode(model, tokens, 5, jepa=True)
    full, full_preds = model.forward(tokens, model.new_cache(), jepa=True)
    assert cache.length == 14 and cache.lang.capacity >= 14
    assert rel_err(logits, full) < 1e-5 and rel_err(preds, full_preds) < 1e-5


def test_jepa_catches_up_after_plain_decoding(model):
    tokens = _toks(10, seed=9)
    cache = model.new_cache()
    model.forward(tokens[:6], cache)
    _, preds = model.forward(tokens[6:], cache, jepa=True)
    _, full = model.forward(tokens, model.new_cache(), jepa=True)
    assert preds.shape[1] == 4 and rel_err(preds, full[:, 6:]) < 1e-5


def test_decode_with_image_equals_full_recompute(model, twin):
    tokens, image = _toks(12, seed=10), random_image(20, 36, seed=11)
    vision = model.encode_image(image)
    before = vision.tokens.copy()
    logits, cache = _decode(model, tokens, 6, vision)
    np.testing.assert_array_equal(vision.tokens, before)  # shared per image: never fused in place
    assert (cache.image.p0, cache.image.p1) == (0, 6)
    ref = _twin(twin, tokens, image, span=(0, 6)).logits[0].numpy()
    assert rel_err(logits, ref) < FP32_TOL
    # without the span rule (the image reading all 12 tokens) the results would differ
    assert rel_err(_twin(twin, tokens, image).logits[0].numpy(), ref) > 1e-3


def test_image_attached_after_a_text_prefix(model, twin):
    tokens, image = _toks(11, seed=12), random_image(16, 16, seed=13)
    cache = model.new_cache()
    first = model.forward(tokens[:3], cache)
    vision = model.encode_image(image)
    rest = model.forward(tokens[3:8], cache, vision)
    tail = [model.forward(tokens[i:i + 1], cache, vision) for i in range(8, 11)]
    got = np.concatenate([first, rest] + tail)
    ref = _twin(twin, tokens, image, span=(3, 8)).logits[0].numpy()
    assert rel_err(got, ref) < FP32_TOL
    with pytest.raises(ValueError, match="another image"):
        model.forward(tokens[:1], cache, model.encode_image(random_image(16, 16, seed=99)))


def test_truncate_and_reprefill_equals_fresh_prefill(model):
    a, b, c = _toks(7, seed=14), _toks(5, seed=15), _toks(4, seed=16)
    cache = model.new_cache()
    model.forward(np.concatenate([a, b]), cache, jepa=True)
    assert cache.truncate(len(a)) == len(a) and cache.length == len(a)
    got, got_preds = model.forward(c, cache, jepa=True)
    fresh, fresh_preds = model.forward(np.concatenate([a, c]), model.new_cache(), jepa=True)
    assert rel_err(got, fresh[len(a):]) < 1e-5
    assert rel_err(got_preds, fresh_preds[:, len(a):]) < 1e-5


def test_truncate_inside_an_image_prompt_detaches_it(model):
    tokens, image = _toks(12, seed=17), random_image(16, 16, seed=18)
    vision = model.encode_image(image)
    cache = model.new_cache()
    model.forward(tokens[:2], cache)
    model.forward(tokens[2:8], cache, vision)
    model.forward(tokens[8:9], cache, vision)
    assert cache.truncate(10) == 9 and cache.image is not None  # after the prompt: kept
    assert cache.truncate(5) == 2 and cache.image is None  # inside it: back to p0
    got = model.forward(tokens[2:8], cache, vision)
    fresh = model.forward(tokens[:8], model.new_cache(), None)
    ref_cache = model.new_cache()
    model.forward(tokens[:2], ref_cache)
    ref = model.forward(tokens[2:8], ref_cache, vision)
    assert rel_err(got, ref) < 1e-6 and rel_err(got, fresh[2:]) > 1e-3


def test_cache_bytes_and_capacity(model):
    cache = model.new_cache(capacity=4)
    lang_before = cache.lang.nbytes
    model.forward(_toks(9), cache)
    assert cache.lang.capacity == cache.ar.capacity == 16 and cache.lang.nbytes == 4 * lang_before
    assert cache.jepa.capacity == 4  # the JEPA stack runs lazily, only when asked
    before = cache.nbytes
    assert before == sum(p.nbytes for p in (cache.lang, cache.ar, cache.jepa, cache.z))
    assert cache.lang.kv.ctypes.data % 64 == 0
    model.forward(_toks(3), cache, model.encode_image(random_image(16, 16)))
    assert cache.nbytes > before  # the image's keys and values
    with pytest.raises(ValueError, match="max_seq_len"):
        model.forward(_toks(TINY.max_seq_len), cache)


def test_joint_space_embeddings(model, twin):
    image, tokens = random_image(24, 24, seed=19), _toks(8, seed=20)
    v, t = model.embed_image(image), model.embed_text(tokens)
    with torch.no_grad():
        rv = twin.embed_image(_t(preprocess(image))[None])[0].numpy()
        rt = twin.embed_text(torch.as_tensor(tokens)[None])[0].numpy()
    assert v.shape == t.shape == (TINY.joint_dim,)
    assert abs(np.linalg.norm(v) - 1) < 1e-5 and abs(np.linalg.norm(t) - 1) < 1e-5
    assert rel_err(v, rv) < FP32_TOL and rel_err(t, rt) < FP32_TOL


def test_reading_head_matches_the_twin(model, twin):
    """The scores for the character under each patch are the twin's reading head on its
    vision tokens; read_text lays them out as text."""
    image = random_image(24, 32, seed=31)
    with torch.no_grad():
        logits = twin.vision.read(twin.vision(_t(preprocess(image))[None]))[0].numpy()
    got = model.engine.read_scores(model.encode_image(image))
    assert got.shape == (6, 8, 96)
    assert rel_err(got.reshape(-1, 96), logits) < FP32_TOL
    assert isinstance(model.read_text(image), str)


def test_embed_text_longer_than_the_context_uses_its_start(model):
    long = _toks(TINY.max_seq_len + 40, seed=21)
    got = model.embed_text(long)
    assert np.array_equal(got, model.embed_text(long[:TINY.max_seq_len]))


def test_engine_rejects_bad_input(model):
    cache = model.new_cache()
    with pytest.raises(ValueError, match="token ids"):
        model.forward([TINY.vocab_size], cache)
    with pytest.raises(ValueError, match="at least one"):
        model.forward([], cache)
    with pytest.raises(ValueError, match="another model config"):
        model.forward([1], KVCache(TINY.replace(n_layers=1)))


def test_images_from_paths_and_pil_are_cached_by_content(model, tmp_path):
    from PIL import Image
    pixels = random_image(20, 24, seed=21)
    Image.fromarray(pixels).save(tmp_path / "shot.png")
    first = model.encode_image(tmp_path / "shot.png")
    assert model.encode_image(Image.fromarray(pixels)) is first
    assert model.encode_image(pixels) is first
    assert model.encode_image(random_image(20, 24, seed=22)) is not first
    assert first.grid == (5, 6) and first.tokens.shape == (30, TINY.vision_dim)


def test_twin_trains_every_part():
    """One hybrid loss (LM + JEPA + a joint-space term) reaches every parameter but the
    reading head, which only the align stage's reading loss trains."""
    import torch.nn.functional as F

    from cromwell_lsp.training.model import jepa_loss, random_init
    model = random_init(TINY, 5)
    tokens = torch.as_tensor(_toks(10, seed=23)).reshape(1, 10)
    image = _t(preprocess(random_image(20, 20, seed=24)))[None].float()
    out = model(tokens, image, (0, 6))
    lm = F.cross_entropy(out.logits[0, :-1], tokens[0, 1:])
    joint = (model.embed_image(image) * model.embed_text(tokens)).sum()
    loss = 0.7 * lm + 0.3 * jepa_loss(out.preds, out.z, TINY.step_weights) + 0.01 * joint
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert dead == ["vision.read.weight", "vision.read.bias"]
