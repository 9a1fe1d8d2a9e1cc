/**
 * The Cromwell extension: starts `python -m cromwell_lsp` (stdio) through
 * vscode-languageclient, which brings inline completions, the suggest-list fallback, code
 * actions and hovers; mirrors the `cromwell.*` settings to the server; shows the server's
 * state and the last completion latency in the status bar.  The pure parts (settings
 * mapping, interpreter choice) live in config.ts.
 */
import { execFile } from "child_process";
import * as fs from "fs";
import * as vscode from "vscode";
import {
  DidChangeConfigurationNotification,
  LanguageClient,
  LanguageClientOptions,
  RevealOutputChannelOn,
  ServerOptions,
  State,
  TransportKind,
} from "vscode-languageclient/node";
import * as cfg from "./config";

const STATS = "cromwell/stats";
const STATS_EVERY_MS = 10_000;

interface ServerState {
  phase: "starting" | "running" | "stopped" | "error";
  modelLoaded?: boolean;
  latencyMs?: number;
  error?: string;
  interpreter?: cfg.Interpreter;
}

let client: LanguageClient | undefined;
let output: vscode.LogOutputChannel;
let status: vscode.StatusBarItem;
let state: ServerState = { phase: "stopped" };
let starting: Promise<void> | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  output = vscode.window.createOutputChannel("Cromwell", { log: true });
  status = vscode.window.createStatusBarItem("cromwell.status", vscode.StatusBarAlignment.Right, 100);
  status.name = "Cromwell";
  status.command = "cromwell.showLog";
  status.show();
  context.subscriptions.push(
    output,
    status,
    vscode.commands.registerCommand("cromwell.restartServer", () => restart()),
    vscode.commands.registerCommand("cromwell.toggleInlineCompletions", toggleInline),
    vscode.commands.registerCommand("cromwell.showLog", () => output.show(true)),
    vscode.commands.registerCommand("cromwell.selectInterpreter", selectInterpreter),
    vscode.workspace.onDidChangeConfiguration(onConfigurationChanged),
  );
  const timer = setInterval(() => void pollStats(), STATS_EVERY_MS);
  context.subscriptions.push({ dispose: () => clearInterval(timer) });
  await watchPythonExtension(context);
  await restart();
}

export async function deactivate(): Promise<void> {
  await stop();
}

// ---- settings ------------------------------------------------------------------------------
function settings(): vscode.WorkspaceConfiguration {
  return vscode.workspace.getConfiguration("cromwell");
}

function workspaceFolder(): string | undefined {
  return vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
}

function serverSettings(): cfg.ServerSettings {
  const c = settings();
  return cfg.serverSettings((key) => c.get(key), workspaceFolder());
}

async function onConfigurationChanged(e: vscode.ConfigurationChangeEvent): Promise<void> {
  if (!e.affectsConfiguration("cromwell")) return;
  if (e.affectsConfiguration("cromwell.pythonPath") || e.affectsConfiguration("cromwell.languages")) {
    await restart();
    return;
  }
  if (client?.isRunning()) {
    await client.sendNotification(DidChangeConfigurationNotification.type,
      { settings: serverSettings() });
    output.appendLine(`settings sent: ${JSON.stringify(serverSettings())}`);
    await pollStats();
  }
  render();
}

async function toggleInline(): Promise<void> {
  const c = settings();
  const on = !c.get<boolean>("features.inlineCompletion", true);
  const where = c.inspect("features.inlineCompletion");
  const target = where?.workspaceFolderValue !== undefined ? vscode.ConfigurationTarget.WorkspaceFolder
    : where?.workspaceValue !== undefined ? vscode.ConfigurationTarget.Workspace
      : vscode.ConfigurationTarget.Global;
  await c.update("features.inlineCompletion", on, target);
  vscode.window.setStatusBarMessage(`Cromwell: inline completions ${on ? "on" : "off"}`, 3000);
}

