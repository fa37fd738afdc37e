"""Log shipping throughput, file -> server: CRI pod log files written before the agent starts are read,
shipped over OTLP/gRPC and stored by a release `vigil server`. Prints the agent's throughput per CPU-second
(what the agent costs per MiB shipped), the end-to-end wall rate, and the server's CPU.

usage: python3 bench/log_shipping.py [--mib 256] [--containers 8]   (after `cargo build --release`)"""
import argparse
import json
import os
import random
import subprocess
import tempfile
import time
import urllib.request

from agent_overhead import VIGIL, cpu_seconds, ready


def lines_stored(http):
    """The server's count of log lines stored from OTLP."""
    text = urllib.request.urlopen(f"http://{http}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith("vigil_ingest_log_lines_total{") and 'receiver="otlp"' in line:
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


def write_logs(root, mib, containers):
    """CRI files of nginx-style access lines, JSON app lines and kubelet-style text; returns (bytes, lines)."""
    rng = random.Random(7)
    paths = ["/", "/api/v1/orders", "/api/v1/users/42", "/static/app.js", "/healthz", "/login"]
    written = lines = 0
    start = time.time() - 3600
    files = []
    for n in range(containers):
        directory = os.path.join(root, f"var/log/pods/shop_app-{n}_uid-{n}/app")
        os.makedirs(directory)
        files.append(open(os.path.join(directory, "0.log"), "w"))
    target = mib << 20
    chunk = []
    while written < target:
        for file in files:
            chunk.clear()
            for _ in range(500):
                t = start + lines * 1e-4
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"
                kind = lines % 3
                if kind == 0:
                    text = (f'10.0.{rng.randrange(256)}.{rng.randrange(256)} - - "GET {rng.choice(paths)} HTTP/1.1" '
                            f'{rng.choice((200, 200, 200, 304, 404, 500))} {rng.randrange(100, 90000)} "-" "curl/8.5"')
                elif kind == 1:
                    text = json.dumps({"level": rng.choice(("info", "info", "warn", "error")), "msg": "order placed",
                                       "order_id": rng.randrange(10**9), "user": f"u{rng.randrange(5000)}",
                                       "latency_ms": rng.randrange(1, 900)})
                else:
                    text = (f'I1207 10:00:00.{rng.randrange(10**6):06d} 1 kubelet.go:{rng.randrange(3000)}] '
                            f'"SyncLoop (PLEG): event for pod" pod="shop/app-{rng.randrange(50)}" event="ContainerStarted"')
                line = f"{stamp} stdout F {text}\n"
                chunk.append(line)
                written += len(line)
                lines += 1
            file.write("".join(chunk))
    for file in files:
        file.close()
    return written, lines


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--containers", type=int, default=8)
    parser.add_argument("--timeout", type=int, default=900)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as fixture, tempfile.TemporaryDirectory() as work:
        size, lines = write_logs(fixture, args.mib, args.containers)
        log = ["--log-format", "json"]
        server = subprocess.Popen([VIGIL, *log, "server", "--data-dir", f"{work}/data", "--http-addr", "127.0.0.1:0",
                                   "--otlp-http-addr", "127.0.0.1:0", "--otlp-grpc-addr", "127.0.0.1:0"],
                                  stdout=subprocess.PIPE, text=True)
        event = ready(server, "vigil is ready")
        http, grpc = event["http_addr"], event["otlp_grpc_addr"]
        agent_env = {**os.environ, "MIMALLOC_PURGE_DELAY": "0", "MIMALLOC_ARENA_EAGER_COMMIT": "0"}
        server_cpu_start = cpu_seconds(server.pid)
        start = time.time()
        agent = subprocess.Popen([VIGIL, *log, "agent", "--server", f"http://{grpc}", "--root", fixture,
                                  "--state-dir", f"{work}/state", "--http-addr", "127.0.0.1:0", "--interval", "60s"],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=agent_env)
        try:
            ready(agent, "vigil agent is ready")
            stored = 0
            while stored < lines and time.time() - start < args.timeout:
                time.sleep(0.5)
                stored = lines_stored(http)
            wall = time.time() - start
            agent_cpu = cpu_seconds(agent.pid)
            server_cpu = cpu_seconds(server.pid) - server_cpu_start
        finally:
            agent.terminate()
            server.terminate()
            agent.wait()
            server.wait()
    mib = size / (1 << 20)
    print(f"{mib:.0f} MiB, {lines} CRI lines in {args.containers} files, shipped file -> server:")
    print(f"  stored {stored} of {lines} lines in {wall:.1f} s wall ({mib / wall:.1f} MiB/s end to end)")
    print(f"  agent CPU {agent_cpu:.2f} s = {mib / agent_cpu:.0f} MiB per agent CPU-second (target >= 100)")
    print(f"  server CPU {server_cpu:.2f} s = {mib / server_cpu:.1f} MiB per server CPU-second")
    if stored != lines:
        raise SystemExit("not every line was stored")


if __name__ == "__main__":
    main()
