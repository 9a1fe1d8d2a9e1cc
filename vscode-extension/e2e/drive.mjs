// Drives VS Code (code-server in chromium, through puppeteer-core) the way a user does and
// reports what it saw as one JSON document on stdout; tests/test_vscode.py starts
// code-server, prepares the workspace and judges the report.  Progress goes to stderr.
//
//   node e2e/drive.mjs '{"url": ..., "chromium": ..., "workspace": ..., "artifacts": ...,
//                        "completionFile": "shapes.py", "actionFile": "actions.py",
//                        "actionTitle": "Add docstring to area", "hoverWord": "area",
//                        "markdownFile": "notes.md", "imageWord": "shot.png"}'
//
// Each step saves a screenshot under `artifacts` and adds its observations to the report;
// a step that fails records its error and the run goes on to the next (later steps do not
// depend on earlier ones), so one broken feature does not hide the others.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import puppeteer from "puppeteer-core";

const args = JSON.parse(process.argv[2]);
const report = { steps: {}, errors: {} };
const log = (...a) => console.error(`[e2e ${((Date.now() - T0) / 1000).toFixed(1)}s]`, ...a);
const T0 = Date.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const modKey = "Control";

const browser = await puppeteer.launch({
  executablePath: args.chromium,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900",
    "--no-first-run", "--no-default-browser-check"],
  defaultViewport: { width: 1400, height: 900 },
});
const page = await browser.newPage();
page.on("pageerror", (err) => log("page error:", String(err).slice(0, 300)));

async function shot(name) {
  const path = join(args.artifacts, `vscode-${name}.png`);
  await page.screenshot({ path });
  return path;
}

async function press(...keys) {
  for (const k of keys) await page.keyboard.down(k);
  for (const k of [...keys].reverse()) await page.keyboard.up(k);
}

/** Waits for fn() (evaluated in the page) to be truthy; returns its value or throws. */
async function until(what, fn, timeoutMs, arg) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await page.evaluate(fn, arg).catch(() => undefined);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

async function runCommand(title) {
  await press("F1");
  await page.waitForSelector(".quick-input-widget input", { visible: true, timeout: 10_000 });
  await page.keyboard.type(title);
  await sleep(400);
  await press("Enter");
}

async function openFile(name) {
  await press(modKey, "p");
  await page.waitForSelector(".quick-input-widget input", { visible: true, timeout: 10_000 });
  await page.keyboard.type(name);
  await until(`quick open to put ${name} first`, (n) => document.querySelector(
    ".quick-input-list .monaco-list-row.focused")?.textContent.includes(n), 15_000, name);
  const t = Date.now();
  await press("Enter");
  await until(`the editor tab of ${name}`, (n) => [...document.querySelectorAll(
    ".tabs-container .tab.active")].some((t) => t.textContent.includes(n)), 15_000, name);
  await until("the editor to take focus", () => document.activeElement?.closest?.(".monaco-editor")
    && document.querySelector(".monaco-editor .view-lines")?.textContent.length > 0, 15_000);
  return t;
}

/** The ghost text on show: the inline part after the cursor plus the lines of the view
 * zone below it, with the non-breaking spaces of the rendering turned back into spaces. */
const readGhost = () => {
  const editor = document.activeElement?.closest?.(".monaco-editor") ?? document;
  const inline = [...editor.querySelectorAll(".ghost-text-decoration")]
    .map((e) => e.textContent).join("");
  const below = [...editor.querySelectorAll(".ghost-text .view-line")]
    .map((e) => e.textContent);
  if (!inline && !below.length) return null;
  return { text: [inline, ...below].join("\n").replace(/\u00a0/g, " "), inline, below };
};

async function saveAndRead(file) {
  await press(modKey, "s");
  await sleep(600);
  return readFileSync(join(args.workspace, file), "utf8");
}

/** Screen centre of the first token in the active editor whose text is `word`. */
async function tokenCentre(word) {
  return until(`the token ${word}`, (w) => {
    const editor = document.activeElement?.closest?.(".monaco-editor") ?? document;
    for (const span of editor.querySelectorAll(".view-lines .view-line span span")) {
      const i = span.textContent.indexOf(w);
      if (i < 0) continue;
      const r = span.getBoundingClientRect();
      const perChar = r.width / Math.max(1, span.textContent.length);
      return { x: r.left + perChar * (i + w.length / 2), y: r.top + r.height / 2 };
    }
    return null;
  }, 10_000, word);
}

async function hoverOn(word, expect) {
  await page.mouse.move(5, 5);
  await sleep(300);
  const { x, y } = await tokenCentre(word);
  await page.mouse.move(x, y);
  return until(`a hover on ${word} containing ${expect}`, (e) => {
    const texts = [...document.querySelectorAll(".monaco-hover-content")]
      .map((h) => h.innerText).filter((t) => t.includes(e));
    return texts.length ? texts.join("\n---\n") : null;
  }, 60_000, expect);
}

