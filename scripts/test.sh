#!/usr/bin/env bash
# Runs every test: unit, property, conformance and end-to-end. Installs the test peers it needs
# when they are missing (Debian packages, PyPI, npm), then runs the Rust test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d ../shared/conformance ]; then
  echo "warning: ../shared/conformance is missing; conformance tests will fail with a message saying so" >&2
fi

for cmd in cargo kill python3 node; do
  command -v "$cmd" >/dev/null 2>&1 || { echo "missing required command: $cmd" >&2; exit 1; }
done

# kubectl comes with the machine; the `kubectl top` end-to-end test needs it.
command -v kubectl >/dev/null 2>&1 || echo "warning: kubectl is missing; tests/kubectl_top.rs will fail saying so" >&2

# Test peers from Debian packages: command -> package.
declare -A peers=([prometheus]=prometheus [promtool]=prometheus [prometheus-alertmanager]=prometheus-alertmanager [prometheus-node-exporter]=prometheus-node-exporter)
missing=()
for cmd in "${!peers[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${peers[$cmd]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  packages=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
  echo "installing test peers: $packages"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends $packages
fi
# The Debian package starts a system Prometheus on :9090; tests start their own on free ports.

# Test peers from PyPI: the OpenTelemetry SDK and its OTLP/HTTP and OTLP/gRPC exporters.
if ! python3 -c "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http, opentelemetry.exporter.otlp.proto.grpc" >/dev/null 2>&1; then
  echo "installing test peers: opentelemetry-sdk opentelemetry-exporter-otlp-proto-http opentelemetry-exporter-otlp-proto-grpc"
  python3 -m pip install -q opentelemetry-sdk opentelemetry-exporter-otlp-proto-http opentelemetry-exporter-otlp-proto-grpc
fi

# Test peers for the browser tests: Debian's Chromium, and Playwright (npm playwright-core) to drive it.
# Node.js and npm build the web UI too (dashboards/build.rs).
command -v npm >/dev/null 2>&1 || { echo "missing required command: npm (Node.js builds the web UI)" >&2; exit 1; }
if ! command -v chromium >/dev/null 2>&1; then
  echo "installing test peer: chromium"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends chromium
fi
if [ ! -d tests/ui/node_modules/playwright-core ]; then
  echo "installing test peer: playwright-core"
  (cd tests/ui && npm ci --no-audit --no-fund)
fi
# The UI's TypeScript is type-checked here; the bundler (esbuild) only strips types.
(cd dashboards/ui && { [ -d node_modules ] || npm ci --no-audit --no-fund; } && npm run --silent check)

cargo build --workspace --all-targets
cargo test --workspace --no-fail-fast 2>&1 | tee target/test-output.txt
status=${PIPESTATUS[0]}

passed=$(grep -Eo '^test result: .* ([0-9]+) passed' target/test-output.txt | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '^test result: .* ([0-9]+) failed' target/test-output.txt | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
echo
echo "${passed} passed, ${failed} failed"
exit "$status"
