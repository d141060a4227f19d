"""relay-auth CheckClient latency: p50 / p99 at a fixed rate, without and with 100,000
POP-before-SMTP leases (the target is p99 < 2 ms at 2,000 checks/s with 100,000 leases).

    python -m bench.relay_check [--leases 100000] [--rate 2000] [--seconds 10]

Starts its own nats-server and one relay-auth process on 127.0.0.1, drives CheckClient
over one gRPC channel, open loop (a call is sent on schedule whether or not earlier ones
returned, so a stall shows in the tail instead of slowing the load down). Latency is measured
in this client, so it includes the client's own gRPC overhead. Figures only, no assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc

from mailyard.api.relayauth.v1 import relayauth_pb2 as pb
from mailyard.api.relayauth.v1 import relayauth_pb2_grpc as rpc
from mailyard.core import bus
from mailyard.core.natsserver import NatsServer, free_port
from mailyard.core.testing import ServiceProcess


def _ip(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


async def _load_leases(url: str, count: int, ttl: float = 10800.0) -> float:
    """Write `count` leases straight into the shared bucket (as many replicas would)."""
    from mailyard.relay_auth.leases import ActiveLease, lease_key
    from mailyard.relay_auth.rules import parse_ip

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


async def _drive(address: str, rate: float, seconds: float, ips: list[str]) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(address) as channel:
        stub = rpc.RelayAuthStub(channel)
        for _ in range(200):  # warm up the channel
            await stub.CheckClient(pb.CheckClientRequest(ip="127.0.0.1"))

        async def one(ip: str) -> None:
            nonlocal errors
            t0 = time.perf_counter()
            try:
                await stub.CheckClient(pb.CheckClientRequest(ip=ip))
            except grpc.aio.AioRpcError:
                errors += 1
                return
            latencies.append(time.perf_counter() - t0)

        total = int(rate * seconds)
        interval = 1.0 / rate
        tasks = []
        start = time.perf_counter()
        for i in range(total):
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(ips[i % len(ips)])))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    latencies.sort()
    n = len(latencies)
    ms = 1000.0
    return {
        "checks": n, "errors": errors, "achieved_rate": round(n / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * ms, 3) if n else None,
        "p99_ms": round(latencies[min(n - 1, int(n * 0.99))] * ms, 3) if n else None,
        "max_ms": round(latencies[-1] * ms, 3) if n else None,
    }


async def run(leases: int = 100_000, rate: float = 2000.0, seconds: float = 10.0
              ) -> dict[str, Any]:
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
    report: dict[str, Any] = {"rate": rate, "seconds": seconds, "leases": leases}
    try:
        proc.start()
        # half the checked addresses hold a lease once loaded, half do not
        ips = [_ip(i * 2) if i % 2 else f"192.0.2.{i % 250}" for i in range(5000)]
        report["without_leases"] = await _drive(address, rate, seconds, ips)
        report["lease_load_seconds"] = round(await _load_leases(nats.url, leases), 2)
        deadline = time.monotonic() + 120
        while _leases_active(http_port) < leases and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        report["leases_active"] = _leases_active(http_port)
        report["with_leases"] = await _drive(address, rate, seconds, ips)
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
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.leases, args.rate, args.seconds)), indent=2))


if __name__ == "__main__":
    main()
