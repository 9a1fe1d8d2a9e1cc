"""The PyTorch twin of the inference engine (cromwell_lsp/model/): the same model, the same
tensor names (state_dict keys == weights.fp32_tensors names), the same math, written for
training: a batch of full sequences in, logits, JEPA predictions and their targets out, no
cache.  nanoGPT's shape: small modules, a block is `x + attn(norm(x))`, `x + mlp(norm(x))`.

The rules that make the engine exact with a KV cache hold here by construction: every
per-token path is causal; the image->text attention reads only the prompt span
[p0, p1) and tokens before p0 do not read the image (see model/fusion.py).

Dimension letters: B batch, T tokens, H heads, Hkv key/value heads, D head size, d model
width, dv vision width, J joint width, V vocabulary, N vision tokens, Gh, Gw grid.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..model import weights as W
from ..model.config import ModelConfig
from ..model.reading import N_CLASSES
from ..model.vision import interp_matrix


# ---- building blocks ------------------------------------------------------------------
class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(dim)), eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def _linear(n_in: int, n_out: int) -> nn.Linear:
    return nn.Linear(n_in, n_out, bias=False)


class MLP(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, d: int, ffn: int):
        super().__init__()
        self.w1, self.w3, self.w2 = _linear(d, ffn), _linear(d, ffn), _linear(ffn, d)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def rope(x, theta: float):
    """Rotary embedding on x [B, T, H, D], adjacent pairs (2i, 2i+1), positions 0..T-1."""
    B, T, H, D = x.shape
    inv = theta ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]  # (T, D/2)
    cos, sin = ang.cos().to(x.dtype)[:, None, :], ang.sin().to(x.dtype)[:, None, :]
    a, b = x[..., 0::2], x[..., 1::2]  # (B, T, H, D/2)
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).reshape(B, T, H, D)


def attend(q, k, v, mask=None):
    """q [B, Tq, H, D], k, v [B, Tk, Hkv, D]; mask [Tq, Tk] or [B, 1, Tq, Tk] (True = seen).
    Query head h reads kv head h // (H / Hkv).  Returns [B, Tq, H, D]."""
    group = q.shape[2] // k.shape[2]
    k, v = k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                       attn_mask=mask)  # (B, H, Tq, D)
    return o.transpose(1, 2)


class Attention(nn.Module):
    """wq/wk/wv/wo with queries from width d_q and keys/values from width d_kv."""

    def __init__(self, d_q, d_kv, heads, kv_heads, head_dim, rope_theta=None):
        super().__init__()
        self.wq, self.wk = _linear(d_q, heads * head_dim), _linear(d_kv, kv_heads * head_dim)
        self.wv, self.wo = _linear(d_kv, kv_heads * head_dim), _linear(heads * head_dim, d_q)
        self.heads, self.kv_heads, self.head_dim, self.theta = heads, kv_heads, head_dim, rope_theta

    def split(self, x, src):
        q = self.wq(x).unflatten(-1, (self.heads, self.head_dim))  # (B, T, H, D)
        k = self.wk(src).unflatten(-1, (self.kv_heads, self.head_dim))  # (B, N, Hkv, D)
        v = self.wv(src).unflatten(-1, (self.kv_heads, self.head_dim))
        return q, k, v

    def forward(self, x, src=None, mask=None):
        """Self-attention with RoPE under `mask` (causal_mask's, which causal_stack makes)
        when src is None, else cross-attention to src."""
        q, k, v = self.split(x, x if src is None else src)
        if src is None:
            q, k = rope(q, self.theta), rope(k, self.theta)
        return self.wo(attend(q, k, v, mask).flatten(-2))


def causal_mask(T: int, keep=None, device=None):
    """The self-attention mask [T, T] (True = seen), causal; with keep [B, T] (True = a
    real token) [B, 1, T, T], where the others (left padding) are seen by no token but
    themselves, so a padded row attends as it would alone (RoPE scores depend on
    distances only).  Made once per forward and shared by every layer."""
    mask = torch.ones(T, T, dtype=torch.bool, device=device).tril()
    if keep is None:
        return mask
    eye = torch.eye(T, dtype=torch.bool, device=device)
    return (mask & (keep[:, None, :] | eye))[:, None]


def causal_stack(layers, x, mask=None):
    """x [B, T, d] through causal Blocks, all under one mask: the caller's (causal_mask's),
    else the plain causal one, made here once rather than in every layer."""
    if mask is None:
        mask = causal_mask(x.shape[1], None, x.device)
    for layer in layers:
        x = layer(x, mask)
    return x


