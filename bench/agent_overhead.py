"""Agent overhead: `vigil agent` (release) over a 100-container fixture node at a 10 s interval, shipping to
a release `vigil server`; prints the agent's CPU share of one core and its resident memory.

usage: python3 bench/agent_overhead.py [--seconds 60]   (after `cargo build --release` and
`cargo build --release -p vigil-agent --example write_fixture`)"""
import argparse
import json
import os
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIGIL = os.path.join(ROOT, "target/release/vigil")
WRITE_FIXTURE = os.path.join(ROOT, "target/release/examples/write_fixture")
TICKS = os.sysconf("SC_CLK_TCK")


def ready(process, message):
    deadline = time.time() + 30
    while time.time() < deadline:
        event = json.loads(process.stdout.readline())
        if event.get("message") == message:
            return event
    raise SystemExit(f"no {message!r} event")


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def memory_kib(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=60)
    args = parser.parse_args()
    scratch = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=scratch) as fixture, tempfile.TemporaryDirectory() as work:
        subprocess.run([WRITE_FIXTURE, fixture, "100", "v2", "systemd"], check=True, capture_output=True)
        log = ["--log-format", "json"]
        server = subprocess.Popen([VIGIL, *log, "server", "--data-dir", f"{work}/data", "--http-addr", "127.0.0.1:0",
                                   "--otlp-http-addr", "127.0.0.1:0", "--otlp-grpc-addr", "127.0.0.1:0"],
                                  stdout=subprocess.PIPE, text=True)
        grpc = ready(server, "vigil is ready")["otlp_grpc_addr"]
        # The allocator settings deploy/kubernetes/agent-daemonset.yaml gives the agent.
        agent_env = {**os.environ, "MIMALLOC_PURGE_DELAY": "0", "MIMALLOC_ARENA_EAGER_COMMIT": "0"}
        agent = subprocess.Popen([VIGIL, *log, "agent", "--server", f"http://{grpc}", "--root", fixture,
                                  "--state-dir", f"{work}/state", "--http-addr", "127.0.0.1:0", "--interval", "10s"],
                                 stdout=subprocess.PIPE, text=True, env=agent_env)
        try:
            ready(agent, "vigil agent is ready")
            time.sleep(2)
            start_cpu, start = cpu_seconds(agent.pid), time.time()
            time.sleep(args.seconds)
            used, elapsed = cpu_seconds(agent.pid) - start_cpu, time.time() - start
            rss, peak = memory_kib(agent.pid, "VmRSS"), memory_kib(agent.pid, "VmHWM")
        finally:
            agent.terminate()
            server.terminate()
            agent.wait()
            server.wait()
    print(f"agent over 150 cgroups (100 containers + 50 sandboxes), 10 s interval, {elapsed:.0f} s:")
    print(f"  CPU {used:.2f} s = {100 * used / elapsed:.2f}% of one core (target <= 1%)")
    print(f"  RSS {rss / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB (target <= 40 MiB)")


if __name__ == "__main__":
    main()
