#!/usr/bin/env python3
"""holdfast, nginx and HAProxy side by side, on loopback, in one run.

Two nginx instances are the origins (a primary and a backup, 1 worker each). Each proxy runs in
front of them with equivalent settings: 2 workers or threads, keep-alive to the origins, the
backup as a backup, health checks where the proxy has them (nginx OSS has only passive checks),
access logs off. wrk drives each proxy in turn (h2load for the HTTP/2 workloads), alternating
the order every round, so drift between runs hits every proxy alike. For each run: requests per second, p50 and p99 latency, the
proxy's CPU time per request (user + system of all its processes, divided by requests served) and
its RSS. Ratios are holdfast's figure over nginx's and HAProxy's, from medians over the rounds.

Traffic goes only to 127.0.0.1; every process started here is stopped here, by its process group.
"""

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
# holdfast's listeners' TLS 1.3 suites in their order (gateway/src/certs.rs); the peers are given
# the same, so that a handshake's key schedule costs all three the same.
TLS13_SUITES = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


def descendants(pid):
    """pid and every process below it."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


class Proc:
    """A server process started in its own process group."""

    def __init__(self, name, cmd, log):
        self.name = name
        self.log = log
        self.popen = subprocess.Popen(
            cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True
        )

    def pids(self):
        return descendants(self.popen.pid)

    def cpu_seconds(self):
        """CPU seconds so far of all the proxy's processes: (user, system)."""
        user = system = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                user += int(fields[11])  # utime
                system += int(fields[12])  # stime
            except (OSError, IndexError, ValueError):
                pass
        return user / CLK_TCK, system / CLK_TCK

    def rss_mb(self):
        total_kb = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/statm") as f:
                    total_kb += int(f.read().split()[1]) * PAGE_KB
            except (OSError, IndexError, ValueError):
                pass
        return total_kb / 1024

    def stop(self):
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGINT if self.name == "holdfast" else signal.SIGTERM)
                self.popen.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait()


def make_cert(work):
    cert, key = work / "cert.pem", work / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    combined = work / "combined.pem"
    combined.write_bytes(cert.read_bytes() + key.read_bytes())
    return cert, key, combined


def origin_conf(work, name, port, h2_port):
    return f"""
worker_processes 1;
daemon off;
pid {work}/{name}.pid;
error_log {work}/{name}.err warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        # Cleartext HTTP/2 with prior knowledge, for the h2-upstream workloads.
        listen 127.0.0.1:{h2_port} http2;
        root {work}/www;
        location = /health {{ return 200 "ok\\n"; }}
    }}
}}
"""


def nginx_conf(work, ports, origins, cert, key, h2_up=False, access_log=False):
    # HTTP/2 to the origins: grpc_pass is nginx's only h2 client (one stream per connection).
    to_origins = ("grpc_pass grpc://origins;\n            grpc_set_header Host $host;\n"
                  "            grpc_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
                  "            grpc_next_upstream error timeout;\n            grpc_connect_timeout 2s;"
                  if h2_up else
                  "proxy_pass http://origins;\n            proxy_http_version 1.1;\n"
                  "            proxy_set_header Connection \"\";\n            proxy_set_header Host $host;\n"
                  "            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
                  "            proxy_set_header X-Forwarded-Proto $scheme;\n"
                  "            proxy_next_upstream error timeout;\n            proxy_connect_timeout 2s;\n"
                  "            proxy_buffering on;")
    return f"""
worker_processes 2;
worker_rlimit_nofile 20000;
daemon off;
pid {work}/nginx-proxy.pid;
error_log {work}/nginx-proxy.err warn;
events {{ worker_connections 16384; }}
http {{
    {"access_log " + str(work) + "/nginx-access.log combined buffer=64k flush=1s;" if access_log else "access_log off;"}
    keepalive_requests 10000000;
    keepalive_timeout 930s;
    upstream origins {{
        server 127.0.0.1:{origins[0]} max_fails=1 fail_timeout=2s;
        server 127.0.0.1:{origins[1]} backup;
        keepalive 128;
    }}
    server {{
        listen 127.0.0.1:{ports['http']};
        listen 127.0.0.1:{ports['https']} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        # TLS 1.3 as holdfast and HAProxy speak it (nginx 1.22 offers only up to TLS 1.2 unless
        # told), with the same suite order as holdfast's listeners (Mozilla's intermediate),
        # chosen by the server: AES-128-GCM, whose SHA-256 key schedule this CPU does in hardware.
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_prefer_server_ciphers on;
        ssl_conf_command Ciphersuites {TLS13_SUITES};
        location / {{
            {to_origins}
        }}
    }}
}}
"""


