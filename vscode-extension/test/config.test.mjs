// Unit tests of the extension's pure parts (out/config.js, built by `npm test`), offline
// with node:test: settings -> server settings, interpreter choice, messages.
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import test from "node:test";
import { readFileSync } from "node:fs";

const cfg = createRequire(import.meta.url)("../out/config.js");

test("every server setting is mirrored with its camelCase key", () => {
  const settings = {
    pythonPath: "/venv/bin/python", languages: ["python"], modelPath: "/m/model.safetensors",
    threads: 2, maxTokens: 16, temperature: 0.2, debounceMs: 0, idleMs: 500,
    cacheBudgetMb: 128, contextWindow: 1024, kvCache: false, syntaxGuard: false,
    alternatives: 0,
    features: { inlineCompletion: false, completion: true, codeActions: true, hover: false,
      diagnostics: true },
    trace: { server: "verbose" },
  };
  assert.deepEqual(cfg.serverSettings(cfg.getterOf(settings)), {
    modelPath: "/m/model.safetensors", threads: 2, maxTokens: 16, temperature: 0.2,
    debounceMs: 0, idleMs: 500, cacheBudgetMb: 128, contextWindow: 1024, kvCache: false,
    syntaxGuard: false, alternatives: 0,
    features: { inlineCompletion: false, completion: true, codeActions: true, hover: false,
      diagnostics: true },
  });
});

test("the defaults match the server's defaults", () => {
  const defaults = { ...cfg.SERVER_DEFAULTS, features: { ...cfg.FEATURE_DEFAULTS } };
  assert.deepEqual(cfg.serverSettings(cfg.getterOf(defaults)), defaults);
  assert.equal(cfg.SERVER_DEFAULTS.maxTokens, 64);
  assert.equal(cfg.SERVER_DEFAULTS.debounceMs, 30);
  assert.equal(cfg.SERVER_DEFAULTS.contextWindow, 2048);
});

test("client-only, unset and mistyped settings stay out", () => {
  const got = cfg.serverSettings(cfg.getterOf({
    pythonPath: "/x", maxTokens: "many", threads: null, temperature: Number.NaN,
    features: { hover: "yes" },
  }));
  assert.deepEqual(got, {});
});

test("model paths expand ~ and ${workspaceFolder}", () => {
  const get = cfg.getterOf({ modelPath: "${workspaceFolder}/weights/m.safetensors" });
  assert.equal(cfg.serverSettings(get, "/proj").modelPath, "/proj/weights/m.safetensors");
  assert.equal(cfg.expandPath("~/m.safetensors", undefined, "/home/u"), "/home/u/m.safetensors");
  assert.equal(cfg.expandPath("${userHome}/a", undefined, "/home/u"), "/home/u/a");
  assert.equal(cfg.expandPath("/a/~b", undefined, "/home/u"), "/a/~b");
});

test("package.json declares every server setting with the server's default", () => {
  const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"));
  const props = pkg.contributes.configuration.properties;
  for (const [key, value] of Object.entries(cfg.SERVER_DEFAULTS)) {
    assert.equal(props[`cromwell.${key}`]?.default, value, key);
  }
  for (const [key, value] of Object.entries(cfg.FEATURE_DEFAULTS)) {
    assert.equal(props[`cromwell.features.${key}`]?.default, value, key);
  }
});

test("the pythonPath setting wins", () => {
  assert.deepEqual(
    cfg.chooseInterpreter({ setting: " ~/venv/bin/python ", pythonExtension: ["/usr/bin/python3.12"],
      home: "/home/u" }),
    { command: "/home/u/venv/bin/python", source: "setting" });
  assert.deepEqual(
    cfg.chooseInterpreter({ setting: "${workspaceFolder}/.venv/bin/python", workspaceFolder: "/p" }),
    { command: "/p/.venv/bin/python", source: "setting" });
});

test("then the Python extension's interpreter, then python3 on PATH", () => {
  assert.deepEqual(cfg.chooseInterpreter({ setting: "", pythonExtension: ["/opt/py/bin/python"] }),
    { command: "/opt/py/bin/python", source: "python-extension" });
  // a launcher with arguments (conda run ...) cannot take `-m cromwell_lsp` after it safely
  assert.deepEqual(
    cfg.chooseInterpreter({ pythonExtension: ["conda", "run", "-n", "x", "python"], platform: "linux" }),
    { command: "python3", source: "path" });
  assert.deepEqual(cfg.chooseInterpreter({ platform: "linux" }), { command: "python3", source: "path" });
  // no Python extension: the workspace's .venv (then venv) when it exists
  const exists = (p) => p === "/p/venv/bin/python";
  assert.deepEqual(cfg.chooseInterpreter({ workspaceFolder: "/p", exists, platform: "linux" }),
    { command: "/p/venv/bin/python", source: "venv" });
  assert.deepEqual(cfg.chooseInterpreter({ workspaceFolder: "/p", exists: () => true, platform: "linux" }),
    { command: "/p/.venv/bin/python", source: "venv" });
  assert.deepEqual(cfg.chooseInterpreter({ workspaceFolder: "/q", exists, platform: "linux" }),
    { command: "python3", source: "path" });
  assert.deepEqual(cfg.venvCandidates("C:\\w", "win32"),
    ["C:\\w\\.venv\\Scripts\\python.exe", "C:\\w\\venv\\Scripts\\python.exe"]);
  assert.deepEqual(cfg.chooseInterpreter({ platform: "win32" }), { command: "python", source: "path" });
});

test("the server command line", () => {
  assert.deepEqual(cfg.serverCommand({ command: "/v/bin/python", source: "setting" }),
    { command: "/v/bin/python", args: ["-m", "cromwell_lsp"] });
});

test("the not-importable message names the interpreter, its origin and the fix", () => {
  const msg = cfg.notImportableMessage({ command: "python3", source: "path" },
    "Traceback (most recent call last):\n  File ...\nModuleNotFoundError: No module named 'cromwell_lsp'\n");
  assert.match(msg, /python3 \(from PATH\) cannot import cromwell_lsp/);
  assert.match(msg, /ModuleNotFoundError: No module named 'cromwell_lsp'\)/);
  assert.match(msg, /cromwell\.pythonPath/);
});

test("latency formatting", () => {
  assert.equal(cfg.formatLatency(87.4), "87 ms");
  assert.equal(cfg.formatLatency(1530), "1.5 s");
});
