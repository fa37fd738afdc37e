#!/usr/bin/env python3
"""Trace bench: generated realistic traces into a running release `vigil server` over OTLP/gRPC, then
queries through the Tempo and Jaeger APIs. Prints:

- ingest: spans/s of wall time, and spans per CPU-second of the server process (what one core sustains);
- storage: bytes per span in the Parquet blocks (from the server's "span block written" events);
- trace by id: p50/p90 of `GET /tempo/api/v2/traces/{id}` (protobuf) over sample traces;
- search: p50/p90 of a TraceQL search by service and attribute, and of Jaeger's search by service and tag.

Needs `cargo build --release` and `cargo build --release -p vigil-collector --example trace_load`.
Loopback only; every wait is bounded.

usage: bench/traces.py [--spans 10000000] [--concurrency 4] [--queries 200]
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIGIL = os.path.join(ROOT, "target/release/vigil")
LOAD = os.path.join(ROOT, "target/release/examples/trace_load")
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0


class Server:
    def __init__(self, data_dir):
        self.events = []
        self.process = subprocess.Popen(
            [VIGIL, "server", "--data-dir", data_dir, "--http-addr", "127.0.0.1:0", "--otlp-http-addr", "127.0.0.1:0",
             "--otlp-grpc-addr", "127.0.0.1:0", "--log-format", "json", "--wal-fsync", "always"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            event = json.loads(self.process.stdout.readline())
            if event.get("message") == "vigil is ready":
                self.http = "http://" + event["http_addr"]
                self.grpc = "http://" + event["otlp_grpc_addr"]
                break
        else:
            raise SystemExit("the server did not start")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                pass

    def get(self, path, accept="application/json"):
        request = urllib.request.Request(self.http + path, headers={"Accept": accept})
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)


def timed(server, path, accept="application/json"):
    started = time.perf_counter()
    status, body = server.get(path, accept)
    elapsed = (time.perf_counter() - started) * 1000
    assert status == 200, (path, status)
    return elapsed, body


def percentiles(samples):
    samples = sorted(samples)
    return statistics.median(samples), samples[int(len(samples) * 0.9)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--spans", type=int, default=10_000_000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vigil-trace-bench-") as data_dir:
        server = Server(data_dir)
        cpu_before = cpu_seconds(server.process.pid)
        load = subprocess.run([LOAD, server.grpc, str(args.spans), "--concurrency", str(args.concurrency)],
                              capture_output=True, text=True, timeout=3 * 3600)
        if load.returncode != 0:
            raise SystemExit(f"load generator failed: {load.stderr[-2000:]}")
        summary = json.loads(load.stdout)
        spans, seconds = summary["spans"], summary["seconds"]
        # The CPU of writing the blocks the ingest filled counts too: wait until no block has been written for
        # 8 s (writing one takes a few seconds).
        deadline = time.time() + 300
        written, since = -1, time.time()
        while time.time() < deadline and time.time() - since < 8:
            now_written = sum(e.get("message") == "span block written" for e in server.events)
            if now_written != written:
                written, since = now_written, time.time()
            time.sleep(0.2)
        cpu = cpu_seconds(server.process.pid) - cpu_before
        print(f"ingest: {spans} spans in {seconds:.1f} s = {spans / seconds:,.0f} spans/s wall; "
              f"server CPU {cpu:.1f} s = {spans / cpu:,.0f} spans per CPU-second; "
              f"{summary['retries']} retried requests; server peak RSS {rss_mib(server.process.pid):.0f} MiB")

        blocks = [e for e in server.events if e.get("message") == "span block written"]
        block_spans = sum(int(e["spans"]) for e in blocks)
        block_bytes = sum(int(e["bytes"]) for e in blocks)
        if block_spans:
            print(f"storage: {len(blocks)} blocks, {block_spans} spans, {block_bytes / 2**20:.1f} MiB = "
                  f"{block_bytes / block_spans:.1f} bytes per span")

        rng = random.Random(7)
        ids = summary["sample_trace_ids"]
        by_id = []
        for trace_id in rng.sample(ids, min(args.queries, len(ids))):
            elapsed, _ = timed(server, f"/tempo/api/v2/traces/{trace_id}", "application/protobuf")
            by_id.append(elapsed)
        p50, p90 = percentiles(by_id)
        print(f"trace by id (Tempo v2, protobuf): p50 {p50:.2f} ms, p90 {p90:.2f} ms over {len(by_id)} traces")

        searches = []
        jaeger = []
        end = int(time.time()) + 60
        start = end - 6 * 3600
        for i in range(max(20, args.queries // 10)):
            service = summary["services"][1 + i % (len(summary["services"]) - 1)]
            q = f'{{ resource.service.name = "{service}" && span.http.response.status_code = 500 }}'
            path = f"/tempo/api/search?q={urllib.parse.quote(q)}&limit=20&start={start}&end={end}"
            elapsed, body = timed(server, path)
            assert json.loads(body)["traces"], q
            searches.append(elapsed)
            tags = urllib.parse.quote(json.dumps({"http.response.status_code": "500"}))
            elapsed, body = timed(server, f"/jaeger/api/traces?service={service}&tags={tags}&limit=20")
            assert json.loads(body)["data"], service
            jaeger.append(elapsed)
        p50, p90 = percentiles(searches)
        print(f"search by service + attribute (TraceQL, limit 20): p50 {p50:.1f} ms, p90 {p90:.1f} ms")
        p50, p90 = percentiles(jaeger)
        print(f"search by service + tag (Jaeger, limit 20, whole traces): p50 {p50:.1f} ms, p90 {p90:.1f} ms")
        server.stop()


if __name__ == "__main__":
    main()