const statusText = () => [...document.querySelectorAll(".statusbar-item")]
  .map((e) => e.innerText.trim()).find((t) => t.includes("Cromwell")) ?? null;

async function step(name, fn) {
  log(`step ${name}`);
  try {
    report.steps[name] = await fn();
  } catch (err) {
    report.errors[name] = String(err?.stack ?? err);
    log(`step ${name} failed: ${err}`);
    await shot(`${name}-failed`).catch(() => {});
  }
}

try {
  await page.goto(args.url, { waitUntil: "domcontentloaded", timeout: 120_000 });
  await page.waitForSelector(".monaco-workbench", { timeout: 120_000 });
  await until("the explorer to list the workspace", (f) => [...document.querySelectorAll(
    ".explorer-folders-view .monaco-list-row")].some((r) => r.textContent.includes(f)),
    120_000, args.completionFile);
  await sleep(1000);
  await shot("0-workbench");

  await step("ghost", async () => {
    const opened = await openFile(args.completionFile);
    await shot("1-opened");
    await press(modKey, "End");
    const before = readFileSync(join(args.workspace, args.completionFile), "utf8");
    const typedAt = Date.now();
    await page.keyboard.type(args.typed);
    // VS Code asks on typing; when that was before the server was ready, nobody asks
    // again, so a user would type on: retype the last character (Backspace, then it again)
    // every 1.5 s until a ghost text shows; the text stays the same
    let ghost = null;
    let retypes = 0;
    const deadline = Date.now() + 180_000;
    for (;;) {
      ghost = await until("ghost text", readGhost, 1_500).catch(() => null);
      if (ghost || Date.now() > deadline) break;
      await press("Backspace");
      await page.keyboard.type(args.typed.slice(-1));
      retypes += 1;
    }
    if (!ghost) throw new Error("no ghost text (.ghost-text-decoration) within 180 s");
    const shownAt = Date.now();
    // a retype can leave a request in flight whose answer replaces the ghost text just
    // shown: Tab goes only to a ghost text that stayed the same for half a second
    for (let i = 0; i < 20; i += 1) {
      await sleep(500);
      const again = await page.evaluate(readGhost);
      if (again && again.text === ghost.text) break;
      ghost = again ?? ghost;
    }
    await shot("2-ghost-text");
    const status = await page.evaluate(statusText);
    await press("Tab");
    await sleep(300);
    const after = await saveAndRead(args.completionFile);
    await shot("3-accepted");
    return { before, after, ghost, retypes, status, typed: args.typed,
      open_to_ghost_ms: shownAt - opened, keystroke_to_ghost_ms: shownAt - typedAt };
  });

  await step("action", async () => {
    await openFile(args.actionFile);
    const before = readFileSync(join(args.workspace, args.actionFile), "utf8");
    await press(modKey, "Home");
    await until("the lightbulb", () => document.querySelector(
      ".lightBulbWidget .codicon, .codicon-light-bulb, .codicon-lightbulb-sparkle, .codicon-lightbulb"),
    60_000);
    await shot("4-lightbulb");
    await press(modKey, ".");
    const titles = await until("the code action menu", () => {
      const rows = [...document.querySelectorAll(".action-widget .monaco-list-row")];
      return rows.length ? rows.map((r) => r.innerText.trim()) : null;
    }, 30_000);
    await shot("5-action-menu");
    const index = titles.findIndex((t) => t.includes(args.actionTitle));
    if (index < 0) throw new Error(`no "${args.actionTitle}" among ${JSON.stringify(titles)}`);
    const rows = await page.$$(".action-widget .monaco-list-row");
    await rows[index].click();
    // the resolve runs the model; the edit lands in the buffer (VS Code may save it at
    // once: files.refactoring.autoSave), so watch the rendered lines, not the dirty mark
    const changed = await until("the action's edit in the buffer", (b) => {
      const lines = [...document.querySelectorAll(
        ".editor-group-container.active .monaco-editor .view-lines .view-line")]
        .sort((x, y) => parseFloat(x.style.top) - parseFloat(y.style.top))
        .map((l) => l.textContent.replace(/\u00a0/g, " "));
      return lines.length && lines.join("\n") !== b ? true : null;
    }, 120_000, before).catch(() => false);
    await sleep(300);
    await shot("6-action-applied");
    const after = await saveAndRead(args.actionFile);
    return { before, after, titles, changed };
  });

  await step("hover_function", async () => {
    await openFile(args.completionFile);
    const text = await hoverOn(args.hoverWord, args.hoverExpect);
    await shot("7-hover-function");
    return { text };
  });

  await step("hover_image", async () => {
    await openFile(args.markdownFile);
    const text = await hoverOn(args.imageWord, "Screenshot");
    await shot("8-hover-screenshot");
    return { text };
  });
  report.status = await page.evaluate(statusText);
} catch (err) {
  report.errors.workbench = String(err?.stack ?? err);
  await shot("failed").catch(() => {});
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(report) + "\n");