class Block(nn.Module):
    def __init__(self, d, heads, kv_heads, ffn, rope_theta, eps):
        super().__init__()
        self.attn_norm = RMSNorm(d, eps)
        self.attn = Attention(d, d, heads, kv_heads, d // heads, rope_theta)
        self.ffn_norm, self.ffn = RMSNorm(d, eps), MLP(d, ffn)

    def forward(self, x, mask=None):
        x = x + self.attn(self.attn_norm(x), mask=mask)
        return x + self.ffn(self.ffn_norm(x))


# ---- vision encoder -------------------------------------------------------------------
class PatchEmbed(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(c_out, 4, 4, c_in))
        self.bias = nn.Parameter(torch.zeros(c_out))

    def forward(self, x):
        B, H, Wd, C = x.shape  # H, W multiples of 4
        p = x.reshape(B, H // 4, 4, Wd // 4, 4, C).permute(0, 1, 3, 2, 4, 5)
        return p.flatten(-3) @ self.weight.flatten(1).T + self.bias  # (B, Gh, Gw, P)


class DWConv(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.zeros(3, 3, c)), nn.Parameter(torch.zeros(c))

    def forward(self, x):  # x (B, Gh, Gw, E)
        w = self.weight.permute(2, 0, 1).unsqueeze(1)  # (E, 1, 3, 3)
        y = F.conv2d(x.permute(0, 3, 1, 2), w, self.bias, padding=1, groups=x.shape[-1])
        return y.permute(0, 2, 3, 1)


class MBConv(nn.Module):
    def __init__(self, c, expand, eps):
        super().__init__()
        self.norm = RMSNorm(c, eps)
        self.expand, self.dw, self.project = _linear(c, c * expand), DWConv(c * expand), _linear(c * expand, c)

    def forward(self, x):
        return x + self.project(F.silu(self.dw(F.silu(self.expand(self.norm(x))))))


class WindowBlock(nn.Module):
    def __init__(self, d, heads, ffn, window, eps):
        super().__init__()
        self.attn_norm = RMSNorm(d, eps)
        self.attn = Attention(d, d, heads, heads, d // heads)
        self.ffn_norm, self.ffn = RMSNorm(d, eps), MLP(d, ffn)
        self.window = window

    def forward(self, x):  # (B, Gh, Gw, dv)
        x = x + self.attn.wo(self.window_attention(self.attn_norm(x)).flatten(-2))
        return x + self.ffn(self.ffn_norm(x))

    def window_attention(self, x):
        """Each token attends to its ws x ws window (edge windows smaller, as the kernel)."""
        B, gh, gw, _ = x.shape
        ws = self.window
        q, k, v = self.attn.split(x, x)  # (B, Gh, Gw, H, D)
        ph, pw = -gh % ws, -gw % ws
        valid = F.pad(torch.ones(gh, gw, dtype=torch.bool, device=x.device), (0, pw, 0, ph))
        nh, nw = (gh + ph) // ws, (gw + pw) // ws

        def windows(t):  # (B, Gh, Gw, ...) -> (B * nh * nw, ws * ws, ...)
            t = F.pad(t, (0, 0, 0, 0, 0, pw, 0, ph)) if t.dim() == 5 else t
            t = t.reshape(-1, nh, ws, nw, ws, *t.shape[3:]).transpose(2, 3)
            return t.reshape(-1, ws * ws, *t.shape[5:])

        keep = windows(valid[None])  # (nh * nw, ws * ws)
        mask = keep[:, None, None, :].repeat(B, 1, 1, 1)  # (B * nW, 1, 1, ws * ws)
        o = attend(windows(q), windows(k), windows(v), mask)  # (B * nW, ws * ws, H, D)
        o = o.reshape(B, nh, nw, ws, ws, *o.shape[2:]).transpose(2, 3)
        return o.reshape(B, nh * ws, nw * ws, *o.shape[5:])[:, :gh, :gw]


class VisionEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        eps, P, dv, G = cfg.norm_eps, cfg.patch_dim, cfg.vision_dim, cfg.pos_grid
        self.patch_embed = PatchEmbed(cfg.image_channels, P)
        self.mbconv = nn.ModuleList(MBConv(P, cfg.mbconv_expand, eps) for _ in range(cfg.mbconv_blocks))
        self.proj = _linear(P, dv)
        self.pos_embed = nn.Parameter(torch.zeros(G, G, dv))
        self.blocks = nn.ModuleList(WindowBlock(dv, cfg.vision_heads, cfg.vision_ffn_dim,
                                                cfg.window_size, eps) for _ in range(cfg.vision_layers))
        self.norm = RMSNorm(dv, eps)
        self.read = nn.Linear(dv, N_CLASSES)  # the character under each patch (align's reading loss)

    def pos(self, gh, gw):
        G = self.pos_embed.shape[0]
        if (gh, gw) == (G, G):
            return self.pos_embed
        ry = torch.as_tensor(interp_matrix(gh, G), dtype=self.pos_embed.dtype)
        rx = torch.as_tensor(interp_matrix(gw, G), dtype=self.pos_embed.dtype)
        return torch.einsum("yi,ijc,xj->yxc", ry, self.pos_embed, rx)

    def forward(self, image, strip=None):
        """image [B, H, W, C] float -> vision tokens [B, N, dv] (row-major grid).
        strip (GH, rows0): image b is rows rows0[b].. of a GH-row grid as wide as it is
        (strips of a larger canvas, for training on the parts that hold text); its
        positions are those rows of the whole grid's."""
        B, H, Wd, _ = image.shape
        x = F.pad(image, (0, 0, 0, -Wd % 4, 0, -H % 4))
        x = self.patch_embed(x)  # (B, Gh, Gw, P)
        for block in self.mbconv:
            x = block(x)
        gh, gw = x.shape[1], x.shape[2]
        if strip is None:
            pos = self.pos(gh, gw)  # (Gh, Gw, dv)
        else:
            whole = self.pos(strip[0], gw)
            pos = torch.stack([whole[r:r + gh] for r in strip[1]])  # (B, Gh, Gw, dv)
        x = self.proj(x) + pos  # (B, Gh, Gw, dv)
        for block in self.blocks:
            x = block(x)
        return self.norm(x).flatten(1, 2)


# ---- language encoder, fusion, heads --------------------------------------------------
class LanguageEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.ffn_dim,
                                          cfg.rope_theta, cfg.norm_eps) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)

    def forward(self, tokens, mask=None):  # (B, T) -> (B, T, d)
        return self.norm(causal_stack(self.layers, self.tok_embeddings(tokens), mask))


class FusionBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, dv, eps = cfg.d_model, cfg.vision_dim, cfg.norm_eps
        self.i2t_norm, self.i2t_text_norm = RMSNorm(dv, eps), RMSNorm(d, eps)
        self.i2t = Attention(dv, d, cfg.vision_heads, cfg.vision_heads, cfg.vision_head_dim)
        self.t2i_norm, self.t2i_vision_norm = RMSNorm(d, eps), RMSNorm(dv, eps)
        self.t2i = Attention(d, dv, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim)
        self.ffn_norm, self.ffn = RMSNorm(d, eps), MLP(d, cfg.fusion_ffn_dim)

    def forward(self, h, v, span):
        if v is not None:
            p0, p1 = span
            v = v + self.i2t(self.i2t_norm(v), self.i2t_text_norm(h[:, p0:p1]))
            sees = (torch.arange(h.shape[1], device=h.device) >= p0).to(h.dtype)[:, None]
            h = h + self.t2i(self.t2i_norm(h), self.t2i_vision_norm(v)) * sees
        return h + self.ffn(self.ffn_norm(h)), v


class Fusion(nn.Module):
    """Blocks named fusion.0, fusion.1, ... and the final fusion.norm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n = cfg.fusion_layers
        for i in range(self.n):
            self.add_module(str(i), FusionBlock(cfg))
        if self.n:
            self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)

    def forward(self, h, v, span):
        for i in range(self.n):
            h, v = getattr(self, str(i))(h, v, span)
        return self.norm(h) if self.n else h


class Joint(nn.Module):
    """Projections into the joint space, and the retrieval metric pooled vectors are
    compared by: whiten @ (mean - center), a fixed affine map (buffers, not trained) set
    from the text side's statistics (align.whitening); the identity until then."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        J = cfg.joint_dim
        self.text, self.vision = _linear(cfg.d_model, J), _linear(cfg.vision_dim, J)
        self.register_buffer("center", torch.zeros(J))
        self.register_buffer("whiten", torch.eye(J))

    def metric(self, m):  # pooled (B, J) -> (B, J)
        return (m - self.center) @ self.whiten.T


class Predictor(nn.Module):
    def __init__(self, J, hidden, eps):
        super().__init__()
        self.norm = RMSNorm(J, eps)
        self.w1, self.w3, self.w2 = _linear(J, hidden), _linear(J, hidden), _linear(hidden, J)

    def forward(self, c):
        x = self.norm(c)
        return c + self.w2(F.silu(self.w1(x)) * self.w3(x))


class JEPAHead(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        J = cfg.joint_dim
        self.layers = nn.ModuleList(Block(J, cfg.jepa_heads, cfg.jepa_heads, cfg.jepa_ffn_dim,
                                          cfg.rope_theta, cfg.norm_eps) for _ in range(cfg.jepa_layers))
        self.norm = RMSNorm(J, cfg.norm_eps)
        self.pred = nn.ModuleList(Predictor(J, cfg.jepa_pred_dim, cfg.norm_eps) for _ in range(cfg.n_future))

    def forward(self, z, mask=None):  # (B, T, J) -> (n_future, B, T, J)
        c = self.norm(causal_stack(self.layers, z, mask))
        return torch.stack([p(c) for p in self.pred])


class ARHead(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.in_proj = _linear(cfg.joint_dim, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg.d_model, cfg.ar_heads, cfg.ar_kv_heads, cfg.ar_ffn_dim,
                                          cfg.rope_theta, cfg.norm_eps) for _ in range(cfg.ar_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)

    def forward(self, z, mask=None):  # (B, T, J) -> (B, T, d)
        return self.norm(causal_stack(self.layers, self.in_proj(z), mask))


# ---- the model ------------------------------------------------------------------------
@dataclass
class TwinOutput:
    logits: torch.Tensor  # (B, T, V)
    preds: torch.Tensor | None = None  # (n_future, B, T, J): predictions of z[t + k]
    z: torch.Tensor | None = None  # (B, T, J): joint states (targets, shifted by k)
    vision: torch.Tensor | None = None  # (B, N, dv): the image's vision tokens (before fusion)


class CromwellTwin(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.lang = LanguageEncoder(cfg)
        if cfg.arch == "vljepa":
            self.vision, self.fusion, self.joint = VisionEncoder(cfg), Fusion(cfg), Joint(cfg)
            self.jepa, self.ar = JEPAHead(cfg), ARHead(cfg)
        self.output = _linear(cfg.d_model, cfg.vocab_size)

    def forward(self, tokens, image=None, image_span=None, jepa=True, keep=None) -> TwinOutput:
        """tokens [B, T]; image [B, H, W, C] float (model/vision.preprocess scale) read by
        the prompt span image_span = (p0, p1) (default: all T tokens); keep [B, T] bool,
        False on left padding no real token may see (causal_mask)."""
        mask = causal_mask(tokens.shape[1], keep, tokens.device)  # once, for every layer
        h = self.lang(tokens, mask)  # (B, T, d)
        if self.cfg.arch == "llama":
            return TwinOutput(self.output(h))
        v = self.vision(image) if image is not None else None  # (B, N, dv)
        span = image_span or (0, tokens.shape[1])
        z = self.joint.text(self.fusion(h, v, span))  # (B, T, J)
        logits = self.output(self.ar(z, mask))
        return TwinOutput(logits, self.jepa(z, mask) if jepa else None, z, v)

    def embed_image(self, image):  # (B, H, W, C) -> (B, J), unit length
        return self.pool_image(self.vision(image))

    def pool_image(self, v):  # vision tokens (B, N, dv) -> (B, J), unit length
        m = _mean(v, self.joint.vision)
        with torch.autocast(v.device.type, enabled=False):
            return F.normalize(self.joint.metric(m), dim=-1)

    def embed_text(self, tokens, mask=None):  # (B, T) [, (B, T) 1 = counted] -> (B, J)
        m = self.text_mean(tokens, mask)  # the language side under the caller's autocast
        with torch.autocast(tokens.device.type, enabled=False):
            return F.normalize(self.joint.metric(m), dim=-1)

    def text_mean(self, tokens, mask=None):  # the text side's mean joint state, before the metric
        return _mean(self.fusion(self.lang(tokens), None, None), self.joint.text, mask)


def _mean(states, project, mask=None):
    """The joint projection of states averaged over tokens (those with mask 1), computed
    in fp32 at least, also under bf16 autocast: in bf16 the screenshots' pooled vectors
    were indistinguishable (cosines within 1e-4 of each other) and the contrastive loss
    sat at chance."""
    with torch.autocast(states.device.type, enabled=False):
        z = project(states.to(torch.promote_types(states.dtype, torch.float32)))
        if mask is None:
            return z.mean(1)
        m = mask[..., None].to(z.dtype)
        return (z * m).sum(1) / m.sum(1).clamp_min(1.0)


def jepa_loss(preds, z, step_weights):
    """Weighted MSE between the prediction of step k at t and the (detached) z[t + k],
    relative to the targets' variance over the batch's tokens (also detached): 1.0 is what
    predicting the mean z would cost.  Unnormalised, the loss grew with the scale of z
    (from 0.2 to 7 in 400 steps of the tiny run) until it outweighed the LM loss, and its
    cheapest fix is to shrink or flatten z, which is the collapse the LM must avoid."""
    total = preds.new_zeros(())
    for k, w in enumerate(step_weights, start=1):
        if z.shape[1] > k:
            target = z[:, k:].detach()
            var = target.reshape(-1, target.shape[-1]).var(0).mean().clamp_min(1e-6)
            total = total + w * F.mse_loss(preds[k - 1][:, :-k], target) / var
    return total / sum(step_weights)


# ---- init and export ------------------------------------------------------------------
_OUT_PROJ = (".wo.weight", ".w2.weight", ".project.weight")


def init_order(model: CromwellTwin) -> list[tuple[str, nn.Parameter]]:
    """Parameters in the order random draws fill them: the reading head last, so every
    other part of a seed's model is what it was before the head existed."""
    params = list(model.named_parameters())
    return ([x for x in params if not x[0].startswith("vision.read.")]
            + [x for x in params if x[0].startswith("vision.read.")])


@torch.no_grad()
def random_init(cfg: ModelConfig, seed: int = 0) -> CromwellTwin:
    """A twin with GPT-2-style weights: N(0, 0.02), output projections scaled by
    1/sqrt(2 * layers), norms 1, biases 0, except the token embeddings, N(0, 1): with
    embeddings of 0.02 the residual stream is soon ruled by the constant (unigram)
    direction the blocks learn first, every RMSNorm downstream divides the token's own
    signal away, and the VL-JEPA stack (language -> fusion -> joint -> AR) stayed at the
    unigram loss for 2M tokens; unit embeddings keep each token distinct until attention
    has learned to use them.  Deterministic for a seed."""
    model = CromwellTwin(cfg)
    gen = torch.Generator().manual_seed(seed)
    depth = max(1, cfg.n_layers + cfg.fusion_layers + cfg.ar_layers)
    for name, p in init_order(model):
        if name.endswith("norm.weight"):
            p.fill_(1.0)
        elif name == "lang.tok_embeddings.weight":
            p.copy_(torch.randn(p.shape, generator=gen))
        elif name == "vision.patch_embed.weight":  # pixels in [0, 1]: unit gain, so the
            fan_in = p[0].numel()                   # picture is not lost under pos_embed
            p.copy_(torch.randn(p.shape, generator=gen) / fan_in ** 0.5)
        elif name.endswith(".bias"):
            p.zero_()
        else:
            std = 0.02 / (2 * depth) ** 0.5 if name.endswith(_OUT_PROJ) else 0.02
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


def load_state(model: CromwellTwin, state: dict) -> CromwellTwin:
    """load_state_dict, where a checkpoint written before the retrieval metric and the
    reading head existed keeps the model's own (the identity metric it was trained with,
    an untrained head)."""
    own = model.state_dict()
    later = [k for part in W.later_parts(model.cfg) for k in part if k in own]
    state = {**{k: own[k] for k in later}, **state}
    model.load_state_dict(state)
    return model


def state_arrays(model: CromwellTwin) -> dict[str, np.ndarray]:
    return {k: v.detach().to("cpu", torch.float32).contiguous().numpy()
            for k, v in model.state_dict().items()}


def export_safetensors(model: CromwellTwin, path, quant: str = "f32", tokenizer_sha256: str = "",
                       extra: dict[str, str] | None = None, rounding=None):
    """Write the twin's weights for the engine (names checked against the config);
    `rounding`: the int8 variant's, as weights.quantize_tensors (gptq.gptq_rounding)."""
    W.save_model(path, model.cfg, state_arrays(model), quant, tokenizer_sha256, extra, rounding)
