"""Queue scale: a million deferred recipients must not slow new mail, stat, or memory.

    .venv/bin/python -m bench.queue_scale [N]        (N deferred recipients, default 1,000,000)
    .venv/bin/python -m bench.queue_scale --cycle [K]   (queue CPU per message, default 3,000)
    .venv/bin/python -m bench.queue_scale --ceiling [K] (the one leader's ceiling, see below)

1. empty queue: inject K messages and time until the queue has preprocessed them all
   (accept + preprocess rate);
2. fill the state store with N deferred recipients directly through mailyard.queue.state
   (one per message, next attempt a day away: qmail's "queue full of dead domains");
3. restart the queue on it, and measure the same rate again, `Stat` latency over gRPC
   (p50 / p99 / max over 200 calls) and the queue process's RSS.

Targets (from issue 6): rate >= 90% of the empty-queue rate, stat < 100 ms, RSS < 1 GB.

`--cycle` measures the queue alone: K messages injected 50 at a time go the whole way
(todo -> job -> a stand-in worker that reports "delivered" at once -> completion), and the
queue process's CPU time (user + system, from /proc) is divided by K. The other processes
of a real run (smtp-ingress, remote-delivery) are not there, so the figure is the queue's
own cost per message, less disturbed by what else shares the box.

`--ceiling` runs the same cycle with more and more injections in flight (50, 200, 800) and
prints, per level, the rate, the queue process's CPU share (CPU seconds / wall seconds: 1.0 =
one core busy) and 1 / (CPU per message): the most one queue leader can carry on one core,
whatever the rest of the cluster has. Every message of the cluster passes through that one
process; docs/architecture.md, "Beyond one queue leader", uses these figures.
Figures only: nothing here asserts.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import nats.errors

from bench.proc import cpu_seconds
from mailyard.api.mail.v1 import delivery_pb2 as dpb
from mailyard.api.mail.v1.envelope_pb2 import Envelope
from mailyard.api.queue.v1 import queue_pb2, queue_pb2_grpc
from mailyard.core import bus
from mailyard.core.ids import new_queue_id
from mailyard.core.inject import inject
from mailyard.core.natsserver import NatsServer, free_port
from mailyard.core.spool import Spool
from mailyard.queue.state import Store
from mailyard.testing import ServiceProcess

K = 2000           # messages injected per rate measurement
CONCURRENCY = 50   # injections in flight (like 50 SMTP sessions)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def rows(n: int) -> Iterator[tuple[str, str, str, float, float]]:
    now = time.time()
    for i in range(n):
        qid = new_queue_id(now - 3600 + i / 1e6)
        yield qid, f"sender{i % 1000}@example.com", f"user{i}@dead{i % 5000}.example", \
            now - 3600, now + 86400


def stat(stub: queue_pb2_grpc.QueueServiceStub) -> queue_pb2.StatResponse:
    return stub.Stat(queue_pb2.StatRequest(), timeout=10)


async def accept_rate(spool: Spool, js: object, stub: queue_pb2_grpc.QueueServiceStub,
                      count: int = K) -> float:
    """Messages per second from first injection until all are preprocessed."""
    base = stat(stub).messages
    sem = asyncio.Semaphore(CONCURRENCY)
    body = b"Subject: bench\r\n\r\n" + b"x" * 1000 + b"\r\n"

    async def one(i: int) -> None:
        async with sem:
            await inject(spool, js,  # type: ignore[arg-type]
                         Envelope(sender="b@bench.test", recipients=[f"r{i}@remote.test"]),
                         body)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    while True:
        s = await asyncio.to_thread(stat, stub)
        if s.messages >= base + count and s.not_preprocessed == 0:
            break
        await asyncio.sleep(0.01)
    return count / (time.perf_counter() - start)


def start_queue(env: dict[str, str], logs: Path) -> ServiceProcess:
    return ServiceProcess("mailyard.queue", env, logs,
                          http_port=int(env["MAILYARD_QUEUE_HTTP_PORT"])).start(wait=600)


async def stand_in_worker(js: Any, stop: asyncio.Event) -> None:
    """Takes remote jobs and reports every recipient delivered at once."""
    await bus.ensure_consumer(js, bus.JOBS_STREAM, bus.JOB_CONSUMER["remote"],
                              filter_subject=bus.JOB_SUBJECT["remote"], ack_wait=30,
                              max_ack_pending=1000)
    sub = await js.pull_subscribe(bus.JOB_SUBJECT["remote"], durable=bus.JOB_CONSUMER["remote"],
                                  stream=bus.JOBS_STREAM)

    async def report(msg: Any) -> None:
        job = bus.decode(dpb.DeliveryJob, msg.data)
        result = dpb.DeliveryResult(job_id=job.job_id, queue_id=job.queue_id,
                                    channel=job.channel, worker="bench")
        for rcpt in job.recipients:
            result.results.append(dpb.RecipientResult(
                recipient=rcpt, outcome=dpb.OUTCOME_DELIVERED, reply="250 ok",
                remote_host="127.0.0.1"))
        await bus.publish(js, bus.RESULT_SUBJECT.format(channel="remote"), result,
                          msg_id=f"result-{job.job_id}")
        await msg.ack()

    while not stop.is_set():
        try:
            msgs = await sub.fetch(100, timeout=0.5)
        except (TimeoutError, nats.errors.TimeoutError):
            continue
        await asyncio.gather(*(report(m) for m in msgs))


async def rig(prefix: str, settings: dict[str, str]) -> tuple[
        Path, NatsServer, Spool, dict[str, str], Any, Any, queue_pb2_grpc.QueueServiceStub]:
    """A private nats-server and spool, the queue's environment (not started) and clients."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    server = NatsServer(tmp / "js")
    server.start(tmp / "nats.log")
    spool = Spool(tmp / "spool")
    spool.ensure()
    grpc_port = free_port()
    env = {f"MAILYARD_QUEUE_{k}": v for k, v in {
        "NATS_URL": server.url, "SPOOL_DIR": str(spool.root), "STATE_DIR": str(tmp / "state"),
        "GRPC_PORT": str(grpc_port), "HTTP_PORT": str(free_port()), "ME": "bench.test",
        "RECONCILE_AT_START": "false", "RECONCILE_INTERVAL": "86400", **settings}.items()}
    nc = await bus.connect(server.url, "bench")
    js = nc.jetstream()
    await bus.ensure_mail_streams(js)
    stub = queue_pb2_grpc.QueueServiceStub(grpc.insecure_channel(f"127.0.0.1:{grpc_port}"))
    return tmp, server, spool, env, nc, js, stub


