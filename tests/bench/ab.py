#!/usr/bin/env python3
"""A/B of two holdfast builds (or one build run two ways: `--b-flags` are bench.py flags for B
alone, e.g. `--b-flags=--stale`): bench.py's holdfast runs, alternating A and B every round, so
drift between rounds hits both alike. Prints each round and the medians and means per build,
and B's median over A's.

    tests/bench/ab.py A_BINARY B_BINARY [--rounds 6] [--workloads http-1k,https-1k] [--b-flags=...] [--flags=--syscalls]

Traffic goes only to 127.0.0.1 (bench.py's origins and proxies)."""

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(binary, workloads, out, duration, flags=()):
    subprocess.run(
        [sys.executable, str(HERE / "bench.py"), "--holdfast", binary, "--proxies", "holdfast",
         "--rounds", "1", "--idle", "0", "--idle-tls", "0", "--duration", str(duration), "--workloads", workloads,
         "--json", str(out), *flags],
        check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())["results"]


def calls_median(runs):
    calls = [x["syscalls_per_req"]["total"] for x in runs if x.get("syscalls_per_req")]
    return f"{statistics.median(calls):.2f}" if calls else "n/a"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--workloads", default="http-1k,https-1k")
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--b-flags", default="", help="bench.py flags for B's runs, space-separated")
    p.add_argument("--flags", default="", help="bench.py flags for both builds' runs (e.g. --syscalls)")
    args = p.parse_args()
    outdir = Path("target/bench/ab")
    outdir.mkdir(parents=True, exist_ok=True)
    seen = {name: {} for name in ("A", "B")}
    for r in range(args.rounds):
        order = [("A", args.a), ("B", args.b)] if r % 2 == 0 else [("B", args.b), ("A", args.a)]
        for name, binary in order:
            flags = args.flags.split() + (args.b_flags.split() if name == "B" else [])
            results = run(binary, args.workloads, outdir / f"{name}-{r}.json", args.duration, flags)
            for workload, by_proxy in results.items():
                for one in by_proxy.get("holdfast", []):
                    seen[name].setdefault(workload, []).append(one)
                    calls = one.get("syscalls_per_req")
                    calls_text = f", {calls['total']:.2f} syscalls/req" if calls else ""
                    print(f"round {r + 1} {name} {workload}: {one['rps']:.0f} req/s, "
                          f"p99 {one['p99_ms']:.2f} ms, CPU {one['cpu_us_per_req']:.1f} us/req{calls_text}", flush=True)
    print()
    print("| workload | build | rounds | req/s median | req/s mean | p99 ms median | CPU us/req median | syscalls/req median |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for workload in args.workloads.split(","):
        for name in ("A", "B"):
            runs = seen[name].get(workload, [])
            if not runs:
                continue
            rps = [x["rps"] for x in runs]
            print(f"| {workload} | {name} | {len(runs)} | {statistics.median(rps):.0f} | "
                  f"{statistics.mean(rps):.0f} | {statistics.median(x['p99_ms'] for x in runs):.2f} | "
                  f"{statistics.median(x['cpu_us_per_req'] for x in runs):.1f} | {calls_median(runs)} |")
    print()
    for workload in args.workloads.split(","):
        a, b = seen["A"].get(workload, []), seen["B"].get(workload, [])
        if a and b:
            ratio = statistics.median(x["rps"] for x in b) / statistics.median(x["rps"] for x in a)
            print(f"{workload}: B / A = {ratio:.3f} (req/s medians)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
