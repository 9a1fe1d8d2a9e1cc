"""The model commands: `cromwell quantize` and `cromwell bench decode --json`."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cromwell_lsp.model.weights import load
from tests.model_helpers import TINY, random_twin

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "cromwell_lsp", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=600, env={**os.environ, **(env or {})})


def test_quantize_command(tmp_path):
    pytest.importorskip("torch")
    from cromwell_lsp.training.model import export_safetensors

    src, dst = tmp_path / "m.safetensors", tmp_path / "m-int8.safetensors"
    export_safetensors(random_twin(TINY), src)
    out = _cli("quantize", str(src), str(dst))
    assert out.returncode == 0, out.stderr
    wf = load(dst)
    assert wf.quant == "int8" and wf.config == TINY
    again = _cli("quantize", str(dst), str(tmp_path / "x.safetensors"))
    assert again.returncode == 2 and "already quantized" in again.stderr
    missing = _cli("quantize", str(tmp_path / "nope.safetensors"), str(tmp_path / "y.safetensors"))
    assert missing.returncode == 2 and "nope.safetensors" in missing.stderr


def test_bench_decode_json(tmp_path):
    out = _cli("bench", "decode", "--config", "tiny", "--quant", "int8", "--image", "--json",
               env={"XDG_CACHE_HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    for key in ("load_ms", "prefill_tok_s", "decode_tok_s", "decode_image_tok_s",
                "spec_decode_tok_s", "spec_acceptance", "vision_ms", "peak_rss_mb"):
        assert data[key] is not None and data[key] >= 0, key
    assert data["quant"] == "int8" and data["params"] > 5_000_000
