// Bundles the UI into dist/: one JS file, one CSS file and index.html, all served from the vigil binary.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, rmSync } from "node:fs";

rmSync("dist", { recursive: true, force: true });
mkdirSync("dist/assets", { recursive: true });
await build({
  entryPoints: ["src/main.ts"],
  bundle: true,
  minify: true,
  sourcemap: false,
  target: ["es2020"],
  format: "esm",
  outfile: "dist/assets/app.js",
  logLevel: "warning",
});
copyFileSync("index.html", "dist/index.html");
