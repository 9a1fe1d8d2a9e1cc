"""The VS Code extension in real VS Code: code-server (VS Code 1.139 in a browser) with the
packaged .vsix installed into an isolated profile, driven through chromium by
vscode-extension/e2e/drive.mjs (puppeteer-core).  The extension runs this interpreter's
`python -m cromwell_lsp` with the tiny random-weight test model (cromwell.modelPath).

Steps: open a Python file and type -> ghost text -> Tab accepts exactly that text; the
lightbulb's code action menu -> pick a Cromwell action -> the buffer changes as the
server's WorkspaceEdit says; hover a function (its signature) and a markdown image link
(the screenshot hover).  Screenshots of every step land in test-artifacts/, and the time
from opening the Python file to the first ghost text in test-artifacts/vscode_timings.json.

Everything is installed by the test itself (tests/vscode_setup.py) into .cache/editors.
"""
import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cromwell_lsp.settings import Features, Settings
from tests.editor_setup import require
from tests.server_helpers import ROOT, tiny_model_path  # noqa: F401

EXTENSION = Path(ROOT) / "vscode-extension"
ARTIFACTS = Path(ROOT) / "test-artifacts"
SHAPES = ("import math\n\n\ndef area(radius):\n    return math.pi * radius ** 2\n\n\n"
          "class Shape:\n    sides = 0\n\n\ndef perimeter(width, height):\n    total = ")
ACTIONS = "def area(radius):\n    return 3.14159 * radius ** 2\n\n\nx = area(2)\n"
SHOWN = "def add(a, b):\n    return a + b\n"
NOTES = "# Notes\n\nThe adder:\n\n![the add function](shot.png)\n"
MODEL_SETTINGS = {"maxTokens": 8, "debounceMs": 0, "threads": 1}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.title() for w in rest)


def test_extension_settings_are_the_servers_settings():
    """package.json declares every server setting with the default of settings.py (the
    extension sends them as initializationOptions under the same camelCase keys)."""
    props = json.loads((EXTENSION / "package.json").read_text())["contributes"][
        "configuration"]["properties"]
    defaults = Settings()
    for name in Settings.__dataclass_fields__:
        if name == "features":
            continue
        assert props[f"cromwell.{_camel(name)}"]["default"] == getattr(defaults, name), name
    for name in Features.__dataclass_fields__:
        assert props[f"cromwell.features.{_camel(name)}"]["default"] == getattr(Features(), name)


