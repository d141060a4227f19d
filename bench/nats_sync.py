"""What `sync_interval: always` costs: JetStream publishes acknowledged on a 3-node cluster
(R3 stream, as the manifests run it), fsync on every write vs. NATS's default (every 2 min).

    .venv/bin/python -m bench.nats_sync [N]       (N publishes per measurement, default 3000)

Per setting: N publishes one at a time (each waits for its ack: the latency smtp-ingress adds
to a 250) and N with 64 in flight (many SMTP sessions at once: throughput). The nodes run
on this machine's disk (loopback cluster), so the figure is fsync's cost on this disk,
not a network's. Figures only: nothing here asserts.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nats

from mailyard.core import bus
from mailyard.core.natsserver import NatsServer, free_port

PAYLOAD = b"x" * 400  # an Envelope with a few recipients


async def measure(sync: bool, n: int) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory(dir=Path(".bench").absolute()) as tmp:
        routes = tuple(free_port() for _ in range(3))
        nodes = [NatsServer(Path(tmp) / f"n{i}", cluster_port=routes[i], routes=routes,
                            name=f"n{i}", sync_always=sync) for i in range(3)]
        for node in nodes:
            node.start()
        try:
            nc = await nats.connect(nodes[0].url)
            js = nc.jetstream()
            while True:
                try:
                    await js.account_info()
                    break
                except Exception:
                    await asyncio.sleep(0.2)
            await bus.ensure_stream(js, bus.StreamSpec("SYNCBENCH", ["syncbench"]), 3)
            lat = []
            for i in range(n):
                t0 = time.perf_counter()
                await js.publish("syncbench", PAYLOAD, headers={"Nats-Msg-Id": f"s{i}"})
                lat.append(time.perf_counter() - t0)
            sem = asyncio.Semaphore(64)

            async def one(i: int) -> None:
                async with sem:
                    await js.publish("syncbench", PAYLOAD, headers={"Nats-Msg-Id": f"c{i}"})

            t0 = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(n)))
            rate = n / (time.perf_counter() - t0)
            await nc.close()
            lat.sort()
            return statistics.median(lat) * 1e3, lat[int(len(lat) * 0.99)] * 1e3, rate
        finally:
            for node in nodes:
                node.stop()


async def main(n: int) -> None:
    Path(".bench").mkdir(exist_ok=True)
    for sync in (False, True, False, True):
        p50, p99, rate = await measure(sync, n)
        label = "sync_interval: always" if sync else "default (2 min)      "
        print(f"{label}  one at a time p50 {p50:.2f} ms p99 {p99:.2f} ms; "
              f"64 in flight {rate:,.0f} msg/s", flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000))
