"""GPTQ rounding for the int8 export (`train export --gptq ROWS`).

The int8 file holds each linear weight [N, K] as blocks of 32 along K, each with one
float16 scale (weights.py; the engine multiplies q * d).  Rounding every weight to its
nearest level (kernels.quantize_q8) treats the weights one by one.  A leg
warm-started from an int8 file moves most weights by less than half a level, so rounding
to the nearest level puts them back where they started and the leg's change is lost on
export (docs/MODEL.md, "Unfinished code and int8-aware steps").

GPTQ (Frantar et al. 2022, "Optimal Brain Quantization" applied column by column) rounds
the columns of W in order and moves each column's rounding error onto the columns not yet
rounded, weighted by the inverse of H = X X^T, the second moment of the layer's inputs on
calibration text: what the layer computes on such inputs is kept, not each weight.  Here
the columns go in the file's order, a block's scale is set (abs max / 127, as float16)
from the block's weights as the errors of the blocks before have left them, and a level is
never past +-127, so the file's format and the engine are unchanged.

Weights already on int8 levels (an imported int8 file's, every block exactly q * d) come
back as those levels, so importing and exporting again changes nothing.  Linear layers
the calibration text does not reach (the vision encoder's, the JEPA head's and the
fusion's image side: calibration is the text forward alone) are rounded to nearest, as
before.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..kernels import QK

DAMP = 0.01  # added to H's diagonal, as a share of its mean: keeps the inverse well made


def on_levels(w) -> tuple[np.ndarray, np.ndarray] | None:
    """(q, d) when every block of 32 of `w` [N, K] is exactly q * d for integers |q| <= 127
    and a float16 d, as the weights of an imported int8 file are; None otherwise.  Each
    block takes the finest such grid (the largest |q|), so a file rounded to nearest comes
    back as its own q and d, and a GPTQ-rounded one (whose largest |q| in a block may be
    under 127) as the same dequantized values."""
    b = np.asarray(w, dtype=np.float32).reshape(-1, QK).astype(np.float64)
    # a float model's first blocks are off the levels: say so after 8 blocks, not after
    # trying all 127 grids on every block of the weight
    if _levels(b[:8]) is None or (found := _levels(b)) is None:
        return None
    q, d = found
    return q.reshape(np.shape(w)), d.reshape(np.shape(w)[0], -1)


def _levels(b: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """on_levels for blocks b [n, 32] float64: (q [n, 32], d [n]) or None."""
    amax = np.abs(b).max(1)
    q = np.zeros(b.shape, dtype=np.int8)
    d = np.zeros(len(b), dtype=np.float16)
    todo = amax > 0
    for m in range(127, 0, -1):
        if not todo.any():
            break
        rows = np.flatnonzero(todo)
        dm = (amax[rows] / m).astype(np.float16).astype(np.float64)
        qm = np.rint(b[rows] / dm[:, None])
        ok = (dm > 0) & (np.abs(qm).max(1) <= 127) & np.all(qm * dm[:, None] == b[rows], axis=1)
        q[rows[ok]], d[rows[ok]] = qm[ok], dm[ok]
        todo[rows[ok]] = False
    return None if todo.any() else (q, d)


def gptq_q8(w, h, damp: float = DAMP) -> tuple[np.ndarray, np.ndarray]:
    """w [N, K] float, h [K, K] the inputs' second moment -> (q int8 [N, K], d float16
    [N, K / 32]) in the int8 file's layout.  Weights already on int8 levels (on_levels)
    come back as those levels."""
    W = torch.as_tensor(np.asarray(w), dtype=torch.float64).clone()
    H = torch.as_tensor(np.asarray(h), dtype=torch.float64).clone()
    n, k = W.shape
    if k % QK or H.shape != (k, k):
        raise ValueError(f"gptq_q8: weight {tuple(W.shape)} and H {tuple(H.shape)} do not fit "
                         f"blocks of {QK}")
    if (levels := on_levels(w)) is not None:
        return levels
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0  # an input never seen: its column is rounded to nearest
    H += damp * torch.mean(torch.diag(H)) * torch.eye(k, dtype=torch.float64)
    # the upper Cholesky factor of H^-1: row j holds how column j's error is spread
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    Q = torch.zeros((n, k), dtype=torch.int8)
    D = torch.zeros((n, k // QK), dtype=torch.float16)
    for g in range(0, k, QK):
        blk = W[:, g:g + QK].clone()
        err = torch.zeros_like(blk)
        d = (blk.abs().amax(1) / 127).half().double()
        inv = torch.where(d > 0, 1 / d, torch.zeros_like(d))
        u = U[g:g + QK, g:g + QK]
        for j in range(QK):
            col = blk[:, j]
            q = torch.clamp(torch.round(col * inv), -127, 127)
            e = (col - q * d) / u[j, j]
            blk[:, j + 1:] -= e[:, None] * u[j, j + 1:][None, :]
            Q[:, g + j] = q.to(torch.int8)
            err[:, j] = e
        D[:, g // QK] = d.half()
        W[:, g + QK:] -= err @ U[g:g + QK, g + QK:]
    return Q.numpy(), D.numpy()


def calibration_rows(corpus: Path, tok, seq_len: int, rows: int, seed: int = 29) -> np.ndarray:
    """`rows` token rows [rows, seq_len] of the training mixture (files, fill-in-the-middle,
    blocks, explain, repair), drawn as training draws them, from the corpus's training
    split: what the model's layers see."""
    from . import data as D
    from .corpus import read_jsonl

    if rows < 1:
        raise ValueError(f"GPTQ needs at least one calibration row, not {rows}")
    if not (Path(corpus) / "train.jsonl").is_file():
        raise ValueError(f"GPTQ calibrates on a corpus's training split: {corpus} has no "
                         f"train.jsonl (build one with `cromwell train corpus`, or pass --corpus)")
    texts = [(r["path"], r["text"]) for r in read_jsonl(Path(corpus) / "train.jsonl")]
    ids, _ = D.TextStream(texts, tok, seq_len, seed).batch(rows)
    return ids[:, :seq_len]


def input_moments(twin, names: list[str], rows: np.ndarray, batch: int = 4) -> dict:
    """H = sum of x x^T over every calibration token's input x to each linear layer in
    `names` (weight names, "X.weight"), float64; layers the text never reaches are left out."""
    modules = dict(twin.named_modules())
    hs: dict[str, torch.Tensor] = {}
    hooks = []

    def hook(name):
        def add(_mod, inp, _out):
            x = inp[0].detach().reshape(-1, inp[0].shape[-1]).double()
            hs[name] = hs.get(name, 0) + x.T @ x
        return add

    for name in names:
        mod = modules.get(name[:-len(".weight")])
        if isinstance(mod, torch.nn.Linear):
            hooks.append(mod.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            for i in range(0, len(rows), batch):
                twin(torch.as_tensor(rows[i:i + batch]), jepa=False)
    finally:
        for h in hooks:
            h.remove()
    return hs


def gptq_rounding(twin, rows: np.ndarray, log=print):
    """The rounding weights.quantize_tensors takes: GPTQ on the inputs each linear layer
    gets from the twin's text forward over `rows`; None (to nearest) for a layer the
    text does not reach."""
    from ..model import weights as W

    quantizable = W.quantized_names(twin.cfg)
    hs = input_moments(twin, quantizable, rows)
    log(f"gptq: {len(hs)} of {len(quantizable)} linear weights calibrated on "
        f"{rows.size:,} tokens, the rest rounded to nearest")
    return lambda name, a: gptq_q8(a, hs[name].numpy()) if name in hs else None
