"""The model shipped in the package: it loads with no path, matches its tokenizer, keeps
its prompts inside the context it was trained on, and the editor features on it leave
files that parse (a suggestion that would break a parsing file is never offered)."""
import ast
import dataclasses
from pathlib import Path

import pytest

from cromwell_lsp.features import actions
from cromwell_lsp.features.session import Session
from cromwell_lsp.model import DEFAULT_WEIGHTS, CromwellVLJEPA
from cromwell_lsp.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo" / "geometry.py"


@pytest.fixture(scope="module")
def shipped(one_kernel_thread):
    return CromwellVLJEPA.load()


def test_the_packaged_model_is_within_the_size_limit():
    folder = DEFAULT_WEIGHTS.parent
    total = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    assert DEFAULT_WEIGHTS.exists() and total <= 64 << 20


def test_it_loads_without_a_path(shipped):
    assert shipped.tokenizer is not None and shipped.config.arch == "vljepa"
    assert shipped.config.max_seq_len == 512  # the rows it was trained on
    assert shipped.screenshot_side == 96
    text = shipped.generate("def add(a, b):\n    return", max_tokens=8)
    assert isinstance(text, str) and "<|" not in text


@pytest.mark.parametrize("kind, line", [("body", 8), ("docstring", 12)])
def test_actions_on_the_shipped_model_keep_the_file_parsing(shipped, kind, line):
    text = DEMO.read_text(encoding="utf-8")
    found = [a for a in actions.list_actions(text, line, line) if a.kind == kind]
    assert found, f"no {kind} action at line {line}"
    settings = dataclasses.replace(Settings(), max_tokens=48)
    edit = actions.resolve(shipped, Session(shipped.new_cache()), found[0], text, settings)
    if edit is not None:
        ast.parse(text[:edit.start] + edit.text + text[edit.end:])
