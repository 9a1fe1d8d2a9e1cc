"""`cromwell complete | edit | explain` on files, with the tiny random-weight model: the
output an editor-less user sees, the exit codes (2: bad input, 1: nothing found), and
--apply writing atomically only inside the current directory."""
import json
import os
import subprocess
import sys

import pytest

from cromwell_lsp import cli
from cromwell_lsp.features import cli_features as cf
from tests.server_helpers import ROOT, tiny_model_path  # noqa: F401 (fixture)

CODE = ("import math\n\n\ndef area(radius):\n    return math.pi * radius ** 2\n\n\n"
        "def scale(shape, factor):\n    return shape * factor\n\n\n"
        "def main():\n    print(area(2), scale(3, 2))\n")


pytestmark = pytest.mark.usefixtures("one_kernel_thread")


@pytest.fixture
def run(tiny_model_path, capsys):  # noqa: F811
    """cromwell ARGS... in this process with the tiny model -> (exit code, stdout, stderr)."""
    def go(*args, model=True):
        extra = ["--model", str(tiny_model_path), "--threads", "1", "--max-tokens", "8"]
        code = cli.main([*map(str, args), *(extra if model else [])])
        out = capsys.readouterr()
        return code, out.out, out.err
    return go


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A project folder that is the current directory, with one Python file in it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "app.py").write_text(CODE, encoding="utf-8", newline="")
    return tmp_path


# ---- complete -------------------------------------------------------------------------
def test_complete_prints_the_completion_and_json(run, work):
    last, col = 13, len("    print(area(2), ") + 1  # mid-line: a single-line completion
    code, out, err = run("complete", f"app.py:{last}:{col}")
    assert code == 0 and "<|" not in out
    code, out, _ = run("complete", f"app.py:{last}:{col}", "--json")
    got = json.loads(out)
    assert set(got) == {"file", "line", "col", "completion", "prefill_tokens", "ms", "stop_reason"}
    assert (got["file"], got["line"], got["col"]) == ("app.py", last, col)
    assert got["prefill_tokens"] > 20 and got["ms"] > 0 and "\n" not in got["completion"]


def test_complete_columns_count_characters(run, work):
    (work / "u.py").write_text('s = "é😀"\nt = ', encoding="utf-8")
    code, out, err = run("complete", "u.py:1:9", "--json")  # after the closing quote
    assert code == 0, err
    code, _, err = run("complete", "u.py:1:10")  # one past the end (in UTF-16 it would not be)
    assert code == 2 and "column 10 is past the end of line 1 (8 characters)" in err


@pytest.mark.parametrize("spec, message", [
    ("missing.py:1:1", "missing.py: no such file"),
    ("app.py:99:1", "line 99 is past the end of the file (14 lines)"),
    ("app.py:4:50", "column 50 is past the end of line 4"),
    ("app.py:0:1", "1-based"),
    ("app.py:4", "bad position 'app.py:4': expected FILE:LINE:COL"),
    ("app.py:x:1", "bad position"),
    ("latin1.py:1:1", "latin1.py is not UTF-8 text (byte 0xe9 at offset 8)"),
    (".:1:1", "is a directory"),
])
def test_complete_errors_exit_2_and_name_the_problem(run, work, spec, message):
    (work / "latin1.py").write_bytes("x = 'caf\xe9'\n".encode("latin-1"))
    code, out, err = run("complete", spec)
    assert code == 2 and out == "" and message in err and err.startswith("cromwell: error:")


def test_a_missing_model_is_a_clear_error(run, work):
    code, _, err = run("complete", "app.py:1:1", "--model", "nowhere.safetensors", model=False)
    assert code == 2 and "nowhere.safetensors: no such model file" in err


