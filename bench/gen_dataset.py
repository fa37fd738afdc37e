#!/usr/bin/env python3
"""Writes a realistic metrics dataset as OpenMetrics text with a timestamp (seconds) on every sample.

Node-exporter-like host series and application/Kubernetes-like pod series: counters (some with
resets), gauges and classic histograms, mostly every 15 s, some every 5 s. Deterministic for a seed.

usage: gen_dataset.py OUT.om [--hosts 50] [--pods 200] [--hours 3] [--seed 1]
"""
import argparse
import random

START = 1_700_000_000 // 7200 * 7200
CPU_MODES = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]
MEMORY = ["MemTotal", "MemFree", "MemAvailable", "Buffers", "Cached", "SwapTotal", "SwapFree", "Active", "Inactive",
          "Active_anon", "Inactive_anon", "Active_file", "Inactive_file", "Dirty", "Writeback", "AnonPages", "Mapped",
          "Shmem", "Slab", "PageTables"]
BUCKETS = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"]


def times(hours, step):
    return range(START, START + hours * 3600, step)


def counter_series(rng, ts, rate, decimals, reset_chance=0.0):
    """Monotonic values (with an optional reset), printed with a fixed number of decimals."""
    scale = 10 ** decimals
    value = rng.randrange(10 ** 6) * scale
    reset_at = rng.randrange(len(ts)) if rng.random() < reset_chance else -1
    out = []
    for i, _ in enumerate(ts):
        if i == reset_at:
            value = 0
        value += int(rng.expovariate(1.0 / (rate * scale))) if rate > 0 else 0
        out.append(value / scale if decimals else value)
    return out


def fmt(value, decimals):
    return f"{value:.{decimals}f}" if decimals else str(int(value))


def write_family(out, name, kind, series):
    """series: list of (labels text, [(t, value text)]) written point after point."""
    out.write(f"# TYPE {name} {kind}\n")
    for sample_name, labels, points in series:
        for t, value in points:
            out.write(f"{sample_name}{{{labels}}} {value} {t}\n")