def haproxy_conf(work, ports, origins, combined, h2_up=False, access_log=False):
    # HTTP/2 to the origins: `proto h2`; the check is then TCP (the h2c port speaks no HTTP/1.1).
    httpchk = "" if h2_up else "option httpchk GET /health"
    proto = " proto h2" if h2_up else ""
    # With --access-log: one line per request in HAProxy's HTTP format, to its standard output
    # (the process's log file here).
    log_global = "log stdout format raw local0 info" if access_log else ""
    log_defaults = "log global\n    option httplog" if access_log else ""
    return f"""
global
    {log_global}
    nbthread 2
    # Each connection may take two descriptors; the hard limit here is 20,000.
    maxconn 9900
    tune.ssl.default-dh-param 2048
    # The same TLS 1.3 suite order as holdfast's listeners; HAProxy chooses by its own order.
    ssl-default-bind-ciphersuites {TLS13_SUITES}

defaults
    mode http
    {log_defaults}
    timeout connect 2s
    timeout client 930s
    timeout server 60s
    timeout http-keep-alive 930s
    option http-keep-alive
    option forwardfor
    http-reuse always
    retries 3
    option redispatch

frontend fe
    bind 127.0.0.1:{ports['http']}
    bind 127.0.0.1:{ports['https']} ssl crt {combined} alpn h2,http/1.1
    http-request set-header X-Forwarded-Proto https if {{ ssl_fc }}
    http-request set-header X-Forwarded-Proto http if !{{ ssl_fc }}
    default_backend origins

backend origins
    {httpchk}
    server primary 127.0.0.1:{origins[0]}{proto} check inter 2s rise 2 fall 2
    server backup 127.0.0.1:{origins[1]}{proto} check inter 2s rise 2 fall 2 backup
"""


def holdfast_conf(work, ports, origins, cert, key, h2_up=False, access_log=False, stale=False):
    proto = ', protocol = "h2"' if h2_up else ""
    log = f'[log]\naccess = "{work}/holdfast-access.log"\n' if access_log else ""
    # Serve-stale on, with its defaults (64 MiB, 1 MiB objects): each answer may be kept.
    stale_table = "[pools.origins.stale]\n" if stale else ""
    return f"""
{log}
[listen]
http = ["127.0.0.1:{ports['http']}"]
https = ["127.0.0.1:{ports['https']}"]
tls_cert = "{cert}"
tls_key = "{key}"
admin = "127.0.0.1:{ports['admin']}"
# The default cap (half the open-file limit, for a backend connection beside each) would shed
# some of the 10,000 idle connections here; nginx and HAProxy get their own explicit limits too.
max_connections = 12000

{stale_table}
[pools.origins.health.tcp]
interval = "2s"

[pools.origins.health.http]
path = "/health"
interval = "2s"

[[pools.origins.tiers]]
backends = [{{ address = "127.0.0.1:{origins[0]}", name = "primary"{proto} }}]

[[pools.origins.tiers]]
backends = [{{ address = "127.0.0.1:{origins[1]}", name = "backup"{proto} }}]
"""


