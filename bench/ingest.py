#!/usr/bin/env python3
"""Ingest load bench: one release `vigil server` on loopback, fed by two load generators in turn, each
reported as throughput over wall time and per CPU-second of the server process (what one core sustains):

1. remote write 1.0 (`remote_write_load`): node-exporter-like series, 2000 samples per request;
2. OTLP/gRPC spans (`trace_load`): realistic multi-service traces.

The WAL syncs before every acknowledgement (`--wal-fsync always`, the default).

Needs `cargo build --release` and
`cargo build --release -p vigil-collector --example remote_write_load --example trace_load`.

usage: bench/ingest.py [--samples 20000000] [--series 200000] [--spans 2000000] [--concurrency 4]
"""
import argparse
import json
import os
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIGIL = os.path.join(ROOT, "target/release/vigil")
EXAMPLES = os.path.join(ROOT, "target/release/examples")
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def start_server(data_dir):
    process = subprocess.Popen(
        [VIGIL, "server", "--data-dir", data_dir, "--http-addr", "127.0.0.1:0", "--otlp-http-addr", "127.0.0.1:0",
         "--otlp-grpc-addr", "127.0.0.1:0", "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        event = json.loads(process.stdout.readline())
        if event.get("message") == "vigil is ready":
            return process, event
    raise SystemExit("the server did not start")


def run(server, command, unit):
    before = cpu_seconds(server.pid)
    load = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    if load.returncode != 0:
        raise SystemExit(f"{command[0]} failed: {load.stderr[-2000:]}")
    time.sleep(1)
    cpu = cpu_seconds(server.pid) - before
    summary = json.loads(load.stdout)
    count, seconds = summary[unit], summary["seconds"]
    print(f"{unit}: {count:,} in {seconds:.1f} s = {count / seconds:,.0f}/s wall; server CPU {cpu:.1f} s = "
          f"{count / cpu:,.0f} {unit} per CPU-second; {summary['retries']} retried requests")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=20_000_000)
    parser.add_argument("--series", type=int, default=200_000)
    parser.add_argument("--spans", type=int, default=2_000_000)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vigil-ingest-bench-") as data_dir:
        server, ready = start_server(data_dir)
        try:
            write_url = f"http://{ready['http_addr']}/api/v1/write"
            run(server, [os.path.join(EXAMPLES, "remote_write_load"), write_url, str(args.samples),
                         "--series", str(args.series), "--concurrency", str(args.concurrency)], "samples")
            grpc = f"http://{ready['otlp_grpc_addr']}"
            run(server, [os.path.join(EXAMPLES, "trace_load"), grpc, str(args.spans),
                         "--concurrency", str(args.concurrency)], "spans")
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
