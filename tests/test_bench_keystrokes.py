"""`cromwell bench keystrokes` with the tiny model and a few keystrokes: one JSON document
with the agreed keys, and the KV cache visibly saving prefill."""
import json
import os
import subprocess
import sys

from cromwell_lsp.eval.bench_keystrokes import stretch
from tests.server_helpers import ROOT, tiny_model_path  # noqa: F401 (fixture)

KEYS = {"p50_ms", "p95_ms", "prefill_tokens_per_request",
        "p50_ms_nocache", "p95_ms_nocache", "prefill_tokens_per_request_nocache"}


def test_stretch_starts_on_code_in_the_middle():
    text = "a = 1\n\n\n    b = 2\nc = 3\n"
    start, end = stretch(text, 4)
    assert text[start:end] == "b = " and stretch(text, 100)[1] == len(text)


# a file of its own to type (the default, one of the project's sources, moves its middle
# whenever that source is edited, and with it how many keystrokes ask for a completion)
TYPED = "".join(
    f"def step_{i}(items, rate):\n"
    f"    \"\"\"Scale each item by the rate ({i}).\"\"\"\n"
    f"    scaled = [item * rate + {i} for item in items]\n"
    f"    return sum(scaled) / max(1, len(scaled))\n\n\n" for i in range(12))


def test_bench_keystrokes_json(tiny_model_path, tmp_path):  # noqa: F811
    typed = tmp_path / "typed.py"
    typed.write_text(TYPED)
    start, end = stretch(TYPED, 12)
    assert TYPED[start:end] == "def step_6(i"  # 12 keystrokes, each with code before it
    proc = subprocess.run(
        [sys.executable, "-m", "cromwell_lsp", "bench", "keystrokes", "--json", "--chars", "12",
         "--model", str(tiny_model_path), "--threads", "1", "--max-tokens", "2",
         "--file", str(typed)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT}, timeout=240)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert KEYS <= set(got) and got["requests"] == got["requests_nocache"] > 5
    assert 0 < got["p50_ms"] <= got["p95_ms"] and 0 < got["p50_ms_nocache"] <= got["p95_ms_nocache"]
    assert got["prefill_tokens_per_request"] * 5 < got["prefill_tokens_per_request_nocache"]
    assert "cache on" in proc.stderr and "cache off" in proc.stderr
    assert got["busy_rounds"] == 8 and 0 <= got["busy_rounds_overlapped"] <= 8
    if got["busy_rounds_overlapped"]:
        assert 0 < got["busy_request_p50_ms"] <= got["busy_request_max_ms"]


def test_bench_keystrokes_without_a_model_file_says_so():
    proc = subprocess.run(
        [sys.executable, "-m", "cromwell_lsp", "bench", "keystrokes", "--model", "nowhere.st"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT}, timeout=60)
    assert proc.returncode == 2 and "nowhere.st: no such model file" in proc.stderr
