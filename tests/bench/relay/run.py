#!/usr/bin/env python3
"""The experiments of issue 27, on one minimal HTTP/1.1 relay (src/main.rs) in front of an
nginx origin serving a 1 KB file, driven by wrk (-t2 -c64), the variants alternating every round.

`--experiment io` (the default): the relay on tokio (epoll, holdfast's model), on monoio's epoll
driver and on monoio's io_uring driver, keep-alive. For each: requests per second, p99, the
relay's CPU time per request and its system calls per request (perf stat on the syscall
tracepoints, with `--syscalls`). The answer to "would io_uring save 15 % of CPU per request?" is
monoio-uring's CPU over monoio-epoll's (same runtime, other driver) and over tokio's.

`--experiment tls`: the tokio relay with visitors over TLS, OpenSSL (vendored, as holdfast's
listeners) against rustls with aws-lc-rs: keep-alive HTTPS (CPU per request), a new connection
per request (`Connection: close`: full handshakes per second and CPU per handshake), and the
memory of 2,000 idle TLS connections after one request each (RSS growth per connection).

    tests/bench/relay/run.py [--experiment io|tls] [--rounds 5] [--duration 8] [--syscalls]

Traffic goes only to 127.0.0.1; every process started here is stopped here.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import bench  # noqa: E402  (the repository's benchmark: processes, wrk, syscall counting)

EXPERIMENTS = {"io": ["tokio", "monoio-epoll", "monoio-uring"], "tls": ["openssl", "rustls"]}


def cpu_model():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", choices=sorted(EXPERIMENTS), default="io")
    p.add_argument("--idle-tls", type=int, default=2000, help="idle TLS connections (tls; 0: skip)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="relay threads (default 2, as the proxies)")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--syscalls", action="store_true")
    p.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    p.add_argument("--wrk", default=shutil.which("wrk") or "wrk")
    args = p.parse_args()
    for tool in (args.nginx, args.wrk):
        if not shutil.which(tool) and not Path(tool).exists():
            sys.exit(f"relay bench: {tool} is missing")

    subprocess.run(["cargo", "build", "--release", "--locked"], cwd=HERE, check=True)
    relay = HERE / "target" / "release" / "holdfast-relay-bench"
    models = EXPERIMENTS[args.experiment]
    wrk_args = types.SimpleNamespace(wrk=args.wrk, wrk_threads=2, connections=args.connections,
                                     warmup=args.warmup, duration=args.duration, syscalls=args.syscalls)

    work = Path(tempfile.mkdtemp(prefix="holdfast-relay-"))
    procs = []
    try:
        (work / "www").mkdir()
        (work / "www" / "1k.bin").write_bytes(bytes(range(256)) * 4)
        for path in (work, work / "www", work / "www" / "1k.bin"):
            path.chmod(0o755)  # nginx's workers run as nobody
        origin = bench.free_port()
        (work / "origin.conf").write_text(bench.origin_conf(work, "origin", origin, bench.free_port()))
        nginx = bench.Proc("nginx", [args.nginx, "-c", str(work / "origin.conf"), "-p", str(work)], work / "origin.log")
        procs.append(nginx)
        bench.wait_port(origin)
        tls = args.experiment == "tls"
        pem = [str(x) for x in bench.make_cert(work)[:2]] if tls else []
        runs = [("keep-alive", False)] + ([("handshake", True)] if tls else [])
        results = {(m, run): [] for m in models for run, _ in runs}
        memory = {m: [] for m in models}
        for r in range(args.rounds):
            order = models if r % 2 == 0 else models[::-1]
            for model in order:
                port = bench.free_port()
                proc = bench.Proc(model, [str(relay), model, f"127.0.0.1:{port}", f"127.0.0.1:{origin}",
                                          str(args.threads)] + pem, work / f"{model}.log")
                procs.append(proc)
                try:
                    bench.wait_port(port)
                    if tls and args.idle_tls:
                        # First, on the fresh process (as bench.py measures the proxies).
                        before = proc.rss_mb()
                        n, after = bench.idle_tls_connections(proc, port, args.idle_tls, False)
                        kb = (after - before) * 1024 / n if n else float("nan")
                        memory[model].append(kb)
                        print(f"round {r + 1} {model}: {n} idle TLS connections, {kb:.1f} KB each", flush=True)
                        time.sleep(1.0)
                    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/1k.bin"
                    for run, close in runs:
                        wrk_args.headers = ["-H", "Connection: close"] if close else []
                        got = bench.measure(wrk_args, proc, url)
                        results[(model, run)].append(got)
                        calls = got.get("syscalls_per_req", {}).get("total")
                        print(f"round {r + 1} {model} {run}: {got['rps']:.0f} req/s, p99 {got['p99_ms']:.2f} ms, "
                              f"CPU {got['cpu_us_per_req']:.2f} us/req"
                              + (f", {calls:.2f} syscalls/req" if calls is not None else "")
                              + (f" ({got['errors']})" if got["errors"] else ""), flush=True)
                finally:
                    proc.stop()
                    procs.remove(proc)
        print(f"\nmedians over {args.rounds} rounds ({cpu_model()}, {os.cpu_count()} cores, "
              f"kernel {os.uname().release}):")
        print("| relay | run | req/s | p99 ms | CPU us/req | syscalls/req |")
        print("|---|---|---|---|---|---|")
        med = {}
        for (model, run), got in results.items():
            med[(model, run)] = m = {k: statistics.median(x[k] for x in got) for k in ("rps", "p99_ms", "cpu_us_per_req")}
            calls = [x["syscalls_per_req"]["total"] for x in got if "syscalls_per_req" in x]
            calls = f"{statistics.median(calls):.2f}" if calls else "-"
            print(f"| {model} | {run} | {m['rps']:.0f} | {m['p99_ms']:.2f} | {m['cpu_us_per_req']:.2f} | {calls} |")
        for model, kbs in memory.items():
            if kbs:
                print(f"{model}: {statistics.median(kbs):.1f} KB per idle TLS connection (median)")
        if not tls:
            uring = med[("monoio-uring", "keep-alive")]["cpu_us_per_req"]
            for base in ("monoio-epoll", "tokio"):
                saved = 1 - uring / med[(base, "keep-alive")]["cpu_us_per_req"]
                print(f"io_uring CPU per request against {base}: {saved * 100:+.1f} % saved")
        else:
            for run, _ in runs:
                a, b = med[("openssl", run)], med[("rustls", run)]
                print(f"{run}: rustls/OpenSSL req/s {b['rps'] / a['rps']:.2f}x, "
                      f"CPU per request {b['cpu_us_per_req'] / a['cpu_us_per_req']:.2f}x")
    finally:
        for proc in procs:
            proc.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
