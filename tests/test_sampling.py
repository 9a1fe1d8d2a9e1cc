"""Sampling and streaming text: greedy, seeded draws that follow the distribution, top-k
and top-p limits, banned special tokens; stream pieces that never split a character or
show part of a stop string."""
import numpy as np
import pytest

from cromwell_lsp.model.sampling import Sampler, SamplingParams, TextStream


def test_greedy_and_banned():
    logits = np.array([0.1, 3.0, 2.0, -1.0], dtype=np.float32)
    assert Sampler()(logits) == 1
    assert Sampler(banned=[1])(logits) == 2
    assert Sampler(SamplingParams(temperature=1.0, top_k=1, seed=3))(logits) == 1


def test_seeded_draws_repeat_and_follow_softmax():
    logits = np.log(np.array([0.5, 0.3, 0.2]))
    draws = [Sampler(SamplingParams(temperature=1.0, seed=11))(logits) for _ in range(3)]
    assert len(set(draws)) == 1
    s = Sampler(SamplingParams(temperature=1.0, seed=0))
    counts = np.bincount([s(logits) for _ in range(20000)], minlength=3) / 20000
    assert np.allclose(counts, [0.5, 0.3, 0.2], atol=0.015)


def test_top_p_and_top_k_limits():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    s = Sampler(SamplingParams(temperature=1.0, top_p=0.75, seed=1))
    assert set(s(logits) for _ in range(2000)) == {0, 1}
    s = Sampler(SamplingParams(temperature=1.0, top_k=3, seed=1))
    assert set(s(logits) for _ in range(2000)) == {0, 1, 2}


def test_invalid_params():
    for bad in (dict(temperature=-1), dict(top_k=-2), dict(top_p=0.0), dict(top_p=1.5)):
        with pytest.raises(ValueError):
            SamplingParams(**bad)


def _stream(tok, text, stops):
    stream = TextStream(tok, stops)
    pieces = [stream.push(t) for t in tok.encode(text)]
    pieces.append(stream.flush() if not stream.stopped else "")
    return pieces, stream


def test_stream_pieces_are_whole_characters(small_tokenizer):
    tok, _ = small_tokenizer
    text = "héllo wörld 😀 ∑ naïve\n"
    pieces, _ = _stream(tok, text, ())
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)


def test_stream_stops_and_never_shows_part_of_a_stop(small_tokenizer):
    tok, _ = small_tokenizer
    pieces, stream = _stream(tok, "return x\n\ndef next_one():\n    pass\n", ["\ndef "])
    assert stream.stopped and "".join(pieces) == "return x\n"
    assert not any(p.endswith("\nde") or p.endswith("\nd") for p in pieces[:-1])
