"""qmail-send's preprocessing and hand-out: todo notices in, delivery jobs out.

TodoConsumer classifies each new message's recipients (local if the domain is a directory
domain, remote otherwise), records them as due now, and acks the todo only after that
commit. Dispatcher is the retry scheduler as well: it polls the store's (state,
next_attempt) index in small batches, so a million waiting deferrals cost nothing until they
are due and never hold a delivery concurrency slot on the job consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import nats.errors
from nats.aio.msg import Msg

from mailyard.api.mail.v1.delivery_pb2 import CHANNEL_LOCAL, CHANNEL_REMOTE, DeliveryJob
from mailyard.api.mail.v1.envelope_pb2 import Envelope
from mailyard.core import bus
from mailyard.core.addresses import domain_of, to_ascii_domain
from mailyard.core.errors import BusError
from mailyard.queue import metrics
from mailyard.queue.engine import Queue, enum
from mailyard.queue.state import Job

log = logging.getLogger(__name__)
CHANNEL_NAME: dict[int, str] = {CHANNEL_LOCAL: "local", CHANNEL_REMOTE: "remote"}


def classify(queue: Queue, recipients: list[str]) -> list[tuple[str, int, str]]:
    """(address, channel, domain) for each distinct recipient."""
    out: list[tuple[str, int, str]] = []
    seen: set[str] = set()
    for address in recipients:
        if address in seen:
            continue
        seen.add(address)
        domain = to_ascii_domain(domain_of(address))
        channel = CHANNEL_LOCAL if queue.directory.is_local_domain(domain) else CHANNEL_REMOTE
        out.append((address, channel, domain))
    return out


class TodoConsumer:
    def __init__(self, queue: Queue) -> None:
        self.q = queue

    async def run(self) -> None:
        js = self.q.js
        await bus.ensure_consumer(js, bus.TODO_STREAM, bus.TODO_CONSUMER,
                                  filter_subject=bus.TODO_SUBJECT,
                                  ack_wait=self.q.settings.consume_ack_wait,
                                  max_deliver=-1, max_ack_pending=10_000)
        sub = await js.pull_subscribe(bus.TODO_SUBJECT, durable=bus.TODO_CONSUMER,
                                      stream=bus.TODO_STREAM)
        while True:
            try:
                msgs = await sub.fetch(self.q.settings.consume_batch, timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except Exception as exc:  # NATS away: a pause, not a crash
                log.warning("todo fetch failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            await self.handle(msgs)

    async def handle(self, msgs: list[Msg]) -> None:
        envelopes: list[tuple[Msg, Envelope]] = []
        for msg in msgs:
            try:
                envelopes.append((msg, bus.decode(Envelope, msg.data)))
            except Exception:
                log.error("undecodable todo notice dropped")
                await msg.term()
        exists = await asyncio.gather(*(self.q.spool.exists(env.spool_path)
                                        for _, env in envelopes), return_exceptions=True)
        items = []
        for (_msg, env), present in zip(envelopes, exists, strict=True):
            if present is True:
                items.append((env, classify(self.q, list(env.recipients))))
            else:
                # The injector withdrew it (its client got a 451) or it is long done.
                log.info("todo without spool file dropped", extra={"queue_id": env.queue_id})
                metrics.REPAIRS.labels("withdrawn").inc()
        now = time.time()
        added = await self.q.store.run(self.q.store.add, items, now) if items else []
        # Acked only now: the state is committed (a crash before this redelivers the todo,
        # and a known queue id is skipped).
        await asyncio.gather(*(msg.ack() for msg, _ in envelopes), return_exceptions=True)
        for qid in added:
            await self.q.event("new", qid)
        if added:
            self.q.wake.set()


def job_message(job: Job) -> DeliveryJob:
    m = job.message
    out = DeliveryJob(job_id=job.job_id, queue_id=m.queue_id, channel=enum(job.channel),
                      sender=m.sender, recipients=job.recipients, domain=job.domain,
                      spool_path=m.spool_path, sha256=m.sha256, size=m.size,
                      attempt=job.attempt, smtputf8=m.smtputf8, body_8bit=m.body_8bit)
    out.received_at.FromNanoseconds(int(m.received_at * 1e9))
    return out


class Dispatcher:
    """Hands out due recipients as jobs; sleeps until the next one is due (or a wake)."""

    def __init__(self, queue: Queue) -> None:
        self.q = queue

    async def announce_recent(self) -> int:
        """Publish again what was handed out within the dedupe window: JetStream drops the
        jobs that did go out (same Nats-Msg-Id) and takes those a crashed leader never sent.
        Older hand-outs without a result are the reconciler's stuck jobs."""
        since = time.time() - bus.DUPLICATE_WINDOW + 10
        jobs = await self.q.store.run(self.q.store.handed_out_since, since)
        if jobs:
            await self.publish(jobs)
        return len(jobs)

    async def run(self) -> None:
        store, settings = self.q.store, self.q.settings
        if announced := await self.announce_recent():
            log.info("re-announced recent jobs after taking over", extra={"jobs": announced})
        while True:
            now = time.time()
            try:
                jobs = await store.run(store.take_due, now, settings.dispatch_batch)
            except Exception:
                log.exception("taking due recipients failed")
                jobs = []
            if jobs:
                await self.publish(jobs)
                continue
            nxt = await store.run(store.next_due)
            delay = settings.scheduler_max_sleep if nxt is None else nxt - time.time()
            delay = min(max(delay, 0.005), settings.scheduler_max_sleep)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.q.wake.wait(), delay)
            self.q.wake.clear()

    async def publish(self, jobs: list[Job]) -> None:
        async def one(job: Job) -> None:
            subject = bus.JOB_SUBJECT[CHANNEL_NAME[job.channel]]
            try:
                await bus.publish(self.q.js, subject, job_message(job), msg_id=job.job_id)
            except BusError as exc:
                log.warning("job not published, retried shortly: %s", exc,
                            extra={"queue_id": job.message.queue_id})
                await self.q.store.run(self.q.store.undo_dispatch, job, time.time() + 5.0)

        await asyncio.gather(*(one(j) for j in jobs))
