"""History search at scale: record 1,000,000 events, then time `mailyard log`'s queries.

    .venv/bin/python -m bench.history_search [EVENTS]      (default 1,000,000)

Events go in through the queue's own Recorder into a real nats-server's MAIL_HISTORY, in the
mix a queue writes: per message `new` (with its index records: sender + recipients), one
deferral, one delivery, `done` (4 events). Senders come from 2,000 addresses, recipients
from 40,000, so a sender has ~125 messages and a recipient ~6. Then, each query 20 times
through mailyard.queue.history_search (what the gRPC and HTTP answers call):
by id (random message), by busy sender, by rare recipient, by time (last 10 min, limit 100),
each answered by the stream and by the queue's history index (history_index.py).

Also measured: the index filled from nothing (time, rate, CPU per record) and its live
cost (this process's CPU while records arrive at a steady rate, with and without a feed).
Before the first query of each kind, nats-server is restarted (its caches empty), the index
reopened, and the OS page cache dropped (root only; said if not), so "first" is a cold
query. Prints first / p50 / max per query and the load. The target (issue 18) is under
2 s each; nothing asserts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
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
from mailyard.queue.history_feed import HistoryFeed, stream_id
from mailyard.queue.history_index import FILE_NAME, HistoryIndex
from mailyard.queue.history_search import search

SENDERS, RECIPIENTS, ROUNDS = 2_000, 40_000, 20
LIVE_EVENTS, LIVE_RATE = 40_000, 2_000  # the live-cost run: 10,000 messages, 500 a second


async def record(nc: object, js: object, events: int,
                 pace: int = 0) -> list[tuple[str, str, str]]:
    """`events` events (and their index records) through the queue's Recorder; `pace`:
    at most that many events a second (0: as fast as it goes). Returns once stored."""
    before = (await js.stream_info(bus.HISTORY_STREAM)).state.messages  # type: ignore[attr-defined]
    started = time.monotonic()
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
        if pace and i % 25 == 24:  # a queue's flushes: every few messages
            await rec.flush()
            await asyncio.sleep(max(0.0, started + (i + 1) * 4 / pace - time.monotonic()))
    await rec.flush()
    await nc.flush()  # type: ignore[attr-defined]
    # wait until the stream holds everything (core publishes are stored async)
    while (await js.stream_info(bus.HISTORY_STREAM)  # type: ignore[attr-defined]
           ).state.messages < before + len(made) * 6:
        await asyncio.sleep(0.2)
    return made


async def timed(js: object, req: pb.SearchRequest,
                feed: HistoryFeed | None) -> tuple[float, int]:
    start = time.perf_counter()
    resp = await search(js, req, feed)  # type: ignore[arg-type]
    return time.perf_counter() - start, len(resp.events)


def drop_caches() -> str:
    """Empty the OS page cache (root only): the stream's blocks and the index's pages are
    read from disk again, as after a quiet spell or a reboot."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return "OS page cache dropped"
    except OSError as exc:
        return f"OS page cache NOT dropped ({exc.strerror}: run as root for a cold test)"


def load() -> str:
    return "load " + " ".join(f"{x:.1f}" for x in os.getloadavg())


async def start_feed(js: object, path: Path) -> tuple[HistoryFeed, asyncio.Task[None]]:
    feed = HistoryFeed(js, HistoryIndex(path), days=30)  # type: ignore[arg-type]
    return feed, asyncio.create_task(feed.run())