def test_the_command_runs_as_a_program(tiny_model_path, work):  # noqa: F811
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, "-m", "cromwell_lsp", "complete", "app.py:13:20",
                           "--model", str(tiny_model_path), "--threads", "1", "--json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["col"] == 20
    proc = subprocess.run([sys.executable, "-m", "cromwell_lsp", "complete", "app.py:99:1"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "past the end of the file" in proc.stderr


# ---- edit -----------------------------------------------------------------------------
def test_find_action_at_nearest_and_first():
    text = CODE + "\n\ndef todo():\n    pass\n"
    assert cf.find_action(text, "docstring", None).line == 3  # the first: area
    assert cf.find_action(text, "docstring", 8).line == 7     # inside scale
    assert cf.find_action(text, "docstring", 6).line == 7     # nearest to a blank line
    assert cf.find_action(text, "body", None).line == 15
    assert cf.find_action(text, "fix", None) is None


def apply_diff_lines(diff: str) -> tuple[list[str], list[str]]:
    rows = diff.splitlines()
    return ([r[1:] for r in rows if r.startswith("-") and not r.startswith("---")],
            [r[1:] for r in rows if r.startswith("+") and not r.startswith("+++")])


def test_edit_prints_a_diff_and_leaves_the_file(run, work):
    code, out, err = run("edit", "app.py", "--action", "docstring", "--line", "9")
    assert code == 0, err
    assert out.startswith("--- a/app.py\n+++ b/app.py\n@@ ") and "Add docstring to scale" in err
    removed, added = apply_diff_lines(out)
    assert removed == [] and added and added[0].lstrip().startswith('"""')
    assert (work / "app.py").read_text(encoding="utf-8") == CODE


def test_apply_writes_atomically_keeping_crlf_bom_and_mode(run, work):
    path = work / "win.py"
    original = ("\ufeff" + CODE.replace("\n", "\r\n")).encode("utf-8")
    path.write_bytes(original)
    os.chmod(path, 0o640)
    code, out, err = run("edit", "win.py", "--action", "docstring", "--apply")
    assert code == 0, err
    data = path.read_bytes()
    assert data != original and data.startswith("\ufeff".encode("utf-8"))
    text = data.decode("utf-8")[1:]
    assert text.count("\r\n") == text.count("\n") and text.count("\n") > CODE.count("\n")
    assert '"""' in text.split("\r\n")[4]  # right under `def area(radius):`
    assert oct(path.stat().st_mode & 0o777) == oct(0o640)
    assert sorted(p.name for p in work.iterdir()) == ["app.py", "win.py"]  # no temp file left
    compile(text, "win.py", "exec")


def test_apply_refuses_a_file_outside_the_current_directory(run, work, tmp_path_factory,
                                                            monkeypatch):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    monkeypatch.chdir(elsewhere)
    code, out, err = run("edit", str(work / "app.py"), "--action", "docstring", "--apply")
    assert code == 2 and "refusing to write" in err and "outside the current directory" in err
    assert (work / "app.py").read_text(encoding="utf-8") == CODE


def test_edit_reports_what_it_did_not_find(run, work):
    code, _, err = run("edit", "app.py", "--action", "body")
    assert code == 1 and "no 'Complete function body' action" in err
    code, _, err = run("edit", "app.py", "--action", "screenshot")
    assert code == 1 and "no screenshot reference found" in err
    code, _, err = run("edit", "missing.py", "--action", "fix")
    assert code == 2 and "missing.py: no such file" in err


def test_edit_fix_offers_only_a_parsing_repair(run, work):
    (work / "broken.py").write_text("def f(x):\n    return (x +\n\n\ny = 2\n", encoding="utf-8")
    code, out, err = run("edit", "broken.py", "--action", "fix")
    assert code in (0, 1), err
    if code == 1:
        assert "produced no usable edit" in err


# ---- explain --------------------------------------------------------------------------
def test_explain_a_definition_shows_its_signature(run, work):
    code, out, err = run("explain", "app.py:8")
    assert code == 0, err
    assert out.startswith("```python\ndef scale(shape, factor):\n```")


@pytest.mark.parametrize("spec, message", [
    ("app.py:2", "the line is blank"), ("app.py:40", "line 40 is past the end of the file"),
    ("app.py", "bad position 'app.py': expected FILE:LINE"), ("shot.png", "no such image file"),
])
def test_explain_errors(run, work, spec, message):
    code, _, err = run("explain", spec)
    assert code == 2 and message in err


def test_explain_an_image(run, work):
    from PIL import Image

    Image.new("RGB", (64, 32), "white").save(work / "shot.png")
    code, out, err = run("explain", "shot.png")
    assert code == 0, err
    assert out.startswith("**Screenshot** `shot.png`")
    assert "app.py" in out  # the workspace's Python files are the candidates


def test_explain_a_corrupt_image_is_a_usage_error(run, work):
    (work / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    code, _, err = run("explain", "bad.png")
    assert code == 2 and "bad.png" in err


def test_edit_screenshot_inserts_code_below_the_reference(run, work):
    from PIL import Image

    Image.new("RGB", (64, 32), "white").save(work / "shot.png")
    (work / "notes.py").write_text("# see shot.png\nx = 1\n", encoding="utf-8")
    code, out, err = run("edit", "notes.py", "--action", "screenshot")
    assert code in (0, 1), err
    if code == 0:
        assert out.startswith("--- a/notes.py\n+++ b/notes.py\n")
        assert " # see shot.png\n+" in out  # the inserted lines follow the reference line
    else:
        assert "produced no usable edit" in err


def test_edit_screenshot_outside_the_folder_is_refused(run, work, tmp_path_factory):
    from PIL import Image

    elsewhere = tmp_path_factory.mktemp("elsewhere") / "secret.png"
    Image.new("RGB", (64, 32), "white").save(elsewhere)
    (work / "notes.py").write_text(f"shot = '{elsewhere}'\nx = 1\n", encoding="utf-8")
    code, _, err = run("edit", "notes.py", "--action", "screenshot")
    assert code == 2 and "outside" in err, err
