"""Emacs 28 + eglot in batch mode with the example config examples/editors/emacs/cromwell.el:
eglot starts the real server on a Python file; completion-at-point inserts the server's
completion, eglot's hover request shows the signature, the config's inline suggestion is
shown and accepted, and the config's code action command resolves an action and applies
its edit.  Results come back as JSON; asserts are on structure (random-weight model)."""
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.editor_setup import ensure_debian_packages, require
from tests.server_helpers import ROOT, apply_text_edits, tiny_model_path  # noqa: F401

CONFIG = Path(ROOT) / "examples" / "editors" / "emacs" / "cromwell.el"
SHAPES = ("import math\n\n\ndef area(radius):\n    return math.pi * radius ** 2\n\n\n"
          "def perimeter(width, height):\n    total = ")
ACTIONS = "def area(radius):\n    return 3.14159 * radius ** 2\n\n\nx = area(2)\n"

SCRIPT = r"""
(package-initialize)
(require 'eglot)
(require 'json)
(load (getenv "CROMWELL_EL") nil t)
(setq cromwell-server-command (list (getenv "CROMWELL_PYTHON") "-m" "cromwell_lsp" "--stdio"))
(setq cromwell-initialization-options
      (list :modelPath (getenv "CROMWELL_MODEL") :maxTokens 8 :debounceMs 0 :threads 1))
(setq eglot-sync-connect 120 eglot-connect-timeout 120 jsonrpc-default-request-timeout 120)
(defvar cw-out nil)
(defun cw-put (key value) (push (cons key value) cw-out))
(defun cw-text () (buffer-substring-no-properties (point-min) (point-max)))
(defun cw-step (name fn)
  (condition-case err (funcall fn)
    (error (cw-put (intern (format "%s_error" name)) (format "%S" err)))))

(let ((ws (getenv "CROMWELL_WS")))
  (find-file (expand-file-name "shapes.py" ws))
  (apply #'eglot (eglot--guess-contact))
  (cw-put 'managed (and (eglot-current-server) t))
  (cw-put 'server_name (plist-get (eglot--server-info (eglot-current-server)) :name))

  (cw-step "completion" (lambda ()
    (goto-char (point-max))
    (let* ((raw (jsonrpc-request (eglot-current-server) :textDocument/completion
                                 (eglot--TextDocumentPositionParams)))
           (items (if (vectorp raw) raw (plist-get raw :items)))
           (capf (eglot-completion-at-point))
           (labels (all-completions "" (nth 2 capf)))
           (before (cw-text)))
      (cw-put 'completion_labels (vconcat labels))
      (cw-put 'completion_new_text (and (> (length items) 0)
                                     (plist-get (plist-get (aref items 0) :textEdit) :newText)))
      (cw-put 'completion_before before)
      (completion-at-point)
      (cw-put 'completion_after (cw-text))
      (erase-buffer) (insert before))))

  (cw-step "inline" (lambda ()
    (goto-char (point-max))
    (let ((before (cw-text)) (shown (cromwell-suggest)))
      (cw-put 'inline_text shown)
      (cw-put 'inline_overlay (and cromwell--overlay (overlay-get cromwell--overlay 'after-string) t))
      (cw-put 'inline_accepted (cromwell-accept))
      (cw-put 'inline_before before)
      (cw-put 'inline_after (cw-text))
      (erase-buffer) (insert before))))

  (cw-step "hover" (lambda ()
    (goto-char (point-min)) (search-forward "def area") (backward-char 2)
    (let ((r (jsonrpc-request (eglot-current-server) :textDocument/hover
                              (eglot--TextDocumentPositionParams))))
      (cw-put 'hover (plist-get (plist-get r :contents) :value)))))

  (cw-step "action" (lambda ()
    (find-file (expand-file-name "actions.py" ws))
    (cw-put 'action_managed (and (eglot-current-server) eglot--managed-mode t))
    (goto-char (point-min))
    (let* ((actions (cromwell-code-actions))
           (before (cw-text))
           (resolved nil))
      (cw-put 'action_titles (vconcat (mapcar (lambda (a) (plist-get a :title)) actions)))
      (cw-put 'action_listed_with_edit (cl-some (lambda (a) (plist-get a :edit)) actions))
      (cl-loop for a in actions until resolved
               do (let ((r (cromwell-apply-code-action a)))
                    (when (plist-get r :edit) (setq resolved r))))
      (cw-put 'action_before before)
      (cw-put 'action_after (cw-text))
      (cw-put 'action_title (and resolved (plist-get resolved :title)))
      (cw-put 'action_edits
           (and resolved
                (let ((changes (plist-get (plist-get resolved :edit) :changes)))
                  (vconcat (cadr changes)))))))))

(with-temp-file (getenv "CROMWELL_OUT")
  (insert (json-encode cw-out)))
(kill-emacs 0)
"""


def test_emacs_eglot_with_the_example_config(tiny_model_path, tmp_path):  # noqa: F811
    require(ensure_debian_packages, ["emacs-nox", "elpa-eglot"])
    emacs = shutil.which("emacs")
    assert emacs, "emacs is missing after installing emacs-nox"
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "shapes.py").write_text(SHAPES)
    (ws / "actions.py").write_text(ACTIONS)
    script = tmp_path / "drive.el"
    script.write_text(SCRIPT)
    out = tmp_path / "out.json"
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "PYTHONPATH": ROOT,
           "CROMWELL_EL": str(CONFIG), "CROMWELL_PYTHON": sys.executable,
           "CROMWELL_MODEL": str(tiny_model_path), "CROMWELL_WS": str(ws),
           "CROMWELL_OUT": str(out)}
    t0 = time.monotonic()
    run = subprocess.run([emacs, "--batch", "-l", str(script)], cwd=ws, env=env,
                         capture_output=True, text=True, timeout=600)
    print(f"\nemacs: batch run {time.monotonic() - t0:.1f} s")
    assert run.returncode == 0 and out.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    r = json.loads(out.read_text())
    errors = {k: v for k, v in r.items() if k.endswith("_error")}
    assert not errors, errors
    assert r["managed"] and r["server_name"] == "cromwell"

    # completion-at-point offered the server's item and inserted its textEdit
    assert r["completion_labels"], "no completion candidates at the end of `total = `"
    new = r["completion_new_text"]
    assert new and r["completion_before"] == SHAPES
    assert r["completion_after"] == SHAPES + new

    # the config's inline suggestion: shown as an overlay, accepted as it was shown
    assert r["inline_text"] and r["inline_overlay"] and r["inline_accepted"]
    assert r["inline_after"] == r["inline_before"] + r["inline_text"]

    assert "```python\ndef area(radius):\n```" in r["hover"]

    # the code action: listed without an edit, resolved by the config, applied by eglot
    assert r["action_managed"]
    assert any(t.startswith("Add docstring") for t in r["action_titles"]), r["action_titles"]
    assert not r["action_listed_with_edit"]
    assert r["action_title"], f"the server resolved none of {r['action_titles']} to an edit"
    assert r["action_before"] == ACTIONS
    assert r["action_after"] == apply_text_edits(ACTIONS, r["action_edits"]) != ACTIONS
