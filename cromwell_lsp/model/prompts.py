"""Prompt formats, shared by training (training/tasks.py builds its examples with them)
and inference (the server and CromwellVLJEPA build their prompts with them), so the model
always sees at inference exactly the sequences it was trained on.

A prompt is a list of segments (kind, payload): "special" (a special token's name),
"text" (tokenized on its own: segment boundaries are token boundaries) or "image"
(vision tokens, attached through cross-attention: no text tokens).

  fim_spm   <fim_prefix> <fim_suffix> suffix <fim_middle> prefix   -> middle
            (the editor order: the prefix comes last, so typing appends tokens and the
            per-document KV cache stays valid)
  explain   <explain> code <fim_middle>                            -> explanation
  repair    <repair> broken code <fim_middle>                      -> fixed code
  image     <image> <fim_middle>                                   -> the code it shows
"""
from __future__ import annotations


def fim_spm(prefix: str, suffix: str, context: str = "") -> list:
    segs = [("special", "fim_prefix"), ("special", "fim_suffix")]
    if context:
        segs += [("text", context), ("special", "file_sep")]
    return segs + [("text", suffix), ("special", "fim_middle"), ("text", prefix)]


def fim_psm(prefix: str, suffix: str) -> list:
    return [("special", "fim_prefix"), ("text", prefix), ("special", "fim_suffix"),
            ("text", suffix), ("special", "fim_middle")]


def explain(code: str) -> list:
    return [("special", "explain"), ("text", code), ("special", "fim_middle")]


def repair(code: str) -> list:
    return [("special", "repair"), ("text", code), ("special", "fim_middle")]


def image_to_code() -> list:
    return [("special", "image"), ("image", None), ("special", "fim_middle")]


def encode(segments, tok, answer_from: int | None = None) -> tuple[list[int], list[int]]:
    """Token ids and a 0/1 mask (1 from segment `answer_from` on; all 1 when None)."""
    ids: list[int] = []
    mask: list[int] = []
    for i, (kind, payload) in enumerate(segments):
        if kind == "special":
            piece = [tok.special(payload)]
        elif kind == "text":
            piece = tok.encode(payload) if payload else []
        else:
            piece = []
        ids.extend(piece)
        mask.extend([1 if answer_from is None or i >= answer_from else 0] * len(piece))
    return ids, mask
