"""Token healing: the prompt's last token is backed off and the first generated tokens must
re-spell it; the shown text never contains it.  Checked on the real tokenizers (the test
BPE and the packaged one) and, end to end, on the packaged model."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cromwell_lsp.model.healing import LeadConstraint, heal_prompt
from cromwell_lsp.model.prompts import encode, fim_spm
from cromwell_lsp.model.sampling import Sampler, SamplingParams, TextStream
from cromwell_lsp.model.tokenizer import Tokenizer
from cromwell_lsp.model import DEFAULT_WEIGHTS

PACKAGED = Tokenizer(DEFAULT_WEIGHTS.parent / "tokenizer.json")


@pytest.mark.parametrize("text", ["def f(n):\n    return 'héllo' # ünï 日本 😀\n", "\t\r\n  x", ""])
def test_vocab_bytes_spell_every_encoding(text, small_tokenizer):
    for tok in (PACKAGED, small_tokenizer[0]):
        vocab = tok.vocab_bytes()
        assert len(vocab) == tok.vocab_size
        assert b"".join(vocab[i] for i in tok.encode(text)) == text.encode("utf-8")
        assert all(vocab[tok.special(name)] == b"" for name in ("endoftext", "fim_middle", "pad"))


def test_heal_backs_off_the_indentation_token():
    ids = encode(fim_spm("def add(a, b):\n    ", ""), PACKAGED)[0]
    healed, lead = heal_prompt(ids, PACKAGED)
    assert healed == ids[:-1] and lead == "\n    "
    # the backed-off prompt is the prompt of the prefix without that text
    assert healed == encode(fim_spm("def add(a, b):", ""), PACKAGED)[0]


def test_heal_keeps_special_endings_single_tokens_and_split_characters():
    ids = encode(fim_spm("", "x = 1\n"), PACKAGED)[0]  # empty prefix: ends with <fim_middle>
    assert heal_prompt(ids, PACKAGED) == (ids, "")
    one = PACKAGED.encode("x")
    assert heal_prompt(one, PACKAGED) == (one, "")
    vocab = PACKAGED.vocab_bytes()
    for text in ("𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "ꙮꙮ", "𓀀"):
        ids = PACKAGED.encode("s = '" + text)
        try:
            vocab[ids[-1]].decode("utf-8")
        except UnicodeDecodeError:  # the last token is the end of a split character
            assert heal_prompt(ids, PACKAGED) == (ids, "")
            break
    else:
        pytest.fail("no sample text ends in a split character; pick another")


@settings(max_examples=60, deadline=None)
@given(lead=st.sampled_from(["\n    ", "\n", "    ", " re", "(", "self.", "é", " 日"]),
       seed=st.integers(0, 2**31 - 1))
def test_constrained_tokens_spell_the_lead_then_run_free(lead, seed):
    rng = np.random.default_rng(seed)
    constraint = LeadConstraint(PACKAGED, lead)
    sampler = Sampler(SamplingParams(temperature=1.0, seed=seed), constraint=constraint)
    ids = []
    for _ in range(len(lead.encode()) + 3):
        ids.append(sampler(rng.normal(size=PACKAGED.vocab_size) * 5))
    spelled = b"".join(PACKAGED.vocab_bytes()[i] for i in ids)
    assert spelled.startswith(lead.encode()) and not constraint.active


@pytest.mark.parametrize("lead", ["\n    ", " re", "(", "é", "\n"])
def test_allowed_tokens_are_exactly_the_consistent_ones(lead):
    left = lead.encode()
    expect = [i for i, b in enumerate(PACKAGED.vocab_bytes())
              if b and (b.startswith(left) or left.startswith(b))]
    assert LeadConstraint(PACKAGED, lead).allowed().tolist() == expect


def test_greedy_under_the_constraint_takes_the_best_allowed_token():
    constraint = LeadConstraint(PACKAGED, "\n    ")
    logits = np.zeros(PACKAGED.vocab_size)
    logits[PACKAGED.encode("(")[0]] = 10.0  # the unconstrained favourite is not allowed
    allowed = constraint.allowed()
    logits[allowed[3]] = 5.0
    assert Sampler(constraint=constraint)(logits) == allowed[3]


def test_stream_drops_the_lead_and_stops_after_it():
    stream = TextStream(PACKAGED, ("\n",), lead="\n   ")
    pieces = [stream.push(t) for t in PACKAGED.encode("\n    return x\n    y")]
    assert stream.stopped and "".join(pieces) == " return x"


def test_completion_after_an_indent_is_healed_end_to_end(one_kernel_thread):
    """The packaged model completes an indented empty line: the prompt it sees ends before
    the indentation, and what the editor gets is code for that line, not the indentation
    again."""
    from cromwell_lsp.features.completion import Completer
    from cromwell_lsp.features.session import Sessions
    from cromwell_lsp.model import CromwellVLJEPA
    from cromwell_lsp.settings import Settings

    model = CromwellVLJEPA.load()
    completer = Completer(model, Sessions(model.new_cache, budget_bytes=64 << 20))
    text = "def add(a, b):\n    "
    settings = Settings(max_tokens=16)
    ids, lead = completer._prompt(text, "", settings)
    assert lead == "\n    " and ids[-1] == PACKAGED.encode("def add(a, b):")[-1]
    result = completer.complete("file:///a.py", text, len(text), settings)
    assert result.text and not result.text.startswith((" ", "\n"))



@settings(max_examples=40, deadline=None)
@given(lead=st.sampled_from(["\n    ", "    ", " re", "(", ""]), seed=st.integers(0, 2**31 - 1))
def test_an_avoided_first_choice_is_never_the_first_token_past_the_lead(lead, seed):
    """avoid_first (the Completer's alternatives): the tokens earlier runs took first past
    the lead are refused as the first token that writes past it, whatever the logits
    favour; the lead is still spelled, and the first choice past it is recorded."""
    rng = np.random.default_rng(seed)
    logits = [rng.normal(size=PACKAGED.vocab_size) * 5 for _ in range(len(lead.encode()) + 3)]
    vocab = PACKAGED.vocab_bytes()

    def run(avoid=()):
        constraint = LeadConstraint(PACKAGED, lead) if lead else None
        sampler = Sampler(SamplingParams(temperature=0.0), constraint=constraint,
                          avoid_first=avoid)
        ids = [sampler(row.copy()) for row in logits]
        assert b"".join(vocab[i] for i in ids).startswith(lead.encode())
        return ids, sampler.first_choice

    avoid = []
    for _ in range(3):
        ids, first = run(avoid)
        assert first is not None and first not in avoid
        at = ids.index(first)  # the tokens before it spell part of the lead, it goes past
        assert len(b"".join(vocab[i] for i in ids[:at])) <= len(lead.encode())
        assert len(b"".join(vocab[i] for i in ids[:at + 1])) > len(lead.encode())
        avoid.append(first)
    assert run()[1] == avoid[0]  # without a ban the first run again


def test_a_ban_spares_tokens_that_only_spell_the_lead_and_ends_at_the_first_choice():
    lead = "\n    "
    spell = PACKAGED.encode(lead)
    ret, other = PACKAGED.encode(" return")[0], PACKAGED.encode(" pass")[0]
    assert len(spell) == 1 and not LeadConstraint(PACKAGED, lead).passes(spell[0])
    logits = np.zeros(PACKAGED.vocab_size)
    logits[spell[0]], logits[ret], logits[other] = 10.0, 9.0, 8.0
    sampler = Sampler(constraint=LeadConstraint(PACKAGED, lead), avoid_first=[spell[0], ret])
    assert sampler(logits) == spell[0] and sampler.first_choice is None  # only the lead
    logits[spell[0]] = -10.0
    assert sampler(logits) == other and sampler.first_choice == other  # the favourite refused
    assert sampler(logits) == ret  # past the first choice nothing is refused
