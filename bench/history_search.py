"""History search at scale: record 1,000,000 events, then time `mailyard log`'s queries.

    .venv/bin/python -m bench.history_search [EVENTS]      (default 1,000,000)

Events go in through the queue's own Recorder into a real nats-server's MAIL_HISTORY, in the
mix a queue writes: per message `new` (with its index records: sender + recipients), one
deferral, one delivery, `done` (4 events). Senders come from 2,000 addresses, recipients
from 40,000, so a sender has ~125 messages and a recipient ~6. Then, each query 20 times
through mailyard.queue.history_search (what the gRPC and HTTP answers call):
by id (random message), by busy sender, by rare recipient, by time (last 10 min, limit 100).
Prints p50 / max per query. The target (issue 18) is under 2 s each; nothing asserts.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp

from mailyard.api.history.v1 import history_pb2 as pb
from mailyard.api.mail.v1.envelope_pb2 import Envelope
from mailyard.core import bus
from mailyard.core.ids import new_queue_id
from mailyard.core.natsserver import NatsServer
from mailyard.queue.history import Recorder
from mailyard.queue.history_search import search

SENDERS, RECIPIENTS, ROUNDS = 2_000, 40_000, 20


async def record(nc: object, js: object, events: int) -> list[tuple[str, str, str]]:
    rec = Recorder(nc)  # type: ignore[arg-type]
    rng = random.Random(18)
    made: list[tuple[str, str, str]] = []
    for i in range(events // 4):
        qid = new_queue_id()
        s, r = rng.randrange(SENDERS), rng.randrange(RECIPIENTS)
        sender, rcpt = f"sender{s}@client{s % 50}.example", f"user{r}@dest{r % 500}.example"
        rec.new(Envelope(queue_id=qid, sender=sender, recipients=[rcpt], size=2000 + i % 5000,
                         client_ip="192.0.2.7"))
        rec.delivery(qid, rcpt, "remote", "deferred",
                     "451 4.7.1 greylisted, try again later", "mx.dest.example")
        rec.delivery(qid, rcpt, "remote", "delivered", "250 2.0.0 Ok: queued as 4XYZ",
                     "mx.dest.example")
        rec.step(qid, "done")
        made.append((qid, sender, rcpt))
        if i % 500 == 499:
            await rec.flush()
            await nc.flush()  # type: ignore[attr-defined]
    await rec.flush()
    await nc.flush()  # type: ignore[attr-defined]
    return made


async def timed(js: object, req: pb.SearchRequest) -> tuple[float, int]:
    start = time.perf_counter()
    resp = await search(js, req)  # type: ignore[arg-type]
    return time.perf_counter() - start, len(resp.events)


async def main(events: int) -> None:
    import logging
    logging.disable(logging.INFO)  # the Recorder's JSON lines are not what is measured
    with tempfile.TemporaryDirectory(dir=Path.cwd() / ".bench" if (Path.cwd() / ".bench")
                                     .is_dir() else None) as tmp:
        server = NatsServer(Path(tmp) / "nats")
        server.start(Path(tmp) / "nats.log")
        try:
            nc = await bus.connect(server.url, "bench-history")
            js = nc.jetstream()
            await bus.ensure_history_stream(js, 30 * 86400)
            start = time.perf_counter()
            made = await record(nc, js, events)
            # wait until the stream holds everything (core publishes are stored async)
            while (await js.stream_info(bus.HISTORY_STREAM)).state.messages < len(made) * 6:
                await asyncio.sleep(0.2)
            took = time.perf_counter() - start
            info = await js.stream_info(bus.HISTORY_STREAM)
            print(f"recorded {len(made) * 4:,} events + {len(made) * 2:,} index records "
                  f"({info.state.bytes / 1e6:.0f} MB) in {took:.1f} s")
            rng = random.Random(7)
            since = Timestamp()
            since.FromSeconds(int(time.time() - 600))
            busy = Counter(s for _, s, _ in made).most_common(1)[0][0]
            queries = {
                "by id": lambda: pb.SearchRequest(queue_id=rng.choice(made)[0]),
                "by busy sender (limit 100)": lambda: pb.SearchRequest(address=busy),
                "by recipient": lambda: pb.SearchRequest(address=rng.choice(made)[2]),
                "by time, last 10 min (limit 100)": lambda: pb.SearchRequest(since=since),
            }
            for name, make in queries.items():
                runs = [await timed(js, make()) for _ in range(ROUNDS)]
                secs = [r[0] for r in runs]
                print(f"{name:34s} p50 {statistics.median(secs) * 1000:7.1f} ms   "
                      f"max {max(secs) * 1000:7.1f} ms   events {runs[-1][1]}")
            await nc.close()
        finally:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000))