async def cycle(count: int, levels: tuple[int, ...] = (CONCURRENCY,)) -> None:
    """The queue's CPU per message over the whole path (see the module doc)."""
    tmp, server, spool, env, nc, js, stub = await rig("queue-cycle-", {
        "LOG_LEVEL": "WARNING",
        **{k.removeprefix("MAILYARD_QUEUE_"): v for k, v in os.environ.items()
           if k.startswith("MAILYARD_QUEUE_")}})
    stop = asyncio.Event()
    worker = asyncio.create_task(stand_in_worker(js, stop))
    queue = None
    body = b"Subject: bench\r\n\r\n" + b"x" * 1000 + b"\r\n"

    async def run(n: int, in_flight: int = CONCURRENCY) -> tuple[float, float]:
        assert queue is not None and queue.proc is not None
        sem = asyncio.Semaphore(in_flight)

        async def one(i: int) -> None:
            async with sem:
                await inject(spool, js,
                             Envelope(sender="b@bench.test", recipients=[f"r{i}@remote.test"]),
                             body)

        cpu0, t0 = cpu_seconds(queue.proc.pid), time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        while True:
            s = await asyncio.to_thread(stat, stub)
            if s.messages == 0 and s.not_preprocessed == 0:
                break
            await asyncio.sleep(0.02)
        return cpu_seconds(queue.proc.pid) - cpu0, time.perf_counter() - t0

    try:
        queue = start_queue(env, tmp)
        await run(count // 10)  # warm-up: streams, consumers, caches
        for level in levels:
            cpu, wall = await run(count, level)
            print(f"queue cycle, {level} in flight: {count:,} messages in {wall:.1f}s "
                  f"({count / wall:,.0f} msg/s), queue CPU {cpu / count * 1e6:,.0f} us/msg, "
                  f"queue CPU share {cpu / wall:.2f}, one-core ceiling "
                  f"{count / cpu:,.0f} msg/s", flush=True)
    finally:
        stop.set()
        await worker
        if queue is not None:
            queue.stop()
        await nc.close()
        server.stop()
        spool.close()
        if os.environ.get("KEEP_BENCH_DIR") is None:
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)


async def main(n: int) -> None:
    tmp, server, spool, env, nc, js, stub = await rig("queue-scale-", {"LEADER_TTL": "2"})
    queue = None
    try:
        queue = start_queue(env, tmp)
        await accept_rate(spool, js, stub, K // 4)  # warm-up: streams, consumers, caches
        empty_rate = await accept_rate(spool, js, stub)
        print(f"empty queue: accept+preprocess {empty_rate:,.0f} msg/s", flush=True)
        queue.stop()

        started = time.perf_counter()
        store = Store(tmp / "state" / "queue.db", sync="NORMAL")
        store.open()
        store.add_deferred_bulk(rows(n))
        store.close()
        print(f"filled {n:,} deferred recipients in {time.perf_counter() - started:.1f}s",
              flush=True)

        started = time.perf_counter()
        queue = start_queue(env, tmp)
        print(f"queue ready on the full store in {time.perf_counter() - started:.1f}s")
        await accept_rate(spool, js, stub, K // 4)  # the same warm-up
        assert queue.proc is not None
        latencies = []
        for _ in range(200):
            t0 = time.perf_counter()
            s = stat(stub)
            latencies.append((time.perf_counter() - t0) * 1000)
        latencies.sort()
        print(f"stat: messages {s.messages:,}, deferred {s.recipients_by_state['deferred']:,};"
              f" latency p50 {statistics.median(latencies):.2f} ms, p99"
              f" {latencies[int(len(latencies) * 0.99) - 1]:.2f} ms, max {latencies[-1]:.2f} ms")
        full_rate = await accept_rate(spool, js, stub)
        ratio = full_rate / empty_rate if empty_rate else 0.0
        print(f"full queue: accept+preprocess {full_rate:,.0f} msg/s"
              f" ({ratio:.0%} of empty; target >= 90%)")
        print(f"queue RSS: {rss_mb(queue.proc.pid):,.0f} MB (target < 1024 MB)")
    finally:
        if queue is not None:
            queue.stop()
        await nc.close()
        server.stop()
        spool.close()
        if os.environ.get("KEEP_BENCH_DIR") is None:
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--ceiling"]:
        asyncio.run(cycle(int(sys.argv[2]) if len(sys.argv) > 2 else 5000, (50, 200, 800)))
    elif sys.argv[1:2] == ["--cycle"]:
        asyncio.run(cycle(int(sys.argv[2]) if len(sys.argv) > 2 else 3000))
    else:
        asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000))