def start_proxy(name, work, args, origins, cert, key, combined, h2_up=False):
    """Starts `name` in front of the origins; `h2_up`: speaking HTTP/2 to them (their h2c ports)."""
    ports = {"http": free_port(), "https": free_port(), "admin": free_port()}
    if name == "nginx":
        conf = work / "nginx-proxy.conf"
        conf.write_text(nginx_conf(work, ports, origins, cert, key, h2_up, args.access_log))
        cmd = [args.nginx, "-c", str(conf), "-p", str(work)]
    elif name == "haproxy":
        conf = work / "haproxy.cfg"
        conf.write_text(haproxy_conf(work, ports, origins, combined, h2_up, args.access_log))
        cmd = [args.haproxy, "-db", "-f", str(conf)]
    else:
        conf = work / "holdfast.toml"
        conf.write_text(holdfast_conf(work, ports, origins, cert, key, h2_up, args.access_log,
                                      args.stale))
        cmd = [args.holdfast, "run", "--threads", "2", "--config", str(conf)]
    proc = Proc(name, cmd, work / f"{name}.log")
    try:
        wait_port(ports["http"])
        wait_port(ports["https"])
    except RuntimeError:
        proc.stop()
        sys.stderr.write(f"{name} did not start; its log:\n{(work / f'{name}.log').read_text()}\n")
        raise
    time.sleep(1.0)  # first health checks, then settle
    return proc, ports


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_wrk(out):
    def latency(pct):
        m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(m.group(1)) * UNITS[m.group(2)] if m else float("nan")

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "requests": int(total.group(1)) if total else 0,
        "p50_ms": latency(50),
        "p99_ms": latency(99),
        "errors": (errors.group(1) if errors else "") + (f" non-2xx {non2xx.group(1)}" if non2xx else ""),
    }


def run_wrk(args, url, seconds):
    cmd = [args.wrk, f"-t{args.wrk_threads}", f"-c{args.connections}", f"-d{seconds}s", "--latency", url]
    cmd[1:1] = getattr(args, "headers", [])  # e.g. -H "Connection: close" (relay/run.py)
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def run_h2load(args, url, seconds, log=None):
    cmd = [args.h2load, f"-t{args.wrk_threads}", f"-c{args.h2_connections}", f"-m{args.h2_streams}",
           f"-D{seconds}", url]
    if log:
        cmd.insert(1, f"--log-file={log}")
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def parse_h2load(out, log):
    """h2load's summary, with p50 and p99 from its per-request log (it prints no percentiles)."""
    rps = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    times = sorted(int(line.split("\t")[2]) / 1000.0 for line in Path(log).read_text().splitlines() if line.count("\t") >= 2)

    def pct(q):
        return times[min(len(times) - 1, int(q * len(times)))] if times else float("nan")

    failed = int(done.group(3)) + int(done.group(4)) if done else 0
    non2xx = int(codes.group(3)) + int(codes.group(4)) if codes else 0
    errors = " ".join(x for x in (f"failed {failed}" if failed else "", f"non-2xx {non2xx}" if non2xx else "") if x)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "requests": int(done.group(2)) if done else 0,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "errors": errors,
    }


# System calls counted per request (`--syscalls`): by kind, from the kernel's tracepoints
# through `perf stat` attached to the proxy's processes and threads during the measured run.
SYSCALL_KINDS = {
    "read": ["read", "readv", "recvfrom", "recvmsg", "recvmmsg"],
    "write": ["write", "writev", "sendto", "sendmsg", "sendmmsg", "sendfile64"],
    "epoll": ["epoll_wait", "epoll_pwait", "epoll_pwait2", "epoll_ctl"],
    "futex": ["futex"],
    "uring": ["io_uring_enter"],
}


