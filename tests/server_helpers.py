"""Shared by the server tests: a real random-weight tiny model with the real small BPE
tokenizer, written once per test session to a temp folder (weights + tokenizer.json)."""
import shutil

import pytest

from tests.model_helpers import TINY, random_twin

MAX_SEQ_LEN = 1024


@pytest.fixture(scope="session")
def tiny_model_path(small_tokenizer, tmp_path_factory):
    pytest.importorskip("torch")
    from cromwell_lsp.training.model import export_safetensors

    tok, _ = small_tokenizer
    cfg = TINY.replace(vocab_size=tok.vocab_size, max_seq_len=MAX_SEQ_LEN)
    path = tmp_path_factory.mktemp("server-model") / "model.safetensors"
    export_safetensors(random_twin(cfg, seed=5), path, tokenizer_sha256=tok.sha256)
    shutil.copy(tok.path, path.with_name("tokenizer.json"))
    return path


@pytest.fixture(scope="session")
def tiny_model(tiny_model_path):
    from cromwell_lsp.model import CromwellVLJEPA

    return CromwellVLJEPA.load(tiny_model_path)
