"""relay-auth CheckClient latency as smtp-ingress sees it: p50 / p99 / p99.9 at a fixed rate,
without and with 100,000 POP-before-SMTP leases (target: p99 < 2 ms at 2,000 checks/s, the
same with 100,000 leases).

    python -m bench.relay_check [--leases 100000] [--rate 2000] [--seconds 10] [--repeat 3]
                                [--path stream|unary|both]

Three processes on 127.0.0.1: a nats-server, one relay-auth (`python -m mailyard.relay_auth`)
and a load generator (this module with `--drive`, a child process of its own), so the
generator's CPU is not the server's. The generator calls CheckClient through smtp-ingress's
own client, `mailyard.smtp_ingress.relay.RelayAuthClient` (one channel, the ingress's
deadline handling and in-flight bound), over the path the ingress uses, the CheckClients
stream (`--path stream`, the default), or the unary CheckClient it replaced (`--path unary`),
or both one after the other on the same server (`--path both`), open loop: call i is due
at start + i / rate and is sent when due whether or not earlier calls returned, so a stall
shows up in the tail instead of slowing the load down.

`server_us_per_check` and `generator_us_per_check` divide each process's CPU during the run
by the checks made; the generator's figure includes the load generator's own bookkeeping
(a task per check, timestamps), so it is an upper bound on the client's cost.

Two latencies per call: `call` is from the moment the call is made to its answer (what an
ingress session waits for), `sched` is from the call's due time (adds the generator's own
lateness, so a client that falls behind cannot hide it). Also reported: CPU seconds used by
the server and by the generator during the run, and the load average, because the figures
mean little on a busy machine. Figures only, no assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.proc import cpu_seconds
from mailyard.core import bus
from mailyard.core.natsserver import NatsServer, free_port
from mailyard.testing import ServiceProcess


def _ip(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def _checked_ips() -> list[str]:
    # half the checked addresses hold a lease once loaded, half do not
    return [_ip(i * 2) if i % 2 else f"192.0.2.{i % 250}" for i in range(5000)]


# -- the load generator (runs in its own process) ------------------------------------------

def _percentiles(values: list[float]) -> dict[str, float | None]:
    values = sorted(values)
    n = len(values)

    def at(q: float) -> float | None:
        return round(values[min(n - 1, int(n * q))] * 1000.0, 3) if n else None

    return {"p50_ms": at(0.50), "p99_ms": at(0.99), "p999_ms": at(0.999),
            "max_ms": round(values[-1] * 1000.0, 3) if n else None}


async def drive(address: str, rate: float, seconds: float, path: str = "stream"
                ) -> dict[str, Any]:
    from mailyard.smtp_ingress.relay import RelayAuthClient

    ips = _checked_ips()
    # the ingress's client, deadline style and in-flight bound (its default, 64)
    client = RelayAuthClient(address, timeout=1.0, stream=path == "stream")
    for i in range(500):  # connect and warm up
        await client.check_client(ips[i % len(ips)])
    total = int(rate * seconds)
    interval = 1.0 / rate
    due = [0.0] * total
    sent = [0.0] * total
    done = [0.0] * total
    errors = 0

    async def one(i: int) -> None:
        nonlocal errors
        sent[i] = time.perf_counter()
        if await client.check_client(ips[i % len(ips)]) is None:
            errors += 1
        done[i] = time.perf_counter()

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter() + 0.01
    i = 0
    while i < total:
        now = time.perf_counter()
        while i < total and start + i * interval <= now:  # everything that is due, now
            due[i] = start + i * interval
            tasks.append(asyncio.create_task(one(i)))
            i += 1
        if i < total:
            await asyncio.sleep(max(0.0, start + i * interval - time.perf_counter()))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    await client.close()
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    return {
        "path": path, "checks": total, "errors": errors,
        "achieved_rate": round(total / elapsed, 1),
        # which way the checks really went (warm-up included)
        "stream_checks": client.stream_checks, "unary_checks": client.unary_checks,
        "call": _percentiles([d - s for s, d in zip(sent, done, strict=True)]),
        "sched": _percentiles([d - s for s, d in zip(due, done, strict=True)]),
        "generator_lag": _percentiles([s - d for d, s in zip(due, sent, strict=True)]),
        "generator_cpu_s": round(cpu, 2),
        "generator_us_per_check": round(cpu / total * 1e6, 1),
    }


# -- the orchestration -----------------------------------------------------------------------

async def _load_leases(url: str, count: int, ttl: float = 10800.0) -> float:
    """Write `count` leases straight into the shared bucket (as many replicas would)."""
    from mailyard.core.tcprules import parse_ip
    from mailyard.relay_auth.leases import ActiveLease, lease_key

    nc = await bus.connect(url, "bench-leases")
    js = nc.jetstream()
    kv = await bus.ensure_kv(js, bus.KV_LEASES)
    start = time.perf_counter()
    now = time.time()
    sem = asyncio.Semaphore(512)

    async def put(i: int) -> None:
        ip = _ip(i)
        lease = ActiveLease(ip, f"user{i}@example.org", now, now + ttl)
        async with sem:
            await kv.put(lease_key(parse_ip(ip)), lease.to_pb().SerializeToString())

    for base in range(0, count, 5000):
        await asyncio.gather(*(put(i) for i in range(base, min(count, base + 5000))))
    await nc.close()
    return time.perf_counter() - start


def _leases_active(http_port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("mailyard_relay_leases_active "):
                return int(float(line.split()[1]))
    return 0


def _uptime() -> str:
    out = subprocess.run(["uptime"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


def _run_generator(address: str, rate: float, seconds: float, server_pid: int, path: str
                   ) -> dict[str, Any]:
    uptime_before = _uptime()
    load_before = os.getloadavg()[0]
    cpu0 = cpu_seconds(server_pid)
    out = subprocess.run(
        [sys.executable, "-m", "bench.relay_check", "--drive", address, "--rate", str(rate),
         "--seconds", str(seconds), "--path", path], check=True, capture_output=True,
        text=True, cwd=Path(__file__).resolve().parent.parent)
    result: dict[str, Any] = json.loads(out.stdout)
    server_cpu = cpu_seconds(server_pid) - cpu0  # includes the generator's 500 warm-up calls
    result["server_cpu_s"] = round(server_cpu, 2)
    result["server_us_per_check"] = round(server_cpu / (result["checks"] + 500) * 1e6, 1)
    result["loadavg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    result["uptime"] = [uptime_before, _uptime()]
    return result


def _paths(path: str) -> list[str]:
    return ["stream", "unary"] if path == "both" else [path]


async def run(leases: int = 100_000, rate: float = 2000.0, seconds: float = 10.0,
              repeat: int = 1, path: str = "stream") -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-relay-"))
    nats = NatsServer(work / "jetstream")
    nats.start(work / "nats.log")
    grpc_port, http_port = free_port(), free_port()
    proc = ServiceProcess("mailyard.relay_auth", {
        "MAILYARD_RELAYAUTH_NATS_URL": nats.url,
        "MAILYARD_RELAYAUTH_GRPC_PORT": str(grpc_port),
        "MAILYARD_RELAYAUTH_HTTP_PORT": str(http_port),
        "MAILYARD_RELAYAUTH_LOG_LEVEL": "WARNING",
    }, work, http_port=http_port)
    address = f"127.0.0.1:{grpc_port}"
    report: dict[str, Any] = {"rate": rate, "seconds": seconds, "leases": leases,
                              "cpus": os.cpu_count()}
    try:
        proc.start()
        assert proc.proc is not None
        report["without_leases"] = [_run_generator(address, rate, seconds, proc.proc.pid, p)
                                    for _ in range(repeat) for p in _paths(path)]
        if leases:
            report["lease_load_seconds"] = round(await _load_leases(nats.url, leases), 2)
            deadline = time.monotonic() + 120
            while _leases_active(http_port) < leases and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            report["leases_active"] = _leases_active(http_port)
            report["with_leases"] = [_run_generator(address, rate, seconds, proc.proc.pid, p)
                                     for _ in range(repeat) for p in _paths(path)]
            proc.stop()  # restart: how long 100,000 leases take to load into the mirror
            t0 = time.perf_counter()
            proc.start(wait=120)
            report["restart_ready_seconds"] = round(time.perf_counter() - t0, 2)
    finally:
        proc.stop()
        nats.stop()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--leases", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--path", choices=("stream", "unary", "both"), default="stream",
                        help="CheckClients stream (the ingress's path), unary CheckClient, "
                             "or both, alternating")
    parser.add_argument("--drive", metavar="ADDRESS", help=argparse.SUPPRESS)  # the generator
    args = parser.parse_args()
    if args.drive:
        print(json.dumps(asyncio.run(drive(args.drive, args.rate, args.seconds, args.path))))
        return
    print(json.dumps(asyncio.run(run(args.leases, args.rate, args.seconds, args.repeat,
                                     args.path)), indent=2))


if __name__ == "__main__":
    main()
