"""Shared by the model tests: a tiny VL-JEPA config and twins with random weights large
enough that every component moves the output (so a wrong wire shows up)."""
import numpy as np

from cromwell_lsp.model.config import ModelConfig, llama

TINY = ModelConfig(
    vocab_size=96, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=96, max_seq_len=64,
    patch_dim=32, mbconv_blocks=2, mbconv_expand=2, vision_dim=64, vision_layers=2,
    vision_heads=2, vision_ffn_dim=96, window_size=4, image_size=32, fusion_layers=2,
    fusion_ffn_dim=96, joint_dim=64, jepa_layers=2, jepa_heads=4, jepa_ffn_dim=96,
    jepa_pred_dim=64, ar_layers=2, ar_heads=4, ar_kv_heads=2, ar_ffn_dim=96)

TINY_LLAMA = llama(vocab_size=96, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=96,
                   max_seq_len=64)


def random_twin(cfg=TINY, seed=0):
    """A twin whose linear weights have std 1/sqrt(fan_in) and norms 1 +- 0.1."""
    import torch

    from cromwell_lsp.training.model import init_order, random_init
    model = random_init(cfg, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in init_order(model):
            noise = torch.randn(p.shape, generator=gen)
            if "norm" in name:
                p.copy_(1 + 0.1 * noise)
            else:
                p.copy_(noise / max(p.shape[-1], 1) ** 0.5)
        if hasattr(model, "joint"):  # a retrieval metric that is not the identity
            J = cfg.joint_dim
            model.joint.center.copy_(0.1 * torch.randn(J, generator=gen))
            model.joint.whiten.copy_(torch.eye(J) + torch.randn(J, J, generator=gen) / J ** 0.5)
    return model


def random_image(h=37, w=42, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def rel_err(got, ref):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(got - ref)) / max(np.max(np.abs(ref)), 1e-30))
