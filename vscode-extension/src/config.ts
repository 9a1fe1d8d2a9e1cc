/**
 * The pure parts of the extension (no `vscode` import, so node:test runs them offline):
 * the mapping from the `cromwell.*` settings to the server's settings object (sent as
 * initializationOptions and in workspace/didChangeConfiguration; the server's
 * cromwell_lsp/settings.py reads the same camelCase keys), and the choice of the Python
 * interpreter that runs `python -m cromwell_lsp`.
 */
import * as os from "os";

/** Settings the server reads, with the server's defaults (cromwell_lsp/settings.py). */
export const SERVER_DEFAULTS = {
  modelPath: "",
  threads: 0,
  maxTokens: 64,
  temperature: 0.0,
  debounceMs: 30,
  idleMs: 800,
  cacheBudgetMb: 512,
  contextWindow: 2048,
  kvCache: true,
  syntaxGuard: true,
  alternatives: 2,
} as const;

export const FEATURE_DEFAULTS = {
  inlineCompletion: true,
  completion: true,
  codeActions: true,
  hover: true,
  diagnostics: true,
} as const;

export type ServerKey = keyof typeof SERVER_DEFAULTS;
export type FeatureKey = keyof typeof FEATURE_DEFAULTS;

export interface ServerSettings {
  modelPath?: string;
  threads?: number;
  maxTokens?: number;
  temperature?: number;
  debounceMs?: number;
  idleMs?: number;
  cacheBudgetMb?: number;
  contextWindow?: number;
  kvCache?: boolean;
  syntaxGuard?: boolean;
  alternatives?: number;
  features?: Partial<Record<FeatureKey, boolean>>;
}

/** Reads one `cromwell.<key>` setting (e.g. `get("features.hover")`); undefined if unset. */
export type Getter = (key: string) => unknown;

/** Paths may start with `~` or name `${workspaceFolder}` / `${userHome}`. */
export function expandPath(value: string, workspaceFolder?: string, home = os.homedir()): string {
  let out = value.trim();
  if (out === "~" || out.startsWith("~/")) out = home + out.slice(1);
  out = out.replace(/\$\{userHome\}/g, home);
  if (workspaceFolder !== undefined) {
    out = out.replace(/\$\{workspaceFolder\}/g, workspaceFolder);
  }
  return out;
}

/**
 * The server's settings object from the `cromwell.*` settings: only the keys the server
 * knows (client-only settings such as pythonPath stay out, or the server would warn about
 * unknown keys), values of the wrong type dropped (the server keeps its default), model
 * paths expanded.
 */
export function serverSettings(get: Getter, workspaceFolder?: string): ServerSettings {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(SERVER_DEFAULTS) as ServerKey[]) {
    const value = get(key);
    if (value === undefined || value === null) continue;
    if (typeof value !== typeof SERVER_DEFAULTS[key]) continue;
    if (typeof value === "number" && !Number.isFinite(value)) continue;
    out[key] = key === "modelPath" ? expandPath(value as string, workspaceFolder) : value;
  }
  const features: Partial<Record<FeatureKey, boolean>> = {};
  for (const key of Object.keys(FEATURE_DEFAULTS) as FeatureKey[]) {
    const value = get(`features.${key}`);
    if (typeof value === "boolean") features[key] = value;
  }
  if (Object.keys(features).length) out.features = features;
  return out as ServerSettings;
}

export type InterpreterSource = "setting" | "python-extension" | "venv" | "path";

export interface Interpreter {
  command: string;
  source: InterpreterSource;
}

/** The interpreters a workspace's virtual environment would have, in the order we try them. */
export function venvCandidates(workspaceFolder: string, platform: NodeJS.Platform = process.platform): string[] {
  const sep = platform === "win32" ? "\\" : "/";
  const exe = platform === "win32" ? ["Scripts", "python.exe"] : ["bin", "python"];
  return [".venv", "venv"].map((dir) => [workspaceFolder, dir, ...exe].join(sep));
}

/**
 * The interpreter that runs the server: the `cromwell.pythonPath` setting, else the Python
 * extension's selected interpreter (its execCommand: a path, or a launcher such as
 * `conda run -n env python`, whose first word we take only when it has no arguments), else
 * the workspace's `.venv` (or `venv`), else `python3` on PATH (`python` on Windows).
 * `exists` tells whether a file exists (injected so that this stays testable).
 */
export function chooseInterpreter(opts: {
  setting?: string;
  pythonExtension?: string[];
  workspaceFolder?: string;
  platform?: NodeJS.Platform;
  home?: string;
  exists?: (path: string) => boolean;
}): Interpreter {
  const setting = (opts.setting ?? "").trim();
  if (setting) {
    return { command: expandPath(setting, opts.workspaceFolder, opts.home), source: "setting" };
  }
  const exec = (opts.pythonExtension ?? []).filter((s) => s.trim() !== "");
  if (exec.length === 1) {
    return { command: exec[0], source: "python-extension" };
  }
  const platform = opts.platform ?? process.platform;
  if (opts.workspaceFolder && opts.exists) {
    const venv = venvCandidates(opts.workspaceFolder, platform).find((p) => opts.exists!(p));
    if (venv) return { command: venv, source: "venv" };
  }
  return { command: platform === "win32" ? "python" : "python3", source: "path" };
}

/** The server's command line for an interpreter (the client appends `--stdio`). */
export function serverCommand(interpreter: Interpreter): { command: string; args: string[] } {
  return { command: interpreter.command, args: ["-m", "cromwell_lsp"] };
}

/** A one-line message for an interpreter that cannot import cromwell_lsp. */
export function notImportableMessage(interpreter: Interpreter, detail: string): string {
  const where = {
    setting: "the setting cromwell.pythonPath",
    "python-extension": "the Python extension's selected interpreter",
    venv: "the workspace's virtual environment",
    path: "PATH",
  }[interpreter.source];
  const last = detail.trim().split(/\r?\n/).filter((l) => l.trim()).pop() ?? "";
  return `Cromwell cannot start: ${interpreter.command} (from ${where}) cannot import ` +
    `cromwell_lsp${last ? ` (${last})` : ""}. Install it there with ` +
    "`pip install cromwell-lsp`, or set cromwell.pythonPath to an interpreter that has it.";
}

/** Status-bar text for a latency in milliseconds. */
export function formatLatency(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

/** Test helper and glue: a Getter over a nested plain object such as
 * `{maxTokens: 8, features: {hover: false}}`. */
export function getterOf(obj: Record<string, unknown>): Getter {
  return (key) => {
    let cur: unknown = obj;
    for (const part of key.split(".")) {
      if (cur === null || typeof cur !== "object") return undefined;
      cur = (cur as Record<string, unknown>)[part];
    }
    return cur;
  };
}