def test_extension_unit_tests():
    """The extension's own unit tests (node:test over src/config.ts) and its type check."""
    from tests import vscode_setup

    with vscode_setup.locked():
        require(vscode_setup.ensure_extension_modules)
    env = vscode_setup.node_env()
    for cmd in (["npm", "test"], ["npx", "tsc", "--noEmit", "-p", "."]):
        run = subprocess.run(cmd, cwd=EXTENSION, env=env, capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0, f"{' '.join(cmd)}:\n{run.stdout[-3000:]}{run.stderr[-3000:]}"
        if cmd[1] == "test":
            assert "ℹ fail 0" in run.stdout and "ℹ pass 0" not in run.stdout, run.stdout[-2000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _expected_action(model_path: Path, ws: Path) -> tuple[str, str]:
    """(title, file text after the edit) for the first action on ACTIONS's line 1 that the
    model resolves to an edit, computed in this process with the server's own code and the
    extension's settings (greedy decoding: the server must produce the same edit)."""
    from cromwell_lsp import kernels
    from cromwell_lsp.features import actions
    from cromwell_lsp.features.session import Session
    from cromwell_lsp.model import CromwellVLJEPA

    kernels.set_threads(1)
    model = CromwellVLJEPA.load(model_path)
    settings, errors = Settings.parse(MODEL_SETTINGS)
    assert not errors
    for action in actions.list_actions(ACTIONS, 0, 0):
        edit = actions.resolve(model, Session(model.new_cache(256)), action, ACTIONS, settings,
                               doc_path=ws / "actions.py", roots=[ws])
        if edit is not None:
            return action.title, ACTIONS[:edit.start] + edit.text + ACTIONS[edit.end:]
    pytest.fail(f"the test model resolves none of {actions.list_actions(ACTIONS, 0, 0)} "
                "to an edit; change ACTIONS")


def _workspace(root: Path) -> Path:
    from cromwell_lsp.training.screenshots import render

    ws = root / "ws"
    ws.mkdir()
    (ws / "shapes.py").write_text(SHAPES)
    (ws / "actions.py").write_text(ACTIONS)
    (ws / "maths.py").write_text(SHOWN)
    (ws / "notes.md").write_text(NOTES)
    render(SHOWN, random.Random(1), style="default", font_size=12).save(ws / "shot.png")
    return ws


def _code_server_env(tmp: Path, tools: dict) -> dict:
    home = tmp / "home"
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_DATA_HOME": str(home / ".local/share"), "XDG_CACHE_HOME": str(home / ".cache"),
           "XDG_STATE_HOME": str(home / ".local/state"),
           "PATH": f"{tools['node_bin']}{os.pathsep}{os.environ.get('PATH', '')}",
           # a checkout that is not pip-installed still serves: the server imports from here
           "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for key in ("VSCODE_IPC_HOOK_CLI", "VSCODE_AGENT_FOLDER", "PASSWORD", "HASHED_PASSWORD"):
        env.pop(key, None)
    return env


def test_vscode_ghost_text_actions_and_hovers(tiny_model_path, tmp_path):  # noqa: F811
    from tests import vscode_setup

    t_setup = time.monotonic()
    tools = require(vscode_setup.ensure_vscode)
    setup_s = time.monotonic() - t_setup
    ARTIFACTS.mkdir(exist_ok=True)
    for old in ARTIFACTS.glob("vscode-*.png"):
        old.unlink()
    ws = _workspace(tmp_path)
    action_title, action_expected = _expected_action(tiny_model_path, ws)

    data, exts = tmp_path / "user-data", tmp_path / "extensions"
    config = tmp_path / "config.yaml"
    port = _free_port()
    config.write_text(f"bind-addr: 127.0.0.1:{port}\nauth: none\ncert: false\n")
    env = _code_server_env(tmp_path, tools)
    common = ["--user-data-dir", str(data), "--extensions-dir", str(exts), "--config", str(config)]
    cs = str(tools["code_server"])
    t = time.monotonic()
    out = subprocess.run([cs, *common, "--install-extension", str(tools["vsix"]), "--force"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert any(p.name.startswith("cromwell.cromwell-") for p in exts.iterdir()), out.stdout
    install_s = time.monotonic() - t

    cromwell = {"cromwell.pythonPath": sys.executable, "cromwell.modelPath": str(tiny_model_path),
                **{f"cromwell.{k}": v for k, v in MODEL_SETTINGS.items()}}
    # code-server is a remote: machine-scoped settings (pythonPath) count only in the
    # Machine settings; the User settings hold them too, as on a desktop VS Code
    (data / "Machine").mkdir(parents=True, exist_ok=True)
    (data / "Machine" / "settings.json").write_text(json.dumps(cromwell, indent=1))
    (data / "User").mkdir(parents=True, exist_ok=True)
    (data / "User" / "settings.json").write_text(json.dumps({
        **cromwell,
        "cromwell.trace.server": "messages",
        "editor.inlineSuggest.enabled": True,
        "editor.quickSuggestions": {"other": "off", "comments": "off", "strings": "off"},
        "editor.suggestOnTriggerCharacters": False,
        "editor.hover.delay": 200,
        "editor.lightbulb.enabled": "on",
        "editor.minimap.enabled": False,
        "workbench.startupEditor": "none",
        "workbench.secondarySideBar.defaultVisibility": "hidden",
        "workbench.tips.enabled": False,
        "workbench.enableExperiments": False,
        "workbench.editor.enablePreview": False,
        "security.workspace.trust.enabled": False,
        "telemetry.telemetryLevel": "off",
        "extensions.autoUpdate": False,
        "extensions.autoCheckUpdates": False,
        "extensions.ignoreRecommendations": True,
        "update.mode": "none",
        "git.enabled": False,
        "files.hotExit": "off",
        "window.restoreWindows": "none",
    }, indent=1))

    log = (tmp_path / "code-server.log").open("w")
    server = subprocess.Popen(
        [cs, *common, "--disable-telemetry", "--disable-update-check", "--disable-workspace-trust",
         "--disable-getting-started-override", "--ignore-last-opened", str(ws)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/healthz", timeout=2).read()
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "code-server.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "code-server did not answer in 120 s"
                time.sleep(0.3)
        drive_args = {
            "url": f"{url}/?folder={ws}", "chromium": str(tools["chromium"]),
            "workspace": str(ws), "artifacts": str(ARTIFACTS),
            "completionFile": "shapes.py", "typed": "w", "actionFile": "actions.py",
            "actionTitle": action_title, "hoverWord": "area", "hoverExpect": "def area(radius):",
            "markdownFile": "notes.md", "imageWord": "shot.png"}
        t = time.monotonic()
        run = subprocess.run([str(tools["node"]), str(EXTENSION / "e2e" / "drive.mjs"),
                              json.dumps(drive_args)], cwd=EXTENSION, env=env,
                             capture_output=True, text=True, timeout=900)
        ui_s = time.monotonic() - t
    finally:
        os.killpg(server.pid, 15)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
        log.close()
    sys.stderr.write(run.stderr[-4000:])
    assert run.returncode == 0 and run.stdout.strip(), run.stdout[-2000:] + run.stderr[-4000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    steps, errors = report["steps"], report["errors"]

    ghost = steps.get("ghost")
    timings = {"setup_s": round(setup_s, 1), "install_extension_s": round(install_s, 1),
               "ui_run_s": round(ui_s, 1)}
    if ghost:
        timings |= {k: ghost[k] for k in ("open_to_ghost_ms", "keystroke_to_ghost_ms", "retypes")}
    (ARTIFACTS / "vscode_timings.json").write_text(json.dumps(timings, indent=1) + "\n")
    print(f"\nvscode timings: {json.dumps(timings)}")
    assert not errors, "steps failed in VS Code:\n" + "\n".join(
        f"{k}: {v}" for k, v in errors.items())

    # ghost text appears and Tab inserts exactly it
    assert ghost["before"] == SHAPES
    assert ghost["ghost"]["text"].strip(), ghost["ghost"]
    assert ghost["after"] == SHAPES + ghost["typed"] + ghost["ghost"]["text"]
    assert ghost["status"] and "Cromwell" in ghost["status"]

    # the code action changes the buffer as the server's WorkspaceEdit says
    action = steps["action"]
    assert any(action_title in t for t in action["titles"]), action["titles"]
    assert action["changed"], "the action did not change the buffer"
    assert action["after"] == action_expected

    # hovers: the signature of the function, the screenshot of the markdown link
    assert "def area(radius):" in steps["hover_function"]["text"]
    image = steps["hover_image"]["text"]
    assert "Screenshot" in image and "shot.png" in image
    shots = sorted(p.name for p in ARTIFACTS.glob("vscode-*.png"))
    assert len(shots) >= 8, shots
