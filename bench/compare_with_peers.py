#!/usr/bin/env python3
"""Side by side with the peers on one dataset, on this machine.

1. Generates the dataset (gen_dataset.py), OpenMetrics with timestamps.
2. Imports it into Vigil (`vigil import openmetrics`), Prometheus (`promtool tsdb create-blocks-from
   openmetrics`) and VictoriaMetrics (`/api/v1/import/prometheus`), and prints bytes per sample on disk and
   import time for each, with ratios.
3. Starts all three servers on the imported data and runs the same realistic range queries against each,
   printing median latency per query and the ratios.

Needs: the release `vigil` binary (cargo build --release), Debian's `prometheus` (prometheus, promtool)
and `victoria-metrics`. Only loopback addresses are used; every wait is bounded.

usage: compare_with_peers.py [--hosts 50] [--pods 200] [--hours 3] [--runs 7] [--work DIR]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIGIL = os.path.join(ROOT, "target", "release", "vigil")

QUERIES = [
    ("cpu by mode", "sum by (mode) (rate(node_cpu_seconds_total[5m]))"),
    ("network by host", "sum by (instance) (rate(node_network_receive_bytes_total[5m]))"),
    ("p99 latency", "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))"),
    ("p90 by namespace", "histogram_quantile(0.9, sum by (namespace, le) (rate(http_request_duration_seconds_bucket[5m])))"),
    ("top pods", "topk(5, sum by (pod) (rate(http_requests_total[5m])))"),
    ("error ratio", 'sum(rate(http_requests_total{code="500"}[5m])) / sum(rate(http_requests_total[5m]))'),
    ("load average", "avg_over_time(node_load1[15m])"),
    ("memory by namespace", "sum by (namespace) (container_memory_working_set_bytes)"),
]


def du(path):
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                total += os.path.getsize(full)
    return total


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.3)
    raise SystemExit(f"not ready in {seconds}s: {url}")


def get_json(url, timeout=120):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def count_samples(path):
    count = 0
    with open(path, "rb") as f:
        for line in f:
            if not line.startswith(b"#"):
                count += 1
    return count


def import_vigil(dataset, work):
    target = os.path.join(work, "vigil")
    started = time.time()
    subprocess.run([VIGIL, "import", "openmetrics", dataset, "--data-dir", target], check=True, stdout=subprocess.DEVNULL)
    return time.time() - started, du(os.path.join(target, "metrics", "blocks")), target


def import_prometheus(dataset, work):
    target = os.path.join(work, "prometheus")
    started = time.time()
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", dataset, target], check=True, stdout=subprocess.DEVNULL)
    return time.time() - started, du(target), target


def start_victoria(work):
    target = os.path.join(work, "victoria")
    port = free_port()
    process = subprocess.Popen(
        ["victoria-metrics", f"-storageDataPath={target}", f"-httpListenAddr=127.0.0.1:{port}", "-retentionPeriod=100y",
         "-search.disableCache"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    wait_ready(base + "/health")
    return process, base, target


def import_victoria(dataset, base):
    """Streams the dataset as Prometheus text (millisecond timestamps) into /api/v1/import/prometheus."""
    started = time.time()
    def lines():
        batch = []
        with open(dataset, "rb") as f:
            for line in f:
                if line.startswith(b"#"):
                    continue
                head, _, seconds = line.rstrip(b"\n").rpartition(b" ")
                batch.append(head + b" " + seconds + b"000\n")
                if len(batch) >= 100_000:
                    yield b"".join(batch)
                    batch = []
        if batch:
            yield b"".join(batch)
    for chunk in lines():
        request = urllib.request.Request(base + "/api/v1/import/prometheus", data=chunk, method="POST")
        urllib.request.urlopen(request, timeout=300).read()
    urllib.request.urlopen(base + "/internal/force_flush", timeout=60).read()
    return time.time() - started


def start_prometheus(target):
    port = free_port()
    config = os.path.join(target, "prometheus.yml")
    with open(config, "w") as f:
        f.write("global:\n  scrape_interval: 1h\n")
    process = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={target}", f"--web.listen-address=127.0.0.1:{port}",
         "--storage.tsdb.retention.time=100y"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    wait_ready(base + "/-/ready")
    return process, base


def start_vigil(target):
    port = free_port()
    process = subprocess.Popen(
        [VIGIL, "server", "--data-dir", target, "--http-addr", f"127.0.0.1:{port}", "--retention-time", "100y"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    wait_ready(base + "/-/ready")
    return process, base


def time_query(base, query, start, end, step):
    params = urllib.parse.urlencode({"query": query, "start": start, "end": end, "step": step})
    started = time.perf_counter()
    body = get_json(f"{base}/api/v1/query_range?{params}")
    elapsed = time.perf_counter() - started
    if body.get("status") != "success":
        raise SystemExit(f"{base}: {query}: {body}")
    return elapsed, len(body["data"]["result"])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--pods", type=int, default=200)
    parser.add_argument("--hours", type=int, default=3)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--work", default="/tmp/vigil-peer-bench")
    parser.add_argument("--reuse", action="store_true", help="reuse the dataset and imports in --work; only query")
    args = parser.parse_args()
    for tool in ("promtool", "prometheus", "victoria-metrics"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: apt-get install prometheus victoria-metrics")
    if not os.path.exists(VIGIL):
        raise SystemExit("build first: cargo build --release")
    dataset = os.path.join(args.work, "dataset.om")
    vigil_dir, prom_dir = os.path.join(args.work, "vigil"), os.path.join(args.work, "prometheus")
    if not args.reuse:
        shutil.rmtree(args.work, ignore_errors=True)
        os.makedirs(args.work)
        subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gen_dataset.py"), dataset, "--hosts", str(args.hosts),
                        "--pods", str(args.pods), "--hours", str(args.hours)], check=True)
        samples = count_samples(dataset)
        print(f"dataset: {samples} samples, {os.path.getsize(dataset) / 1e6:.0f} MB of OpenMetrics text")
        vigil_time, vigil_bytes, _ = import_vigil(dataset, args.work)
        prom_time, prom_bytes, _ = import_prometheus(dataset, args.work)
    victoria, victoria_base, victoria_dir = start_victoria(args.work)
    try:
        if not args.reuse:
            vm_time = import_victoria(dataset, victoria_base)
            time.sleep(5)
            vm_bytes = du(victoria_dir)
            print()
            print(f"{'storage':<18} {'bytes/sample':>12} {'import s':>9} {'samples/s':>11} {'size vs prometheus':>19}")
            for name, seconds, size in (("prometheus", prom_time, prom_bytes), ("victoria-metrics", vm_time, vm_bytes), ("vigil", vigil_time, vigil_bytes)):
                print(f"{name:<18} {size / samples:>12.3f} {seconds:>9.1f} {samples / seconds:>11.0f} {size / prom_bytes:>18.2f}x")

        prometheus, prom_base = start_prometheus(prom_dir)
        vigil, vigil_base = start_vigil(vigil_dir)
        try:
            # Between sample times: Prometheus 2.x windows include their left edge, 3.x (and Vigil) do not.
            start = 1_700_000_000 // 7200 * 7200 + 7.5
            end = start + args.hours * 3600 - 60
            ranges = [("1h", end - 3600), (f"{args.hours}h", start + 300)]
            print()
            print(f"{'query':<22} {'range':>5} {'prometheus ms':>14} {'victoria ms':>12} {'vigil ms':>9} {'vigil/prom':>11} {'vm/prom':>8}")
            ratios = []
            for label, query in QUERIES:
                for range_label, range_start in ranges:
                    medians = []
                    counts = []
                    for base in (prom_base, victoria_base, vigil_base):
                        time_query(base, query, range_start, end, 60)
                        timings = []
                        for _ in range(args.runs):
                            elapsed, count = time_query(base, query, range_start, end, 60)
                            timings.append(elapsed)
                        medians.append(statistics.median(timings) * 1000)
                        counts.append(count)
                    if len(set(counts)) != 1:
                        print(f"  note: series counts differ for {label}: {counts}")
                    ratios.append(medians[2] / medians[0])
                    print(f"{label:<22} {range_label:>5} {medians[0]:>14.1f} {medians[1]:>12.1f} {medians[2]:>9.1f} {medians[2] / medians[0]:>10.2f}x {medians[1] / medians[0]:>7.2f}x")
            print(f"median vigil/prometheus latency ratio: {statistics.median(ratios):.2f}x")
        finally:
            prometheus.terminate()
            vigil.terminate()
    finally:
        victoria.terminate()


if __name__ == "__main__":
    main()
