"""Generation on a real (random-weight) model with a real tokenizer: limits, streaming,
stop strings, seeds, prompts of every kind, and JEPA self-speculative decoding that
gives exactly the plain greedy tokens."""
import shutil
import threading

import numpy as np
import pytest

from cromwell_lsp.model import CromwellVLJEPA, GenerationConfig, GenerationStats
from cromwell_lsp.model import generation as G
from tests.model_helpers import TINY, random_image, random_twin

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def model(small_tokenizer, tmp_path_factory):
    from cromwell_lsp.training.model import export_safetensors

    tok, _ = small_tokenizer
    cfg = TINY.replace(vocab_size=tok.vocab_size, max_seq_len=256)
    path = tmp_path_factory.mktemp("gen") / "model.safetensors"
    export_safetensors(random_twin(cfg, seed=3), path, tokenizer_sha256=tok.sha256)
    shutil.copy(tok.path, path.with_name("tokenizer.json"))
    return CromwellVLJEPA.load(path)


def _ids(model, prompt, **kw):
    tok = model.tokenizer
    ids = tok.encode(prompt)
    stats = G.GenerationStats()
    out = list(G.generate_ids(model.engine, model.new_cache(), ids, GenerationConfig(**kw),
                              stop_ids=[tok.special("endoftext")], stats=stats))
    return out, stats


@pytest.mark.parametrize("prompt", ["def fibonacci(n):", "class Stack:\n    def", "for i in range("])
def test_speculative_greedy_equals_plain_greedy(model, prompt):
    plain, s_plain = _ids(model, prompt, max_tokens=24)
    spec, s_spec = _ids(model, prompt, max_tokens=24, speculative=True)
    assert spec == plain
    assert s_spec.drafted > 0 and 0.0 <= s_spec.acceptance <= 1.0
    assert s_plain.forward_calls == len(plain) or s_plain.stop_reason == "end_token"


def test_accepted_drafts_keep_the_output_and_save_forward_calls(model, monkeypatch):
    """Drafts that are right (here: the plain greedy continuation itself) are all accepted;
    the cache is cut correctly after each verification, so the tokens stay the same."""
    prompt = "def area(radius):"
    plain, _ = _ids(model, prompt, max_tokens=20)
    produced = []

    def oracle(engine, cache, z_pred, sampler):
        done = len(produced)  # g, the token just yielded, is already in produced
        return plain[done:done + len(z_pred)]

    monkeypatch.setattr(G, "_draft", oracle)
    tok = model.tokenizer
    stats = G.GenerationStats()
    for t in G.generate_ids(model.engine, model.new_cache(), tok.encode(prompt),
                            GenerationConfig(max_tokens=20, speculative=True),
                            stop_ids=[tok.special("endoftext")], stats=stats):
        produced.append(t)
    assert produced == plain
    assert stats.acceptance == 1.0 and stats.forward_calls < len(plain) // 2


def test_limits(model):
    out, stats = _ids(model, "x = ", max_tokens=5)
    assert len(out) <= 5 and stats.stop_reason in ("max_tokens", "end_token")
    out, stats = _ids(model, "x = ", max_tokens=50, deadline_s=0.0)
    assert len(out) <= 1 and stats.stop_reason in ("deadline", "end_token")
    cancel = threading.Event()
    cancel.set()
    out = list(G.generate_ids(model.engine, model.new_cache(), [5, 6], GenerationConfig(),
                              cancel=cancel))
    assert out == []


def test_streaming_matches_whole_text_and_no_special_token_is_emitted(model):
    whole = model.generate("import os\n", max_tokens=30)
    pieces = list(model.generate("import os\n", max_tokens=30, stream=True))
    assert "".join(pieces) == whole
    tok = model.tokenizer
    eot = tok.special("endoftext")
    banned = [i for i in tok.ids.values() if i != eot]
    for seed in range(5):  # sampled: every token the model likes, except the banned ones
        ids = list(G.generate_ids(model.engine, model.new_cache(), tok.encode("x = "),
                                  GenerationConfig(max_tokens=40,
                                                   sampling=G.SamplingParams(2.0, seed=seed)),
                                  stop_ids=[eot], banned_ids=banned))
        assert not any(tok.is_special(i) for i in ids)


def test_stop_strings(model):
    text = model.generate("def f():\n", max_tokens=40)
    if len(text) > 4:
        stop = text[2:4]
        cut = model.generate("def f():\n", max_tokens=40, stop=[stop])
        assert cut == text[:text.index(stop)]


def test_seeded_sampling_repeats(model):
    a = model.generate("x", max_tokens=12, temperature=1.0, seed=7)
    b = model.generate("x", max_tokens=12, temperature=1.0, seed=7)
    assert a == b


def test_complete_explain_and_images(model):
    stats = GenerationStats()
    middle = model.complete("def add(a, b):\n    ", "\n\nprint(add(1, 2))\n", max_tokens=8,
                            stats=stats)
    assert isinstance(middle, str) and stats.prefill_tokens > 5
    assert isinstance(model.explain("def f(x):\n    return x\n", max_tokens=8), str)
    code = model.generate_multimodal(random_image(32, 40), "", max_tokens=8)
    assert isinstance(code, str) and "<|" not in code


def test_empty_prompt_is_refused(model):
    with pytest.raises(ValueError, match="empty"):
        model.generate("")