async def stop_feed(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def caught_up(js: object, feed: HistoryFeed) -> None:
    info = await js.stream_info(bus.HISTORY_STREAM)  # type: ignore[attr-defined]
    while not await feed.caught_up(stream_id(info), info.state.last_seq, 600):
        pass


async def live_cost(nc: object, js: object, index_path: Path) -> str:
    """CPU of this process while the queue's Recorder records at a steady rate, without
    and with a feed running (the difference is the feed's cost per record, live: small
    batches, as in a queue process). Also the event loop's thread alone: the SQLite work
    runs on the index's own thread, mostly outside the GIL, so it does not take from the
    one core a queue leader's loop is limited to (docs/architecture.md, "Beyond one queue
    leader")."""
    cpu, loop = [], []
    for with_feed in (False, True):
        task = None
        if with_feed:
            feed, task = await start_feed(js, index_path)
            await caught_up(js, feed)
        before, before_loop = time.process_time(), time.thread_time()
        await record(nc, js, LIVE_EVENTS, pace=LIVE_RATE)
        if task:
            await caught_up(js, feed)
        cpu.append(time.process_time() - before)
        loop.append(time.thread_time() - before_loop)
        if task:
            await stop_feed(task)
    records = LIVE_EVENTS // 4 * 6
    per = (cpu[1] - cpu[0]) / records * 1e6
    per_loop = (loop[1] - loop[0]) / records * 1e6
    return (f"live: {records:,} records at ~{LIVE_RATE // 4 * 6:,}/s: process CPU "
            f"{cpu[0]:.2f} s without the feed, {cpu[1]:.2f} s with it: {per:.1f} us per "
            f"record, {per * 6:.0f} us per message of 6 records; on the event loop's thread "
            f"{loop[0]:.2f} -> {loop[1]:.2f} s: {per_loop:.1f} us per record, "
            f"{per_loop * 6:.0f} us per message")


async def main(events: int) -> None:
    import logging
    logging.disable(logging.INFO)  # the Recorder's JSON lines are not what is measured
    with tempfile.TemporaryDirectory(dir=Path.cwd() / ".bench" if (Path.cwd() / ".bench")
                                     .is_dir() else None) as tmp:
        server = NatsServer(Path(tmp) / "nats")
        server.start(Path(tmp) / "nats.log")
        index_path = Path(tmp) / "queue" / FILE_NAME
        try:
            print(f"start: {load()}")
            nc = await bus.connect(server.url, "bench-history")
            js = nc.jetstream()
            await bus.ensure_history_stream(js, 30 * 86400)
            start = time.perf_counter()
            made = await record(nc, js, events)
            took = time.perf_counter() - start
            info = await js.stream_info(bus.HISTORY_STREAM)
            print(f"recorded {len(made) * 4:,} events + {len(made) * 2:,} index records "
                  f"({info.state.bytes / 1e6:.0f} MB) in {took:.1f} s; {load()}")

            # The index from nothing (a new replica, a rebuild): time and CPU.
            cpu, start = time.process_time(), time.perf_counter()
            filling, fill = await start_feed(js, index_path)
            await caught_up(js, filling)
            took, cpu = time.perf_counter() - start, time.process_time() - cpu
            records = info.state.messages
            await stop_feed(fill)
            size = sum(p.stat().st_size for p in index_path.parent.iterdir())
            print(f"index caught up from nothing: {records:,} records in {took:.1f} s "
                  f"({records / took:,.0f}/s), process CPU {cpu:.1f} s "
                  f"({cpu / records * 1e6:.1f} us per record), file {size / 1e6:.0f} MB; "
                  f"{load()}")
            print(await live_cost(nc, js, index_path))

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
            # Cold first: before the first query of each kind nats-server is restarted (its
            # block caches empty), the index reopened, and the OS page cache dropped.
            for source in ("stream", "index"):
                for name, make in queries.items():
                    await nc.close()
                    server.stop()
                    server.start(Path(tmp) / "nats.log")
                    nc = await bus.connect(server.url, "bench-history")
                    js = nc.jetstream()
                    feed: HistoryFeed | None = None
                    task = None
                    if source == "index":
                        feed, task = await start_feed(js, index_path)
                        await caught_up(js, feed)
                    dropped = drop_caches()
                    first = await timed(js, make(), feed)
                    runs = [await timed(js, make(), feed) for _ in range(ROUNDS)]
                    secs = [r[0] for r in runs]
                    print(f"{source:6s} {name:34s} first {first[0] * 1000:7.1f} ms   "
                          f"p50 {statistics.median(secs) * 1000:7.1f} ms   "
                          f"max {max(secs) * 1000:7.1f} ms   events {runs[-1][1]}   "
                          f"{load()}")
                    if task:
                        await stop_feed(task)
            print(f"({dropped}; nats-server restarted before each first query)")
            await nc.close()
        finally:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000))
