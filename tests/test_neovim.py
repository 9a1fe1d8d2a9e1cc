"""Neovim 0.7 (headless, driven through pynvim) with the example config
examples/editors/neovim/init-0.7.lua as its init file: the config starts the real server
on a Python buffer; completion, hover, a raw inlineCompletion request, the config's ghost
text (suggest + accept) and a code action picked through the config's <leader>ca mapping,
resolved by the server and applied by Neovim.

The model has random weights, so its words are junk: the asserts are on structure (an
answer at the cursor, the edit Neovim applied is the edit the server sent, the hover holds
the signature), never on content.
"""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.editor_setup import ensure_debian_packages, ensure_python_packages, require
from tests.server_helpers import ROOT, apply_text_edits, tiny_model_path  # noqa: F401

INIT = Path(ROOT) / "examples" / "editors" / "neovim" / "init-0.7.lua"
CODE = ("import math\n\n\ndef area(radius):\n    return math.pi * radius ** 2\n\n\n"
        "class Shape:\n    sides = 0\n\n\ndef perimeter(width, height):\n    total = ")
WAIT_MS = 120_000


@pytest.fixture(scope="module")
def nvim(tiny_model_path, tmp_path_factory):  # noqa: F811
    require(ensure_debian_packages, ["neovim"])
    require(ensure_python_packages, {"pynvim": "pynvim"})
    import pynvim

    exe = shutil.which("nvim")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    assert version.startswith("NVIM v0."), version
    work = tmp_path_factory.mktemp("nvim")
    options = {
        "cmd": [sys.executable, "-m", "cromwell_lsp", "--stdio"],
        "init_options": {"modelPath": str(tiny_model_path), "maxTokens": 8, "debounceMs": 0,
                         "threads": 1},
        "ghost_delay_ms": 50,
    }
    env = {"CROMWELL_NVIM_OPTIONS": json.dumps(options),
           "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "XDG_CONFIG_HOME": str(work / "config"), "XDG_DATA_HOME": str(work / "data"),
           "XDG_STATE_HOME": str(work / "state"), "XDG_CACHE_HOME": str(work / "cache")}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the embedded nvim (and the server it starts) inherit these
    try:
        vim = pynvim.attach("child", argv=[
            exe, "--embed", "--headless", "-i", "NONE", "-n",
            "--cmd", "lua vim.g.cromwell = vim.fn.json_decode(vim.env.CROMWELL_NVIM_OPTIONS)",
            "-u", str(INIT)])
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    path = work / "shapes.py"
    path.write_text(CODE)
    t0 = time.monotonic()
    vim.command(f"edit {path}")
    ready = vim.exec_lua("""
      local ok = vim.wait(...,
        function()
          local c = vim.lsp.buf_get_clients(0)
          for _, client in pairs(c) do
            if client.name == "cromwell" and client.server_capabilities then return true end
          end
          return false
        end, 50)
      return ok
    """, WAIT_MS)
    assert ready, "the example config did not start and attach the cromwell server"
    print(f"\nneovim: server attached {time.monotonic() - t0:.1f} s after :edit")
    yield vim
    vim.exec_lua("vim.lsp.stop_client(vim.lsp.get_active_clients())")
    vim.close()


def request(vim, method: str, params_lua: str):
    """vim.lsp.buf_request_sync from the current buffer; the cromwell client's answer."""
    reply = vim.exec_lua(f"""
      local params = {params_lua}
      local out = vim.lsp.buf_request_sync(0, ..., params, {WAIT_MS})
      for id, r in pairs(out or {{}}) do
        if vim.lsp.get_client_by_id(id).name == "cromwell" then
          return {{ result = r.result, err = r.err and vim.inspect(r.err) }}
        end
      end
      return {{ err = "no answer from cromwell" }}
    """, method)
    assert not reply.get("err"), reply["err"]
    return reply.get("result")


def end_of_buffer(vim) -> None:
    """The cursor after the last character, as in insert mode (`A`): normal mode would put it
    on the last character, one column short of where typing continues."""
    vim.command("normal! G$")
    vim.exec_lua("vim.api.nvim_win_set_cursor(0, {vim.fn.line('$'), #vim.fn.getline('$')})")


END_PARAMS = ("{textDocument = vim.lsp.util.make_text_document_params(), position = "
              "{line = vim.fn.line('$') - 1, character = #vim.fn.getline('$')}, "
              "context = {triggerKind = 1}}")


def buffer_text(vim) -> str:
    return "\n".join(vim.current.buffer[:])


def test_capabilities(nvim):
    caps = nvim.exec_lua("""
      for _, c in pairs(vim.lsp.buf_get_clients(0)) do
        if c.name == "cromwell" then return c.server_capabilities end
      end
    """)
    assert caps["hoverProvider"] and caps["codeActionProvider"]["resolveProvider"]
    assert "inlineCompletionProvider" in caps and "completionProvider" in caps


def test_completion_at_the_cursor(nvim):
    end_of_buffer(nvim)
    line = len(CODE.split("\n")) - 1
    result = request(nvim, "textDocument/completion", END_PARAMS)
    items = result["items"] if isinstance(result, dict) else result
    assert items, "no completion item at the end of `total = `"
    edit = items[0]["textEdit"]
    here = {"line": line, "character": len("    total = ")}
    assert edit["range"] == {"start": here, "end": here}
    assert edit["newText"] and "<|" not in edit["newText"]
    assert items[0]["label"]


