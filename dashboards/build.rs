//! Builds the web UI (TypeScript, bundled by esbuild) into `ui/dist`, which `rust-embed` then embeds.
//! Needs Node.js and npm; dependencies come from `ui/package-lock.json` (`npm ci`) on the first build.

use std::path::Path;
use std::process::Command;

fn main() {
    for watched in ["ui/src", "ui/index.html", "ui/build.mjs", "ui/package.json", "ui/package-lock.json"] {
        println!("cargo:rerun-if-changed={watched}");
    }
    let ui = Path::new("ui");
    if !ui.join("node_modules/.package-lock.json").exists() {
        npm(ui, &["ci", "--no-audit", "--no-fund"]);
    }
    npm(ui, &["run", "build"]);
}

fn npm(dir: &Path, args: &[&str]) {
    let status = Command::new("npm").args(args).current_dir(dir).status().unwrap_or_else(|error| {
        panic!("the web UI needs Node.js and npm to build (`npm {}` in dashboards/ui): {error}", args.join(" "))
    });
    assert!(status.success(), "`npm {}` in dashboards/ui failed with {status}", args.join(" "));
}
