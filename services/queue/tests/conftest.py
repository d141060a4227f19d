"""Real parts for the queue's tests: the queue as a child process, a real nats-server, and
test code playing the delivery workers through the real contract (DeliveryJob in,
DeliveryResult out on the bus)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import nats.errors
import pytest

from mailyard.api.directory.v1 import directory_pb2
from mailyard.api.mail.v1 import delivery_pb2 as dpb
from mailyard.api.mail.v1.envelope_pb2 import Envelope
from mailyard.api.queue.v1 import queue_pb2 as qpb
from mailyard.api.queue.v1 import queue_pb2_grpc
from mailyard.core import bus
from mailyard.core.directory import domain_key
from mailyard.core.inject import inject
from mailyard.core.natsserver import NatsServer
from mailyard.core.spool import Spool
from mailyard.testing import ServiceProcess, free_port

T = TypeVar("T")
LOCAL_DOMAIN = "local.test"
DELIVERED, DEFERRED, FAILED = dpb.OUTCOME_DELIVERED, dpb.OUTCOME_DEFERRED, dpb.OUTCOME_FAILED


class QueueProc:
    """One queue process plus a gRPC stub on it."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.grpc_port = int(env["MAILYARD_QUEUE_GRPC_PORT"])
        self.http_port = int(env["MAILYARD_QUEUE_HTTP_PORT"])
        self.proc = ServiceProcess("mailyard.queue", env, log_dir, http_port=self.http_port)
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.grpc_port}")
        self.stub = queue_pb2_grpc.QueueServiceStub(self.channel)

    def start(self, wait: bool = True) -> QueueProc:
        self.proc.start(30.0 if wait else None)
        return self

    async def stat(self) -> qpb.StatResponse:
        return await self.stub.Stat(qpb.StatRequest(), timeout=5)

    async def explain(self, queue_id: str) -> qpb.MessageDetail:
        return await self.stub.Explain(qpb.ExplainRequest(queue_id=queue_id), timeout=5)


def queue_env(nats_server: NatsServer, spool: Spool, tmp_path: Path,
              **overrides: str) -> dict[str, str]:
    env = {
        "NATS_URL": nats_server.url, "SPOOL_DIR": str(spool.root),
        "STATE_DIR": str(tmp_path / "state"), "GRPC_PORT": str(free_port()),
        "HTTP_PORT": str(free_port()), "ME": "mx.test", "RETRY_C_REMOTE": "0.3",
        "RETRY_C_LOCAL": "0.3", "RECONCILE_INTERVAL": "3600", "RECONCILE_GRACE": "0",
        "LOST_CHECK_INTERVAL": "3600",
        "LEADER_TTL": "3", "SCHEDULER_MAX_SLEEP": "0.2", "STATE_SYNC": "NORMAL",
        "CONSUME_ACK_WAIT": "2",
        "INSTANCE": f"q{time.time_ns()}",
    }
    env.update(overrides)
    return {f"MAILYARD_QUEUE_{k}": v for k, v in env.items()}


@pytest.fixture
def start_queue(nats_server: NatsServer, spool: Spool,
                tmp_path: Path) -> Iterator[Callable[..., QueueProc]]:
    procs: list[QueueProc] = []

    def start(wait: bool = True, **overrides: str) -> QueueProc:
        proc = QueueProc(queue_env(nats_server, spool, tmp_path, **overrides),
                         tmp_path / "logs").start(wait)
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        p.proc.stop()