def test_raw_inline_completion_and_the_configs_ghost_text(nvim):
    end_of_buffer(nvim)
    result = request(nvim, "textDocument/inlineCompletion", END_PARAMS)
    items = result["items"] if isinstance(result, dict) else result
    assert items, "no inline completion at the end of `total = `"
    text = items[0]["insertText"]
    text = text["value"] if isinstance(text, dict) else text
    line = len(CODE.split("\n")) - 1
    here = {"line": line, "character": len("    total = ")}
    assert items[0]["range"] == {"start": here, "end": here} and text



def test_the_configs_ghost_text_while_typing(nvim):
    """Typing in insert mode fires the config's TextChangedI timer, which asks for an inline
    completion and shows it as an extmark; <C-l> (the config's mapping) inserts it."""
    before = buffer_text(nvim)
    end_of_buffer(nvim)
    nvim.input("A")
    nvim.input("w")
    got = nvim.exec_lua("""
      local cromwell, ms = require("cromwell"), ...
      local buf = vim.api.nvim_get_current_buf()
      vim.wait(ms, function() return cromwell.suggestions[buf] ~= nil end, 20)
      local s = cromwell.suggestions[buf]
      local marks = vim.api.nvim_buf_get_extmarks(buf, vim.api.nvim_create_namespace("cromwell"),
                                                  0, -1, {details = true})
      return {text = s and s.text, col = s and s.col, mode = vim.fn.mode(), marks = #marks,
              virt = marks[1] and marks[1][4].virt_text[1][1]}
    """, WAIT_MS)
    assert got["mode"] == "i"
    assert got["text"], "no ghost text appeared after typing"
    assert got["col"] == len("    total = w") and got["marks"] == 1
    assert got["virt"] == got["text"].split("\n")[0]
    nvim.input("<C-l>")
    assert nvim.exec_lua("return vim.fn.mode()") == "i"
    assert buffer_text(nvim) == before + "w" + got["text"]
    nvim.input("<Esc>")
    nvim.exec_lua("vim.api.nvim_buf_set_lines(0, 0, -1, false, ...)", before.split("\n"))
    assert buffer_text(nvim) == before


def test_hover_shows_the_signature(nvim):
    nvim.exec_lua("vim.api.nvim_win_set_cursor(0, {4, 5})")  # on `area` in `def area(radius):`
    result = request(nvim, "textDocument/hover", "vim.lsp.util.make_position_params()")
    value = result["contents"]["value"]
    assert "```python\ndef area(radius):\n```" in value and "<|" not in value


def test_code_action_picked_resolved_and_applied(nvim):
    """<leader>ca (the config's mapping) lists Cromwell's actions; vim.ui.select is answered
    with the first one that the server resolves to an edit; Neovim applies that edit."""
    # the actions other than "Fix syntax error" need a file that parses: finish the last line
    nvim.exec_lua("vim.api.nvim_buf_set_lines(0, -2, -1, false, {'    total = width + height'})")
    text = buffer_text(nvim)
    nvim.exec_lua("vim.api.nvim_win_set_cursor(0, {5, 4})")  # inside area()
    params = ("(function() local p = vim.lsp.util.make_range_params(); "
              "p.context = {diagnostics = {}}; return p end)()")
    listed = request(nvim, "textDocument/codeAction", params)
    titles = [a["title"] for a in listed]
    assert any(t.startswith("Add docstring") for t in titles), titles
    assert all("edit" not in a for a in listed)  # the model runs at resolve, not in the list
    resolved = None
    for action in listed:
        got = request(nvim, "codeAction/resolve",
                      f"vim.fn.json_decode([==[{json.dumps(action)}]==])")
        if got.get("edit"):
            resolved = got
            break
    assert resolved is not None, f"the server resolved none of {titles} to an edit"
    uri = nvim.exec_lua("return vim.uri_from_bufnr(0)")
    expected = apply_text_edits(text, resolved["edit"]["changes"][uri])
    assert expected != text

    # now the way a user does it: the mapping, a pick, the resolve, the edit applied
    nvim.exec_lua("""
      local title = ...
      _G.cromwell_offered = nil
      vim.ui.select = function(items, opts, on_choice)
        _G.cromwell_offered = #items
        for i, item in ipairs(items) do
          local action = item[2] or item.action or item
          if action.title == title then return on_choice(item, i) end
        end
        on_choice(nil, nil)
      end
    """, resolved["title"])
    leader = nvim.exec_lua("return vim.g.mapleader") or "\\"
    nvim.feedkeys(nvim.replace_termcodes(f"{leader}ca", True, False, True), "x", False)
    changed = nvim.exec_lua("""
      local before, ms = ...
      return vim.wait(ms, function()
        return table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), "\\n") ~= before
      end, 50)
    """, text, WAIT_MS)
    assert nvim.exec_lua("return _G.cromwell_offered") == len(listed)
    assert changed, "the picked code action did not change the buffer"
    assert buffer_text(nvim) == expected
