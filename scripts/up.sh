#!/usr/bin/env bash
# Builds Vigil (release, web UI included) and runs `vigil up`: the server plus a local agent observing this machine.
# Extra arguments go to `vigil up`, e.g. scripts/up.sh --http-addr 127.0.0.1:9090
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is needed: install Rust from your distribution or rustup" >&2
  exit 1
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "Node.js and npm are needed: the build compiles the web UI (install nodejs and npm)" >&2
  exit 1
fi
cargo build --release --bin vigil
exec ./target/release/vigil up "$@"
