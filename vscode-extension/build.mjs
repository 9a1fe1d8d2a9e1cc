// Bundles the extension with esbuild (dist/extension.js, `vscode` left external) and builds
// the pure module alone for the unit tests (out/config.js, no `vscode` import).
import * as esbuild from "esbuild";

const common = { bundle: true, platform: "node", format: "cjs", target: "node18", sourcemap: true };
await esbuild.build({ ...common, entryPoints: ["src/extension.ts"], outfile: "dist/extension.js",
  external: ["vscode"], minify: process.argv.includes("--minify") });
await esbuild.build({ ...common, entryPoints: ["src/config.ts"], outfile: "out/config.js" });
