"""`cromwell train tokenizer`: a byte-level BPE for Python source, trained with HF
tokenizers on the corpus' training split, with Cromwell's special tokens at fixed ids
(model/tokenizer.py lists them) and an exact round trip checked on every corpus file.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..model.tokenizer import SPECIAL_TOKENS, Tokenizer
from .corpus import read_jsonl


def train(corpus: Path, out: Path, vocab_size: int = 16384, max_bytes: int = 64 << 20,
          log=print) -> dict:
    """Train on up to `max_bytes` of corpus/train.jsonl; write `out` (tokenizer.json);
    verify the round trip on every train and validation file.  Returns a report."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    def texts():
        seen = 0
        for rec in read_jsonl(corpus / "train.jsonl"):
            seen += len(rec["text"])
            if seen > max_bytes:
                return
            yield rec["text"]

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2,
                                  special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    log(f"training a {vocab_size}-token BPE on {corpus / 'train.jsonl'}")
    tok.train_from_iterator(texts(), trainer)
    out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(out))
    return verify(out, corpus, log)


def verify(path: Path, corpus: Path, log=print) -> dict:
    """Round-trip every corpus file; report chars per token per split."""
    tok = Tokenizer(path)
    report = {"path": str(path), "vocab_size": tok.vocab_size, "sha256": tok.sha256}
    for split in ("train", "val"):
        files = chars = ntok = 0
        batch: list[str] = []

        def flush():
            nonlocal ntok
            encoded = tok.encode_batch(batch)
            for text, ids, back in zip(batch, encoded, tok.decode_batch(encoded)):
                if back != text:
                    raise AssertionError(f"round trip failed on a {split} file")
                ntok += len(ids)
            batch.clear()

        for rec in read_jsonl(corpus / f"{split}.jsonl"):
            batch.append(rec["text"])
            files += 1
            chars += len(rec["text"])
            if len(batch) == 256:
                flush()
        flush()
        report[f"{split}_files"] = files
        report[f"{split}_chars_per_token"] = round(chars / max(ntok, 1), 3)
    log(json.dumps(report))
    return report