def hosts_block(out, rng, hosts, hours):
    ts = list(times(hours, 15))
    cpu = []
    for h in range(hosts):
        for cpu_id in range(8):
            for mode in CPU_MODES:
                rate = {"idle": 0.7, "user": 0.2, "system": 0.05}.get(mode, 0.005)
                values = counter_series(rng, ts, rate * 15, 2)
                cpu.append(("node_cpu_seconds_total", f'instance="host-{h}:9100",job="node",cpu="{cpu_id}",mode="{mode}"',
                            [(t, fmt(v, 2)) for t, v in zip(ts, values)]))
    write_family(out, "node_cpu_seconds", "counter", cpu)
    for field in MEMORY:
        series = []
        for h in range(hosts):
            base = rng.randrange(1 << 30, 1 << 36) // 4096 * 4096
            drift = 0
            points = []
            for t in ts:
                drift += rng.randrange(-64, 65) * 4096 if field not in ("MemTotal", "SwapTotal") else 0
                points.append((t, str(max(base + drift, 0))))
            series.append((f"node_memory_{field}_bytes", f'instance="host-{h}:9100",job="node"', points))
        write_family(out, f"node_memory_{field}_bytes", "gauge", series)
    for window in ("1", "5", "15"):
        series = []
        for h in range(hosts):
            load = rng.uniform(0.1, 4)
            points = []
            for t in ts:
                load = max(0.0, load + rng.uniform(-0.1, 0.1))
                points.append((t, f"{load:.2f}"))
            series.append((f"node_load{window}", f'instance="host-{h}:9100",job="node"', points))
        write_family(out, f"node_load{window}", "gauge", series)
    for metric in ("receive_bytes", "transmit_bytes", "receive_packets", "transmit_packets"):
        series = []
        for h in range(hosts):
            for device in ("eth0", "lo"):
                values = counter_series(rng, ts, 20000 if "bytes" in metric else 40, 0)
                series.append((f"node_network_{metric}_total", f'instance="host-{h}:9100",job="node",device="{device}"',
                               [(t, fmt(v, 0)) for t, v in zip(ts, values)]))
        write_family(out, f"node_network_{metric}", "counter", series)
    for metric in ("reads_completed", "writes_completed", "read_bytes", "written_bytes", "io_time_seconds", "io_time_weighted_seconds"):
        series = []
        for h in range(hosts):
            for device in ("sda", "sdb"):
                decimals = 3 if "seconds" in metric else 0
                values = counter_series(rng, ts, 5 if decimals else 3000, decimals)
                series.append((f"node_disk_{metric}_total", f'instance="host-{h}:9100",job="node",device="{device}"',
                               [(t, fmt(v, decimals)) for t, v in zip(ts, values)]))
        write_family(out, f"node_disk_{metric}", "counter", series)
    for metric in ("size", "free", "avail"):
        series = []
        for h in range(hosts):
            for mount in ("/", "/var", "/home"):
                size = rng.randrange(10, 500) << 30
                used = rng.randrange(size // 10, size // 2)
                points = []
                for t in ts:
                    used += rng.randrange(-4096, 8192) * 512
                    value = size if metric == "size" else size - used
                    points.append((t, str(value)))
                series.append((f"node_filesystem_{metric}_bytes", f'instance="host-{h}:9100",job="node",mountpoint="{mount}",fstype="ext4"', points))
        write_family(out, f"node_filesystem_{metric}_bytes", "gauge", series)


def pods_block(out, rng, pods, hours):
    ts = list(times(hours, 15))
    requests = []
    for p in range(pods):
        for code in ("200", "404", "500"):
            for method in ("GET", "POST"):
                share = {"200": 0.9, "404": 0.07, "500": 0.03}[code] * (0.8 if method == "GET" else 0.2)
                values = counter_series(rng, ts, 50 * share * 15, 0, reset_chance=0.05)
                requests.append(("http_requests_total", f'namespace="ns-{p % 10}",pod="app-{p}",code="{code}",method="{method}"',
                                 [(t, fmt(v, 0)) for t, v in zip(ts, values)]))
    write_family(out, "http_requests", "counter", requests)
    out.write("# TYPE http_request_duration_seconds histogram\n")
    for p in range(pods):
        labels = f'namespace="ns-{p % 10}",pod="app-{p}"'
        counts = [0] * len(BUCKETS)
        total = 0.0
        for t in ts:
            new = int(rng.expovariate(1.0 / 700))
            for _ in range(min(new, 50)):
                latency = rng.lognormvariate(-3, 1)
                for b, bound in enumerate(BUCKETS):
                    if bound == "+Inf" or latency <= float(bound):
                        counts[b] += new / min(new, 50)
                total += latency * new / min(new, 50)
            for bound, count in zip(BUCKETS, counts):
                out.write(f'http_request_duration_seconds_bucket{{{labels},le="{bound}"}} {int(count)} {t}\n')
            out.write(f"http_request_duration_seconds_count{{{labels}}} {int(counts[-1])} {t}\n")
            out.write(f"http_request_duration_seconds_sum{{{labels}}} {total:.3f} {t}\n")
    ts5 = list(times(hours, 5))
    for name in ("go_goroutines", "process_resident_memory_bytes"):
        series = []
        for p in range(pods):
            value = rng.randrange(50, 500) if name == "go_goroutines" else rng.randrange(50, 500) << 20
            points = []
            for t in ts5:
                value = max(1, value + (rng.randrange(-3, 4) if name == "go_goroutines" else rng.randrange(-64, 65) << 12))
                points.append((t, str(value)))
            series.append((name, f'namespace="ns-{p % 10}",pod="app-{p}"', points))
        write_family(out, name, "gauge", series)
    for name in ("kube_pod_status_ready", "container_memory_working_set_bytes"):
        series = []
        for p in range(pods):
            points = []
            value = rng.randrange(100, 900) << 20
            for i, t in enumerate(ts):
                if name == "kube_pod_status_ready":
                    points.append((t, "0" if i % 97 == p % 97 else "1"))
                else:
                    value += rng.randrange(-16, 17) << 16
                    points.append((t, str(value)))
            series.append((name, f'namespace="ns-{p % 10}",pod="app-{p}",container="app"', points))
        write_family(out, name, "gauge", series)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--pods", type=int, default=200)
    parser.add_argument("--hours", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with open(args.out, "w", buffering=1 << 22) as out:
        hosts_block(out, rng, args.hosts, args.hours)
        pods_block(out, rng, args.pods, args.hours)
        out.write("# EOF\n")


if __name__ == "__main__":
    main()
