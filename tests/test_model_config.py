"""ModelConfig: presets and their sizes, the strict dict round trip the weights metadata
uses, and the checks that reject impossible shapes."""
import json

import pytest

from cromwell_lsp.model.config import PRESETS, ModelConfig, preset
from tests.model_helpers import TINY, TINY_LLAMA


@pytest.mark.parametrize("name", list(PRESETS))
def test_round_trip_is_exact(name):
    cfg = preset(name)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    assert json.loads(cfg.to_json()) == cfg.to_dict()


def test_parameter_counts_are_in_their_ranges():
    millions = {name: cfg.n_params() / 1e6 for name, cfg in PRESETS.items()}
    assert 200 < millions["base"] < 300
    assert 30 <= millions["small"] <= 60
    assert 5 <= millions["tiny"] <= 10
    assert 25 <= millions["llama-25m"] < 35  # 12.6M of it is embeddings + LM head
    assert 100 <= millions["llama-100m"] < 120


def test_base_is_the_seed_shape():
    c = preset("base")
    assert (c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.ffn_dim) == (12, 768, 12, 3, 3072)
    assert (c.patch_dim, c.mbconv_blocks, c.vision_dim, c.vision_layers, c.window_size) == (192, 4, 384, 6, 16)
    assert (c.fusion_layers, c.joint_dim, c.jepa_layers, c.jepa_heads, c.n_future) == (6, 512, 4, 8, 3)
    assert (c.ar_layers, c.ar_heads, c.ar_kv_heads, c.vocab_size) == (6, 12, 3, 16384)


def test_llama_presets_have_only_a_decoder():
    c = preset("llama-25m")
    assert (c.d_model, c.n_layers, c.n_heads, c.n_kv_heads, c.ffn_dim) == (384, 12, 6, 2, 1024)
    assert c.arch == "llama" and c.joint_dim == c.vision_layers == c.fusion_layers == 0
    # embeddings + 12 layers + norm + lm head
    d, V, L = 384, 16384, 12
    per_layer = 2 * d + d * d * 2 + 2 * d * (d // 6 * 2) + 3 * d * 1024
    assert c.n_params() == 2 * V * d + L * per_layer + d


def test_twin_parameter_count_matches_the_config():
    torch = pytest.importorskip("torch")
    from cromwell_lsp.training.model import CromwellTwin
    for cfg in (TINY, TINY_LLAMA, preset("tiny")):
        assert sum(p.numel() for p in CromwellTwin(cfg).parameters()) == cfg.n_params()


def test_unknown_and_missing_keys_are_named():
    d = TINY.to_dict()
    with pytest.raises(ValueError, match=r"unknown \['n_experts'\]"):
        ModelConfig.from_dict({**d, "n_experts": 8})
    del d["rope_theta"]
    with pytest.raises(ValueError, match=r"missing \['rope_theta'\]"):
        ModelConfig.from_dict(d)


def test_wrong_types_and_shapes_are_rejected():
    with pytest.raises(ValueError, match="'d_model'"):
        ModelConfig.from_dict({**TINY.to_dict(), "d_model": "64"})
    with pytest.raises(ValueError, match="kv_heads"):
        TINY.replace(n_kv_heads=3)
    with pytest.raises(ValueError, match="step_weights"):
        TINY.replace(n_future=2)
    with pytest.raises(ValueError, match="set .*joint_dim"):
        TINY_LLAMA.replace(joint_dim=64)
    with pytest.raises(ValueError, match="unknown model config"):
        preset("huge")