class SyscallCounter:
    """`perf stat` counting every system call of `pids` (all their threads) until stopped."""

    def __init__(self, pids):
        self.out = Path(tempfile.mkstemp(prefix="perf-stat-")[1])
        events = ["raw_syscalls:sys_enter"] + [
            f"syscalls:sys_enter_{name}" for names in SYSCALL_KINDS.values() for name in names
        ]
        events = [e for e in events if tracepoint_exists(e)]
        self.popen = subprocess.Popen(
            ["perf", "stat", "-x,", "-o", str(self.out), "-e", ",".join(events),
             "-p", ",".join(str(p) for p in pids)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        time.sleep(0.3)  # perf attaches to every thread before the run starts

    def stop(self):
        """Counts by kind (`total`, `read`, `write`, `epoll`, `futex`, `uring`, `other`)."""
        self.popen.send_signal(signal.SIGINT)
        self.popen.wait(timeout=10)
        counts = {}
        for line in self.out.read_text().splitlines():
            fields = line.split(",")
            if len(fields) > 2 and fields[0].strip().isdigit():
                counts[fields[2].strip()] = int(fields[0])
        self.out.unlink()
        by_kind = {"total": counts.get("raw_syscalls:sys_enter", 0)}
        for kind, names in SYSCALL_KINDS.items():
            by_kind[kind] = sum(counts.get(f"syscalls:sys_enter_{n}", 0) for n in names)
        by_kind["other"] = by_kind["total"] - sum(by_kind[k] for k in SYSCALL_KINDS)
        return by_kind


def tracepoint_exists(event):
    if event == "raw_syscalls:sys_enter":
        return True
    name = event.split(":", 1)[1]
    return Path(f"/sys/kernel/tracing/events/syscalls/{name}").exists()


def measure(args, proc, url):
    if url.startswith("h2://"):
        url = "https://" + url[len("h2://"):]
        run_h2load(args, url, args.warmup)
        log = Path(tempfile.mkstemp(prefix="h2load-")[1])
        try:
            counter = SyscallCounter(proc.pids()) if args.syscalls else None
            cpu0 = proc.cpu_seconds()
            out = run_h2load(args, url, args.duration, log)
            cpu = [after - before for after, before in zip(proc.cpu_seconds(), cpu0)]
            calls = counter.stop() if counter else None
            r = parse_h2load(out, log)
        finally:
            log.unlink()
    else:
        run_wrk(args, url, args.warmup)
        counter = SyscallCounter(proc.pids()) if args.syscalls else None
        cpu0 = proc.cpu_seconds()
        out = run_wrk(args, url, args.duration)
        cpu = [after - before for after, before in zip(proc.cpu_seconds(), cpu0)]
        calls = counter.stop() if counter else None
        r = parse_wrk(out)
    def per_req(seconds):
        return seconds / r["requests"] * 1e6 if r["requests"] else float("nan")

    r["cpu_us_per_req"] = per_req(sum(cpu))
    # The kernel's share (system calls, the network stack on loopback) apart from the proxy's own.
    r["sys_us_per_req"] = per_req(cpu[1])
    if calls is not None and r["requests"]:
        r["syscalls_per_req"] = {k: v / r["requests"] for k, v in calls.items()}
    r["rss_mb"] = proc.rss_mb()
    return r


def idle_connections(proc, port, count):
    """Opens `count` keep-alive connections, one request each, left idle; returns RSS in MB.

    The connections open in waves, ARGS.idle_wave_gap seconds apart: a proxy that keeps a
    backend connection per client connection for a while (holdfast: 30 s) holds two descriptors
    per fresh client connection, and the sandbox's hard limit on open files (20,000) would
    otherwise cap the count below 10,000."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    count = min(count, hard - 200)
    waves = max(1, ARGS.idle_waves)
    request = b"GET /1k.bin HTTP/1.1\r\nHost: localhost\r\n\r\n"
    socks = []
    try:
        for i in range(count):
            if i and i % -(-count // waves) == 0:
                time.sleep(ARGS.idle_wave_gap)
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                socks.append(s)
                s.sendall(request)
                got = b""
                while b"\r\n\r\n" not in got:
                    chunk = s.recv(65536)
                    if not chunk:
                        raise OSError("closed")
                    got += chunk
                length = int(re.search(rb"(?i)content-length:\s*(\d+)", got).group(1))
                body = got.split(b"\r\n\r\n", 1)[1]
                while len(body) < length:
                    body += s.recv(65536)
            except (OSError, AttributeError):
                socks.pop().close()  # the proxy would take no more
                break
        time.sleep(1.0)
        early = proc.rss_mb()
        # Cloudflare's idle connections stay open for up to 15 minutes; measure again once the
        # proxies have had time to let go of per-connection state they keep only while active.
        time.sleep(ARGS.idle_settle)
        return len(socks), early, proc.rss_mb()
    finally:
        for s in socks:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def idle_tls_connections(proc, port, count, h2):
    """Opens `count` TLS connections (HTTP/2 by ALPN when `h2`, else HTTP/1.1), one 1 KB request
    each, left idle; returns (connections, RSS in MB 1 s after the last one)."""
    import ssl
    import struct

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"] if h2 else ["http/1.1"])

    def frame(kind, flags, stream, payload):
        return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload

    # HPACK: :method GET, :scheme https, :authority localhost, :path /1k.bin (literals unindexed).
    block = bytes([0x82, 0x87, 0x01, 9]) + b"localhost" + bytes([0x04, 7]) + b"/1k.bin"
    request = (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b"") + frame(1, 5, 1, block)) if h2 \
        else b"GET /1k.bin HTTP/1.1\r\nHost: localhost\r\n\r\n"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    socks = []
    try:
        for _ in range(min(count, hard - 200)):
            try:
                s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5),
                                    server_hostname="localhost")
                socks.append(s)
                s.sendall(request)
                got = b""
                while len(got) < 1024:  # the 1 KB body, at least
                    chunk = s.recv(65536)
                    if not chunk:
                        raise OSError("closed")
                    got += chunk
            except OSError:
                socks.pop().close()
                break
        time.sleep(1.0)
        return len(socks), proc.rss_mb()
    finally:
        for s in socks:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": os.uname().release,
        "nginx": subprocess.run([ARGS.nginx, "-v"], capture_output=True, text=True).stderr.strip(),
        "haproxy": subprocess.run([ARGS.haproxy, "-v"], capture_output=True, text=True).stdout.splitlines()[0],
        "holdfast": subprocess.run([ARGS.holdfast, "--version"], capture_output=True, text=True).stdout.strip(),
    }


def fmt_ratio(a, b):
    return f"{a / b:.2f}" if b else "n/a"


def main():
    global ARGS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--holdfast", default="target/release/holdfast")
    p.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    p.add_argument("--haproxy", default=shutil.which("haproxy") or "/usr/sbin/haproxy")
    p.add_argument("--wrk", default=shutil.which("wrk") or "wrk")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    p.add_argument("--duration", type=int, default=10, help="seconds per measured run (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="seconds of warm-up before each run")
    p.add_argument("--connections", type=int, default=64, help="wrk keep-alive connections")
    p.add_argument("--wrk-threads", type=int, default=2)
    p.add_argument("--h2load", default=shutil.which("h2load") or "h2load")
    p.add_argument("--h2-connections", type=int, default=4,
                   help="h2load connections for the h2 workloads (default 4)")
    p.add_argument("--h2-streams", type=int, default=16,
                   help="streams at once per h2load connection (default 16: 64 requests at once, as wrk's 64 connections)")
    p.add_argument("--workloads", default="http-1k,https-1k,http-100k,h2-1k,h2-100k,up2-1k",
                   help="comma-separated: http-1k, https-1k, http-100k, https-100k, h2-1k, h2-100k, "
                        "up2-1k, up2-100k, hs-1k (h2: HTTPS with HTTP/2 by ALPN, driven by h2load; up2: "
                        "HTTP/1.1 visitors, HTTP/2 from the proxy to the origins; hs: HTTPS/1.1 with "
                        "a new connection, so a full TLS handshake, per request)")
    p.add_argument("--proxies", default="holdfast,nginx,haproxy")
    p.add_argument("--access-log", action="store_true",
                   help="each proxy writes an access log line per request (nginx combined, buffered "
                        "64k; HAProxy httplog to stdout; holdfast [log] access to a file)")
    p.add_argument("--stale", action="store_true",
                   help="holdfast with serve-stale on ([pools.origins.stale], its defaults)")
    p.add_argument("--idle", type=int, default=10000,
                   help="idle keep-alive connections for the memory figure (0: skip; default 10,000)")
    p.add_argument("--idle-waves", type=int, default=2,
                   help="open the idle connections in this many waves (default 2)")
    p.add_argument("--idle-wave-gap", type=int, default=32,
                   help="seconds between waves of idle connections (default 32)")
    p.add_argument("--idle-settle", type=int, default=35,
                   help="seconds the idle connections stay open before the second memory reading")
    p.add_argument("--idle-tls", type=int, default=2000,
                   help="idle TLS connections, HTTPS/1.1 and then h2, for the memory figure per TLS "
                        "connection (0: skip; default 2,000)")
    p.add_argument("--syscalls", action="store_true",
                   help="count each proxy's system calls per request during the measured runs (perf stat on "
                        "the syscall tracepoints; adds a little overhead to every proxy alike)")
    p.add_argument("--json", default="target/bench/results.json", help="where to write the raw results")
    ARGS = args = p.parse_args()

    # 10,000 connections need more descriptors than the usual limits, in the proxies (which
    # inherit this) and in this client. Raise the hard limit where allowed, else keep it.
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (65536, 65536))
    except (ValueError, OSError):
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    proxies = args.proxies.split(",")
    workloads = args.workloads.split(",")
    work = Path(tempfile.mkdtemp(prefix="holdfast-bench-"))
    work.chmod(0o755)  # nginx workers run as another user when started by root
    (work / "www").mkdir()
    (work / "www" / "1k.bin").write_bytes(os.urandom(1024))
    (work / "www" / "100k.bin").write_bytes(os.urandom(100 * 1024))
    for f in (work / "www").iterdir():
        f.chmod(0o644)
    cert, key, combined = make_cert(work)
    procs = []
    results = {w: {n: [] for n in proxies} for w in workloads}
    memory = {}
    try:
        origins = [free_port(), free_port()]
        origins_h2 = [free_port(), free_port()]
        for i, port in enumerate(origins):
            conf = work / f"origin{i}.conf"
            conf.write_text(origin_conf(work, f"origin{i}", port, origins_h2[i]))
            procs.append(Proc(f"origin{i}", [args.nginx, "-c", str(conf), "-p", str(work)], work / f"origin{i}.log"))
        for port in origins:
            wait_port(port)

        for name in proxies:
            proc, ports = start_proxy(name, work, args, origins, cert, key, combined)
            memory[name] = {"idle_rss_mb": proc.rss_mb()}
            proc.stop()

        for rnd in range(args.rounds):
            order = proxies[rnd % len(proxies):] + proxies[:rnd % len(proxies)]
            for name in order:
                # The h2-upstream workloads (`up2-*`: HTTP/1.1 visitors, HTTP/2 to the origins)
                # run on the proxy started anew with that setting.
                for h2_up in (False, True):
                    mine = [w for w in workloads if w.startswith("up2-") == h2_up]
                    if not mine:
                        continue
                    proc, ports = start_proxy(name, work, args, origins_h2 if h2_up else origins,
                                              cert, key, combined, h2_up)
                    procs.append(proc)
                    try:
                        for w in mine:
                            scheme, size = w.split("-")
                            # `hs-*`: HTTPS/1.1, a new connection (a full handshake) per request.
                            args.headers = ["-H", "Connection: close"] if scheme == "hs" else []
                            scheme = {"up2": "http", "hs": "https"}.get(scheme, scheme)
                            port = ports["https" if scheme == "h2" else scheme]
                            url = f"{scheme}://127.0.0.1:{port}/{size}.bin"
                            r = measure(args, proc, url)
                            results[w][name].append(r)
                            calls = r.get("syscalls_per_req")
                            calls_text = f"  {calls['total']:.2f} syscalls/req" if calls else ""
                            print(f"round {rnd + 1} {w:10} {name:9} {r['rps']:10.0f} req/s  p50 {r['p50_ms']:.2f} ms  "
                                  f"p99 {r['p99_ms']:.2f} ms  {r['cpu_us_per_req']:.1f} us/req ({r['sys_us_per_req']:.1f} sys)  RSS {r['rss_mb']:.1f} MB"
                                  f"{calls_text}{'  errors: ' + r['errors'] if r['errors'] else ''}", flush=True)
                    finally:
                        proc.stop()

        if args.idle:
            for name in proxies:
                proc, ports = start_proxy(name, work, args, origins, cert, key, combined)
                procs.append(proc)
                try:
                    n, early, settled = idle_connections(proc, ports["http"], args.idle)
                    memory[name]["idle_conns"] = n
                    memory[name]["rss_with_idle_conns_mb"] = early
                    memory[name]["rss_with_idle_conns_settled_mb"] = settled
                    print(f"{name:9} RSS idle {memory[name]['idle_rss_mb']:.1f} MB, with {n} idle connections "
                          f"{early:.1f} MB after 1 s, {settled:.1f} MB after {1 + args.idle_settle} s", flush=True)
                finally:
                    proc.stop()
        if args.idle_tls:
            for name in proxies:
                for h2 in (False, True):
                    proc, ports = start_proxy(name, work, args, origins, cert, key, combined)
                    procs.append(proc)
                    try:
                        base = proc.rss_mb()
                        n, rss = idle_tls_connections(proc, ports["https"], args.idle_tls, h2)
                        kind = "h2" if h2 else "https"
                        memory[name][f"idle_{kind}_conns"] = n
                        memory[name][f"idle_{kind}_kb_per_conn"] = (rss - base) * 1024 / n if n else float("nan")
                        print(f"{name:9} {n} idle {kind} connections: RSS {base:.1f} -> {rss:.1f} MB, "
                              f"{memory[name][f'idle_{kind}_kb_per_conn']:.1f} KB each", flush=True)
                    finally:
                        proc.stop()
    finally:
        for proc in procs:
            proc.stop()
        shutil.rmtree(work, ignore_errors=True)

    report(args, proxies, workloads, results, memory)


def median(runs, key):
    values = [r[key] for r in runs if r[key] == r[key]]  # drop NaN
    return statistics.median(values) if values else float("nan")


def report(args, proxies, workloads, results, memory):
    m = machine()
    print()
    print(f"Machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}; {m['holdfast']}, {m['nginx']}, {m['haproxy']}")
    print(f"wrk -t{args.wrk_threads} -c{args.connections}, {args.duration} s runs after {args.warmup} s warm-up, "
          f"{args.rounds} alternating rounds, medians; all on loopback.")
    print()
    print("| workload | proxy | req/s | p50 ms | p99 ms | CPU us/req | of it system | RSS MB | holdfast/this req/s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for w in workloads:
        base = median(results[w].get("holdfast", []), "rps") if "holdfast" in proxies else float("nan")
        for name in proxies:
            runs = results[w][name]
            rps = median(runs, "rps")
            ratio = fmt_ratio(base, rps) if name != "holdfast" else "1.00"
            print(f"| {w} | {name} | {rps:.0f} | {median(runs, 'p50_ms'):.2f} | {median(runs, 'p99_ms'):.2f} | "
                  f"{median(runs, 'cpu_us_per_req'):.1f} | {median(runs, 'sys_us_per_req'):.1f} | "
                  f"{median(runs, 'rss_mb'):.1f} | {ratio} |")
    if any(r.get("syscalls_per_req") for w in workloads for n in proxies for r in results[w][n]):
        print()
        print("System calls per request (perf stat on the syscall tracepoints, all the proxy's threads; medians):")
        print()
        kinds = ["total", "read", "write", "epoll", "futex", "other"]
        print("| workload | proxy | " + " | ".join(kinds) + " |")
        print("|---|---|" + "---:|" * len(kinds))
        for w in workloads:
            for name in proxies:
                runs = [r for r in results[w][name] if r.get("syscalls_per_req")]
                if not runs:
                    continue
                cells = [statistics.median(r["syscalls_per_req"][k] for r in runs) for k in kinds]
                print(f"| {w} | {name} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    if memory:
        print()
        print(f"| proxy | idle RSS MB | RSS MB with idle keep-alive connections, after 1 s | after {1 + args.idle_settle} s |")
        print("|---|---:|---:|---:|")
        for name in proxies:
            mm = memory.get(name, {})
            if "idle_conns" in mm:
                early = f"{mm['rss_with_idle_conns_mb']:.1f} ({mm['idle_conns']} conns)"
                settled = f"{mm['rss_with_idle_conns_settled_mb']:.1f}"
            else:
                early = settled = "n/a"
            print(f"| {name} | {mm.get('idle_rss_mb', float('nan')):.1f} | {early} | {settled} |")
    if any("idle_h2_conns" in memory.get(n, {}) for n in proxies):
        print()
        print("| proxy | KB per idle HTTPS/1.1 connection | KB per idle h2 connection |")
        print("|---|---:|---:|")
        for name in proxies:
            mm = memory.get(name, {})
            print(f"| {name} | {mm.get('idle_https_kb_per_conn', float('nan')):.1f} ({mm.get('idle_https_conns', 0)} conns) | "
                  f"{mm.get('idle_h2_kb_per_conn', float('nan')):.1f} ({mm.get('idle_h2_conns', 0)} conns) |")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": m, "args": vars(args), "results": results, "memory": memory}, indent=2))
    print(f"\nraw results: {out}")


if __name__ == "__main__":
    sys.exit(main())
