"""What the real-editor tests need, installed by the tests themselves: Debian packages
through apt-get and Python packages through pip.  Each call is quick when everything is
there already (one dpkg-query or import), and raises `SetupError` with the commands to run
by hand when installing fails.

`SetupError.impossible` tells the two kinds of failure apart: True when this machine
cannot install at all (no apt-get, not root and no sudo, no network to the registries):
the tests then skip and say why; False when an install was possible and went wrong: the
tests fail, so a broken install can never pass for a missing editor.
"""
from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys

import pytest

# signs that a command failed for want of a network, not because of the package
_OFFLINE = re.compile(r"Temporary failure resolving|Could not resolve|Failed to fetch|"
                      r"Network is unreachable|ENOTFOUND|EAI_AGAIN|ENETUNREACH|ECONNREFUSED|"
                      r"ETIMEDOUT|No matching distribution found|Name or service not known",
                      re.I)


class SetupError(RuntimeError):
    """An install step failed; the message says which and what to do by hand."""

    def __init__(self, message: str, impossible: bool = False):
        super().__init__(message)
        self.impossible = impossible


def offline(output: str) -> bool:
    return bool(_OFFLINE.search(output or ""))


def run(cmd: list[str], what: str, timeout: float = 900, **kw) -> str:
    """Run a command and return its stdout; raise SetupError with its output's tail when it
    fails (impossible=True when the output says the network is missing)."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SetupError(f"{what}: `{' '.join(map(str, cmd))}` failed: {exc}") from exc
    if p.returncode != 0:
        tail = (p.stdout + p.stderr)[-3000:]
        raise SetupError(f"{what}: `{' '.join(map(str, cmd))}` exited {p.returncode}:\n{tail}",
                         impossible=offline(tail))
    return p.stdout


def require(step, *args, **kw):
    """Call an ensure_* step inside a test or fixture: skip when this machine cannot
    install (with the reason), fail when the install itself went wrong."""
    try:
        return step(*args, **kw)
    except SetupError as exc:
        if exc.impossible:
            pytest.skip(f"cannot install what this editor test needs here: {exc}")
        pytest.fail(f"installing what this editor test needs failed: {exc}", pytrace=False)


# ---- Debian packages ---------------------------------------------------------------------
def missing_debian_packages(packages: list[str]) -> list[str]:
    if not shutil.which("dpkg-query"):
        return list(packages)
    out = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *packages],
                         capture_output=True, text=True).stdout
    installed = {line.split()[0] for line in out.splitlines() if line.endswith(" installed")}
    return [p for p in packages if p not in installed]


def ensure_debian_packages(packages: list[str], timeout_s: int = 900) -> None:
    """apt-get install the packages that are not installed; apt-get update first only when
    the install fails (a fresh machine has no package lists), then once more."""
    missing = missing_debian_packages(packages)
    if not missing:
        return
    hint = f"HINT: run `apt-get update && apt-get install -y {' '.join(missing)}` as root"
    if not shutil.which("apt-get") or not shutil.which("dpkg-query"):
        raise SetupError(f"the Debian packages {missing} are needed and this machine has no "
                         f"apt-get. {hint} on a Debian-like system", impossible=True)
    sudo: list[str] = []
    if os.geteuid() != 0:
        if not shutil.which("sudo") or subprocess.run(["sudo", "-n", "true"],
                                                      capture_output=True).returncode != 0:
            raise SetupError(f"the Debian packages {missing} are needed; not root and no "
                             f"password-less sudo. {hint}", impossible=True)
        sudo = ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    apt = [*sudo, "apt-get", "-o", "DPkg::Lock::Timeout=600", "-q"]
    install = [*apt, "install", "-y", "--no-install-recommends", *missing]
    try:
        run(install, "apt-get install", timeout=timeout_s, env=env)
    except SetupError:
        run([*apt, "update"], f"apt-get update ({hint})", timeout=timeout_s, env=env)
        run(install, f"apt-get install ({hint})", timeout=timeout_s, env=env)
    still = missing_debian_packages(missing)
    if still:
        raise SetupError(f"apt-get reported success but {still} are not installed. {hint}")


# ---- Python packages ---------------------------------------------------------------------
def ensure_python_packages(modules: dict[str, str], timeout_s: int = 600) -> None:
    """pip install the distributions ({module: distribution}) whose module is missing."""
    missing = []
    for module, dist in modules.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(dist)
    if not missing:
        return
    try:
        run([sys.executable, "-m", "pip", "install", *missing], "pip install", timeout=timeout_s)
    finally:
        importlib.invalidate_caches()
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            raise SetupError(f"pip installed {missing} but {module} does not import. "
                             "HINT: pip install -e '.[dev]'") from None