// ---- the interpreter -------------------------------------------------------------------------
/** The Python extension's selected interpreter as a command line, if that extension is here. */
async function pythonExtensionCommand(): Promise<string[] | undefined> {
  const ext = vscode.extensions.getExtension("ms-python.python");
  if (!ext) return undefined;
  try {
    const api = ext.isActive ? ext.exports : await ext.activate();
    const resource = vscode.workspace.workspaceFolders?.[0]?.uri;
    const exec = api?.settings?.getExecutionDetails?.(resource)?.execCommand;
    if (Array.isArray(exec) && exec.length) return exec.map(String);
    const env = api?.environments?.getActiveEnvironmentPath?.(resource);
    if (env?.path) return [String(env.path)];
  } catch (err) {
    output.appendLine(`the Python extension did not name an interpreter: ${err}`);
  }
  return undefined;
}

async function watchPythonExtension(context: vscode.ExtensionContext): Promise<void> {
  const ext = vscode.extensions.getExtension("ms-python.python");
  if (!ext) return;
  try {
    const api = ext.isActive ? ext.exports : await ext.activate();
    const event = api?.environments?.onDidChangeActiveEnvironmentPath;
    if (typeof event === "function") {
      context.subscriptions.push(event(() => {
        if (state.interpreter?.source === "python-extension") void restart();
      }));
    }
  } catch {
    // no events from that extension: a restart picks the new interpreter up
  }
}

function canImport(python: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    // the server module, not just the package: it also needs pygls and lsprotocol there
    execFile(python, ["-c", "import cromwell_lsp.server"], { timeout: 60_000, cwd: workspaceFolder() },
      (err, _stdout, stderr) => resolve(err ? (stderr || err.message) : undefined));
  });
}

function cannotStart(message: string): void {
  output.appendLine(message);
  state = { ...state, phase: "error", error: message };
  render();
  void vscode.window.showErrorMessage(message, "Select interpreter", "Show log").then((pick) => {
    if (pick === "Select interpreter") {
      void selectInterpreter();
    } else if (pick === "Show log") {
      output.show(true);
    }
  });
}

/** A quick pick of the interpreters we can see (each checked for cromwell_lsp) and a file
 * browser; the choice goes to the cromwell.pythonPath setting, which restarts the server. */
async function selectInterpreter(): Promise<void> {
  const folder = workspaceFolder();
  const seen = new Set<string>();
  const candidates: string[] = [];
  const add = (p: string | undefined) => {
    if (p && !seen.has(p)) { seen.add(p); candidates.push(p); }
  };
  const ext = await pythonExtensionCommand();
  if (ext?.length === 1) add(ext[0]);
  if (folder) cfg.venvCandidates(folder).filter((p) => fs.existsSync(p)).forEach(add);
  add(process.platform === "win32" ? "python" : "python3");
  type Item = vscode.QuickPickItem & { path?: string };
  const items: Item[] = await Promise.all(candidates.map(async (p) => {
    const problem = await canImport(p);
    return { label: p, path: p,
      description: problem === undefined ? "has cromwell_lsp" : "cromwell_lsp not importable" };
  }));
  items.push({ label: "$(folder) Browse…" });
  const pick = await vscode.window.showQuickPick(items,
    { title: "Cromwell: the Python interpreter that runs the server" });
  if (!pick) return;
  let chosen = pick.path;
  if (chosen === undefined) {
    const uris = await vscode.window.showOpenDialog({ canSelectMany: false, title: "Python interpreter" });
    chosen = uris?.[0]?.fsPath;
  }
  if (!chosen) return;
  await settings().update("pythonPath", chosen, vscode.ConfigurationTarget.Global);
}

// ---- the client ------------------------------------------------------------------------------
async function stop(): Promise<void> {
  const old = client;
  client = undefined;
  if (old) {
    try {
      await old.stop(5000);
    } catch (err) {
      output.appendLine(`stopping the server: ${err}`);
    }
  }
}

function restart(): Promise<void> {
  const next = (starting ?? Promise.resolve()).then(start, start);
  starting = next;
  return next;
}

