"""`cromwell train all` end to end, as a user runs it: one command from an empty folder
through corpus (decontaminated), tokenizer, training, export, shipping and evaluation, at
trial sizes (the standard library's first files, a 600-token vocabulary, four steps, four
cases per evaluation sample); run again, it skips what is done and resumes the run."""
import json
import subprocess
import sys

import pytest

pytest.importorskip("torch")

from cromwell_lsp.model import CromwellVLJEPA  # noqa: E402
from cromwell_lsp.model.tokenizer import Tokenizer  # noqa: E402


def _train_all(tmp, *extra):
    cmd = [sys.executable, "-m", "cromwell_lsp", "train", "all", "--config", "tiny",
           "--stdlib-only", "--max-files", "200", "--vocab", "600", "--steps", "4",
           "--seq-len", "64", "--batch-size", "2", "--image-every", "2", "--image-batch", "2",
           "--image-side", "32", "--eval-every", "1000", "--budget-minutes", "0",
           "--eval-cases", "4", "--workers", "1", "--out", str(tmp / "run"),
           "--corpus", str(tmp / "corpus"), "--tokenizer", str(tmp / "tokenizer.json"),
           "--ship", "--to", str(tmp / "ship"), "--json", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout), proc.stderr


def test_train_all_from_an_empty_folder_to_a_shipped_model_and_again(tmp_path):
    summary, log = _train_all(tmp_path)
    assert list(summary["times_s"]) == ["corpus", "tokenizer", "train", "export", "ship", "eval"]
    assert summary["steps"] == 4 and summary["tokens"] > 0

    manifest = json.loads((tmp_path / "corpus" / "manifest.json").read_text())
    assert manifest["max_files_per_source"] == 200
    assert [(s["name"], s["files"]) for s in manifest["sources"]] == [("stdlib", 200)]
    assert manifest["humaneval_ngrams_indexed"] > 1000  # decontamination ran against HumanEval
    assert manifest["train_files"] > 100 and manifest["val_files"] > 0

    tok = Tokenizer(tmp_path / "tokenizer.json")
    assert tok.vocab_size == 600
    # the export and the shipped copy load in the engine, matching the twin
    assert summary["export"]["f32_rel_err"] < 1e-4 and summary["export"]["int8_rel_err"] < 0.1
    assert sorted(p.name for p in (tmp_path / "ship").iterdir()) == \
        ["model-int8.safetensors", "tokenizer.json"]
    shipped = CromwellVLJEPA.load(tmp_path / "ship" / "model-int8.safetensors")
    assert shipped.tokenizer.sha256 == tok.sha256
    assert isinstance(shipped.generate("def f(", max_tokens=4), str)

    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert report["cases"] == 4 and report["step"] == 4
    assert report["retrieval"]["candidates"] == 4
    assert report["completions_wide"]["starts"] == 4
    for part in ("trained", "untrained", "unigram", "engine"):
        assert report[part]["val_lm"] > 0 and report[part]["val_bpb_stdlib"] > 0, part
    assert summary["completions_parse"].endswith("/10")
    assert summary["completions_editor_parse"].endswith("/10")
    assert summary["completions_editor_useful"].endswith("/10")

    # again: the corpus and tokenizer are there, the run is finished; nothing is redone
    corpus_before = (tmp_path / "corpus" / "train.jsonl").stat().st_mtime_ns
    again, _ = _train_all(tmp_path)
    assert list(again["times_s"]) == ["train", "export", "ship", "eval"]
    assert again["steps"] == 4 and again["tokens"] == summary["tokens"]
    assert (tmp_path / "corpus" / "train.jsonl").stat().st_mtime_ns == corpus_before


@pytest.mark.parametrize("flag", ["--max-files", "--eval-cases"])
def test_trial_sizes_below_one_are_a_clear_error(tmp_path, capsys, flag):
    from cromwell_lsp import cli

    assert cli.main(["train", "all", "--out", str(tmp_path / "run"), "--corpus",
                     str(tmp_path / "corpus"), flag, "0"]) == 2
    assert f"{flag} must be 1 or more" in capsys.readouterr().err
    assert not (tmp_path / "corpus").exists()


def test_import_and_export_find_the_shipped_tokenizer_without_a_tokenizer_build(
        tmp_path, monkeypatch, capsys):
    """The MODEL.md recipes start from the shipped model; on a checkout with no
    runs/tokenizer.json, `train import` takes the tokenizer beside the weights and
    `train export` the packaged one (saying so), and the export's model is the import's."""
    from cromwell_lsp import cli
    from cromwell_lsp.model import DEFAULT_WEIGHTS

    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "import", "--weights", str(DEFAULT_WEIGHTS),
                     "--out", "runs/warm"]) == 0
    imported = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert imported["rel_err"] < 0.05 and imported["step"] > 0
    assert cli.main(["train", "export", "--out", "runs/warm", "--to", "runs/warm/export",
                     "--int8-only"]) == 0
    captured = capsys.readouterr()
    assert "no runs/tokenizer.json; using" in captured.err
    assert json.loads(captured.out.strip().splitlines()[-1])["int8_rel_err"] < 0.05
    packaged = Tokenizer(DEFAULT_WEIGHTS.parent / "tokenizer.json")
    assert Tokenizer(tmp_path / "runs/warm/export/tokenizer.json").sha256 == packaged.sha256
    model = CromwellVLJEPA.load(tmp_path / "runs/warm/export/model-int8.safetensors")
    shipped = CromwellVLJEPA.load(DEFAULT_WEIGHTS)
    assert model.generate("def add(a, b):\n", max_tokens=8) == \
        shipped.generate("def add(a, b):\n", max_tokens=8)