class Worker:
    """Plays a delivery worker: takes jobs from its channel's shared consumer, reports."""

    def __init__(self, js: Any, channel: str) -> None:
        self.js = js
        self.channel = channel
        self.sub: Any = None

    async def start(self) -> Worker:
        await bus.ensure_consumer(self.js, bus.JOBS_STREAM, bus.JOB_CONSUMER[self.channel],
                                  filter_subject=bus.JOB_SUBJECT[self.channel], ack_wait=30)
        self.sub = await self.js.pull_subscribe(bus.JOB_SUBJECT[self.channel],
                                                durable=bus.JOB_CONSUMER[self.channel],
                                                stream=bus.JOBS_STREAM)
        return self

    async def job(self, timeout: float = 20.0) -> dpb.DeliveryJob:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msgs = await self.sub.fetch(1, timeout=0.5)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            await msgs[0].ack()
            return bus.decode(dpb.DeliveryJob, msgs[0].data)
        raise AssertionError(f"no {self.channel} job within {timeout}s")

    async def none_within(self, seconds: float) -> bool:
        try:
            msgs = await self.sub.fetch(1, timeout=seconds)
        except (TimeoutError, nats.errors.TimeoutError):
            return True
        for m in msgs:
            await m.nak()
        return False

    async def report(self, job: dpb.DeliveryJob,
                     outcomes: dict[str, tuple[int, str]] | int, reply: str = "") -> None:
        if isinstance(outcomes, int):
            outcomes = {r: (outcomes, reply or "250 ok") for r in job.recipients}
        result = dpb.DeliveryResult(job_id=job.job_id, queue_id=job.queue_id,
                                    channel=job.channel, worker="pytest")
        for rcpt, (outcome, text) in outcomes.items():
            found = re.search(r"\b([245]\.\d{1,3}\.\d{1,3})\b", text)
            code = found.group(1) if found else ""
            result.results.append(dpb.RecipientResult(
                recipient=rcpt, outcome=outcome, reply=text, enhanced_code=code,  # type: ignore[arg-type]
                remote_host="mx.remote.test" if self.channel == "remote" else ""))
        await bus.publish(self.js, bus.RESULT_SUBJECT.format(channel=self.channel), result,
                          msg_id=f"result-{job.job_id}")


@pytest.fixture
async def workers(js: Any) -> AsyncIterator[dict[str, Worker]]:
    yield {"local": await Worker(js, "local").start(),
           "remote": await Worker(js, "remote").start()}


async def add_local_domain(js: Any, name: str = LOCAL_DOMAIN) -> None:
    kv = await bus.ensure_kv(js, bus.KV_DIRECTORY)
    await kv.put(domain_key(name), directory_pb2.Domain(name=name).SerializeToString())


async def set_control(js: Any, name: str, value: str) -> None:
    kv = await bus.ensure_kv(js, bus.KV_CONTROL)
    await kv.put(name, value.encode())


async def send(spool: Spool, js: Any, sender: str, recipients: list[str],
               body: bytes = b"Subject: test\r\n\r\nhello\r\n") -> Envelope:
    return await inject(spool, js, Envelope(sender=sender, recipients=recipients), body)


async def wait_for(check: Callable[[], Awaitable[T]], timeout: float = 20.0,
                   what: str = "condition") -> T:
    """Poll until check() returns something truthy (no timing is asserted, only outcomes)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await check()
            if last:
                return last
        except grpc.aio.AioRpcError as exc:
            last = exc
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")


PROBE = "watch-probe"


async def watching(js: Any, events: list[qpb.DeliveryEvent], timeout: float = 20.0) -> None:
    """Return once a Watch stream filling `events` is subscribed: events are core NATS (not
    persisted), so one sent before the queue's subscription reached the server is not seen.
    A probe event is sent until it comes back through the stream (no fixed sleep)."""
    probe = qpb.DeliveryEvents()
    probe.events.add(kind=PROBE, queue_id=PROBE).at.GetCurrentTime()

    async def seen() -> bool:
        await js._nc.publish(bus.EVENTS_SUBJECT, probe.SerializeToString())
        await asyncio.sleep(0.05)
        return any(e.kind == PROBE for e in events)

    await wait_for(seen, timeout, what="the watch stream subscribed")


async def gone(q: QueueProc, queue_id: str) -> bool:
    try:
        await q.explain(queue_id)
        return False
    except grpc.aio.AioRpcError as exc:
        return exc.code() == grpc.StatusCode.NOT_FOUND


async def read_spool(spool: Spool, queue_id: str) -> tuple[Envelope, bytes]:
    return await spool.read(spool.relpath(queue_id))


async def finished(q: QueueProc, spool: Spool, env: Envelope) -> bool:
    """Completed: the spool file is removed (only completion does that) and the state too."""
    return not (spool.root / env.spool_path).exists() and await gone(q, env.queue_id)


async def standby(q: QueueProc) -> bool:
    """The process answers, as a standby."""
    try:
        await q.stat()
    except grpc.aio.AioRpcError as exc:
        return exc.code() == grpc.StatusCode.UNAVAILABLE and "standby" in (exc.details() or "")
    return False
