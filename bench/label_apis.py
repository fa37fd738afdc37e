#!/usr/bin/env python3
"""Times Grafana's label-browser calls against a Vigil server holding N series (default 100,000).

Writes the series with remote write (one sample each; the protobuf and snappy bodies are built here with
the standard library), then prints the median server round trip (response read, not decoded) of
`labels`, `label/__name__/values` and `series?match[]=...` with limit=40000, as Grafana sends them.
Needs the release binary (cargo build --release).

usage: label_apis.py [--series 100000] [--runs 9]
"""
import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare_with_peers as c  # noqa: E402


def varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(tag, payload):
    return varint(tag << 3 | 2) + varint(len(payload)) + payload


def write_request(series, timestamp_ms):
    """A prometheus.WriteRequest with one sample per series."""
    body = bytearray()
    for labels in series:
        ts = b"".join(field(1, field(1, k.encode()) + field(2, v.encode())) for k, v in sorted(labels.items()))
        sample = b"\x09" + struct.pack("<d", 1.0) + b"\x10" + varint(timestamp_ms)
        body += field(1, ts + field(2, sample))
    return bytes(body)


def snappy_literal(data):
    """Snappy block format with literals only (valid, uncompressed)."""
    out = bytearray(varint(len(data)))
    for start in range(0, len(data), 65536):
        chunk = data[start:start + 65536]
        n = len(chunk) - 1
        if n < 60:
            out.append(n << 2)
        else:
            out.append(62 << 2)
            out += struct.pack("<I", n)[:3]
        out += chunk
    return bytes(out)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--series", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    work = "/tmp/vigil-label-bench"
    subprocess.run(["rm", "-rf", work])
    vigil, base = c.start_vigil(work)
    try:
        now = int(time.time() * 1000)
        names = [f"metric_{i % 500}" for i in range(args.series)]
        series = [{"__name__": names[i], "job": f"job-{i % 20}", "instance": f"10.0.{i // 250 % 256}.{i % 250}:9100",
                   "pod": f"pod-{i}"} for i in range(args.series)]
        for start in range(0, len(series), 5000):
            body = snappy_literal(write_request(series[start:start + 5000], now))
            request = urllib.request.Request(base + "/api/v1/write", data=body, method="POST", headers={
                "Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"})
            urllib.request.urlopen(request, timeout=60).read()
        start_s, end_s = now / 1000 - 3600, now / 1000 + 60
        calls = [
            ("labels", f"/api/v1/labels?start={start_s}&end={end_s}&limit=40000"),
            ("label/__name__/values", f"/api/v1/label/__name__/values?start={start_s}&end={end_s}&limit=40000"),
            ("series all, limit 40000", f"/api/v1/series?match[]=%7B__name__%21%3D%22%22%7D&start={start_s}&end={end_s}&limit=40000"),
            ("series one metric", f"/api/v1/series?match[]=metric_7&start={start_s}&end={end_s}&limit=40000"),
        ]
        print(f"{args.series} series")
        for label, path in calls:
            timings = []
            for _ in range(args.runs):
                started = time.perf_counter()
                with urllib.request.urlopen(base + path, timeout=60) as response:
                    raw = response.read()
                timings.append((time.perf_counter() - started) * 1000)
            items = len(json.loads(raw)["data"])
            print(f"{label:<26} {statistics.median(timings):8.1f} ms median  ({items} items, {len(raw) / 1e6:.1f} MB)")
    finally:
        vigil.terminate()


if __name__ == "__main__":
    main()
