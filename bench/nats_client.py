"""The NATS client's own CPU for what every message costs it: a JetStream publish with its
ack (the todo notice, the result), and a fetch with its ack (the queue's todo and results
consumers). nats-py's js.publish and fetch against ours (core.js_publish, core.batch_pull),
on one real nats-server and uvloop (as the services), alternating, the client's process
time per message.

    python -m bench.nats_client [--messages 20000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import nats
import uvloop
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from mailyard.core import js_publish
from mailyard.core.batch_pull import BatchPull
from mailyard.core.natsserver import NatsServer

CONCURRENT = 50  # publishers at once (the sessions of a bench.field run)
BATCH = 100      # the queue's consume_batch


async def _stream(js: nats.js.JetStreamContext, name: str) -> None:
    try:
        await js.delete_stream(name)
    except Exception:
        pass
    await js.add_stream(StreamConfig(name=name, subjects=[f"{name.lower()}.>"]))


async def publishes(url: str, kind: str, n: int) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await _stream(js, "P")
    acks = js_publish.publisher(nc)
    data = b"x" * 300

    async def one(w: int) -> None:
        for i in range(n // CONCURRENT):
            headers = {"Nats-Msg-Id": f"{w}-{i}"}
            if kind == "nats-py":
                await js.publish("p.x", data, timeout=5.0, headers=headers)
            else:
                await acks.publish("p.x", data, headers)

    start = time.process_time()
    await asyncio.gather(*(one(w) for w in range(CONCURRENT)))
    used = time.process_time() - start
    await nc.close()
    return used * 1e6 / n


async def fetches(url: str, kind: str, n: int) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await _stream(js, "F")
    for _ in range(n):
        await nc.publish("f.x", b"y" * 300)
    await nc.flush()
    await js.add_consumer("F", ConsumerConfig(durable_name="d", ack_policy=AckPolicy.EXPLICIT,
                                              max_ack_pending=10_000))
    got = 0
    start = time.process_time()
    if kind == "nats-py":
        sub = await js.pull_subscribe("f.x", durable="d", stream="F")
        while got < n:
            msgs = await sub.fetch(batch=BATCH, timeout=0.1)
            for m in msgs:
                await m.ack()
            got += len(msgs)
    else:
        puller = BatchPull(nc, "F", "d")
        await puller.start()
        while got < n:
            msgs = await puller.fetch(BATCH, 0.1)
            for m in msgs:
                await m.ack()
            got += len(msgs)
    used = time.process_time() - start
    await nc.close()
    return used * 1e6 / n


async def main_async(url: str, n: int, rounds: int) -> None:
    for what, run in (("publish + ack", publishes), ("fetch + ack", fetches)):
        seen: dict[str, list[float]] = {"nats-py": [], "mailyard": []}
        for r in range(rounds):
            order = ("nats-py", "mailyard") if r % 2 == 0 else ("mailyard", "nats-py")
            for kind in order:
                seen[kind].append(await run(url, kind, n))
        print(f"{what:14} client CPU us/message: "
              + ", ".join(f"{k} {' / '.join(f'{v:.1f}' for v in vs)}" for k, vs in seen.items()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    server = NatsServer(Path(tempfile.mkdtemp(prefix="mailyard-nats-client-")))
    server.start()
    try:
        uvloop.run(main_async(server.url, args.messages, args.rounds))  # as the services run
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