async function start(): Promise<void> {
  await stop();
  state = { phase: "starting" };
  render();
  const interpreter = cfg.chooseInterpreter({
    setting: settings().get<string>("pythonPath", ""),
    pythonExtension: await pythonExtensionCommand(),
    workspaceFolder: workspaceFolder(),
    exists: (p) => fs.existsSync(p),
  });
  state.interpreter = interpreter;
  output.appendLine(`interpreter: ${interpreter.command} (from ${interpreter.source})`);
  const problem = await canImport(interpreter.command);
  if (problem !== undefined) {
    cannotStart(cfg.notImportableMessage(interpreter, problem));
    return;
  }
  const { command, args } = cfg.serverCommand(interpreter);
  const serverOptions: ServerOptions = {
    command, args, transport: TransportKind.stdio,
    options: { cwd: workspaceFolder(), env: { ...process.env, PYTHONUNBUFFERED: "1" } },
  };
  const languages = settings().get<string[]>("languages", ["python", "markdown"]);
  const clientOptions: LanguageClientOptions = {
    documentSelector: languages.flatMap((language) => [
      { scheme: "file", language }, { scheme: "untitled", language }]),
    initializationOptions: serverSettings(),
    outputChannel: output,
    revealOutputChannelOn: RevealOutputChannelOn.Never,
    middleware: {
      provideInlineCompletionItems: async (document, position, context, token, next) => {
        const t0 = Date.now();
        try {
          const result = await next(document, position, context, token);
          if (!token.isCancellationRequested) {
            state.latencyMs = Date.now() - t0;
            state.error = undefined;
            render();
          }
          return result;
        } catch (err) {
          state.error = String(err);
          render();
          throw err;
        }
      },
    },
  };
  const c = new LanguageClient("cromwell", "Cromwell", serverOptions, clientOptions);
  c.onDidChangeState((e) => {
    if (client !== c) return;
    if (e.newState === State.Running) state.phase = "running";
    else if (e.newState === State.Stopped) state.phase = state.phase === "error" ? "error" : "stopped";
    render();
  });
  client = c;
  try {
    await c.start();
  } catch (err) {
    if (client === c) cannotStart(`Cromwell: the server did not start: ${err}`);
    return;
  }
  await pollStats();
}

async function pollStats(): Promise<void> {
  const c = client;
  if (!c?.isRunning()) return;
  try {
    const stats = await c.sendRequest<{ model_loaded?: boolean }>(STATS, null);
    state.modelLoaded = !!stats?.model_loaded;
  } catch (err) {
    output.appendLine(`${STATS}: ${err}`);
  }
  render();
}

// ---- the status bar ---------------------------------------------------------------------------
function render(): void {
  const inlineOn = settings().get<boolean>("features.inlineCompletion", true);
  let text = "$(sparkle) Cromwell";
  const lines: string[] = [];
  let error = false;
  if (state.phase === "starting") {
    text = "$(sync~spin) Cromwell";
    lines.push("Starting the server…");
  } else if (state.phase === "error" || state.phase === "stopped") {
    text = "$(error) Cromwell";
    error = state.phase === "error";
    lines.push(state.error ?? "The server is stopped. Run “Cromwell: Restart Server”.");
  } else if (state.modelLoaded === false) {
    text = "$(warning) Cromwell: no model";
    lines.push("The server runs without a model: set cromwell.modelPath (see the log).");
  } else {
    if (!inlineOn) text = "$(circle-slash) Cromwell";
    else if (state.latencyMs !== undefined) text += ` ${cfg.formatLatency(state.latencyMs)}`;
    lines.push(state.modelLoaded ? "Model loaded." : "Running.");
    if (state.latencyMs !== undefined) {
      lines.push(`Last inline completion: ${cfg.formatLatency(state.latencyMs)}.`);
    }
    if (state.error) lines.push(`Last error: ${state.error}`);
  }
  if (state.interpreter) lines.push(`Python: ${state.interpreter.command}`);
  lines.push(`Inline completions ${inlineOn ? "on" : "off"}. Click for the log.`);
  status.text = text;
  status.tooltip = lines.join("\n");
  status.backgroundColor = error ? new vscode.ThemeColor("statusBarItem.errorBackground") : undefined;
}
