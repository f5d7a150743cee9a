#!/usr/bin/env python3
"""Scale figures for holdfast (see BENCHMARKS.md):

1. config: a config with 1,000 pools and 5,000 backends (1,000 host routes), loaded and validated
   by `holdfast check`; best and median wall time of several runs, process start included.
2. checks: 1,000 backends each checked every second (TCP check, then TCP + HTTP checks), answered
   by one asyncio server listening on 1,000 loopback ports; holdfast's CPU over a measured window,
   as a share of one core.

Traffic goes only to 127.0.0.1; every process started here is stopped here.
"""

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def big_config(pools, per_pool):
    lines = ['[listen]', 'http = ["127.0.0.1:1"]', '', '[routes]', 'default = "p0"', '[routes.hosts]']
    lines += [f'"site{i}.example.com" = "p{i}"' for i in range(pools)]
    port = 10000
    for i in range(pools):
        lines += ['', f'[pools.p{i}.health.http]', 'path = "/health"']
        for tier in range(2):
            count = per_pool // 2 if tier == 0 else per_pool - per_pool // 2
            backends = []
            for _ in range(count):
                port += 1
                backends.append(f'{{ address = "127.0.{port // 60000}.{1 + port % 250}:{1024 + port % 60000}" }}')
            lines += [f'[[pools.p{i}.tiers]]', f'backends = [{", ".join(backends)}]']
    return "\n".join(lines) + "\n"


def config_figure(holdfast, work, runs):
    path = work / "big.toml"
    path.write_text(big_config(1000, 5))
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        out = subprocess.run([holdfast, "check", "--config", str(path)], capture_output=True, text=True)
        times.append(time.perf_counter() - t)
        if out.returncode != 0:
            sys.exit(f"check failed:\n{out.stderr[:2000]}")
    print(f"config: 1000 pools, 5000 backends, 1000 host routes: {out.stdout.strip()}")
    print(f"config: holdfast check wall time best {min(times) * 1000:.1f} ms, median {statistics.median(times) * 1000:.1f} ms ({runs} runs)")


class Responder:
    """Listens on `count` loopback ports; answers any request with a small HTTP 200."""

    def __init__(self, count):
        self.ports = []
        self.sockets = []
        for _ in range(count):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 0))
            s.listen(64)
            s.setblocking(False)
            self.sockets.append(s)
            self.ports.append(s.getsockname()[1])
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    async def _answer(self, reader, writer):
        try:
            await asyncio.wait_for(reader.read(1024), 1.0)
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
            await writer.drain()
        except (asyncio.TimeoutError, OSError):
            pass
        finally:
            writer.close()

    def _run(self):
        asyncio.set_event_loop(self.loop)
        for s in self.sockets:
            self.loop.run_until_complete(asyncio.start_server(self._answer, sock=s))
        self.loop.run_forever()


def checks_figure(holdfast, work, responder, http, window):
    lines = ['[listen]', f'http = ["127.0.0.1:{free_port()}"]', f'admin = "127.0.0.1:{free_port()}"', '',
             '[pools.many.health.tcp]', 'interval = "1s"', 'timeout = "500ms"']
    if http:
        lines += ['[pools.many.health.http]', 'path = "/health"', 'interval = "1s"', 'timeout = "500ms"']
    backends = ", ".join(f'{{ address = "127.0.0.1:{p}" }}' for p in responder.ports)
    lines += ['[[pools.many.tiers]]', f'backends = [{backends}]']
    path = work / "many.toml"
    path.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen([holdfast, "run", "--threads", "2", "--config", str(path)],
                            stdout=subprocess.DEVNULL, stderr=open(work / "holdfast.log", "w"),
                            start_new_session=True)
    try:
        time.sleep(3)  # start-up probe, first spread-out round
        c0, t0 = cpu_seconds(proc.pid), time.perf_counter()
        time.sleep(window)
        c1, t1 = cpu_seconds(proc.pid), time.perf_counter()
        share = (c1 - c0) / (t1 - t0) * 100
        kind = "TCP + HTTP checks (2,000 probes/s)" if http else "TCP checks (1,000 probes/s)"
        print(f"checks: {len(responder.ports)} backends, {kind}: {share:.1f} % of one core over {window} s")
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=10)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--holdfast", default="target/release/holdfast")
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--window", type=int, default=20, help="seconds of CPU measurement")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="holdfast-scale-"))
    try:
        config_figure(args.holdfast, work, args.runs)
        responder = Responder(1000)
        checks_figure(args.holdfast, work, responder, http=False, window=args.window)
        checks_figure(args.holdfast, work, responder, http=True, window=args.window)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
