"""The JetStream consumer loop (qmail-rspawn): every replica pulls from the one shared
durable consumer "remote-delivery", so N replicas share the work and each job goes to one.

- Cluster-wide concurrency = the consumer's max_ack_pending = control file
  concurrencyremote (default 20), applied live: a change updates the consumer, whatever the
  number of replicas. Each replica also fetches at most that many at a time.
- A job is acked only after its DeliveryResult is in the stream (at least once). A replica
  killed mid-transfer never acks, so after ack_wait the job goes to another replica.
- Long transfers keep their job by sending progress acks every ack_wait / 3.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext

from mailyard.api.mail.v1.delivery_pb2 import (
    CHANNEL_REMOTE,
    OUTCOME_DEFERRED,
    OUTCOME_DELIVERED,
    DeliveryJob,
    DeliveryResult,
    RecipientResult,
)
from mailyard.core import bus
from mailyard.core.control import ControlView
from mailyard.core.errors import BusError, SpoolError
from mailyard.core.logs import queue_id_var
from mailyard.core.spool import Spool
from mailyard.remote_delivery import metrics
from mailyard.remote_delivery.deliver import Deliverer, all_recipients
from mailyard.remote_delivery.settings import Settings

log = logging.getLogger(__name__)
SUBJECT = bus.JOB_SUBJECT["remote"]
DURABLE = bus.JOB_CONSUMER["remote"]
RESULTS = bus.RESULT_SUBJECT.format(channel="remote")
SPOOL_TROUBLE = "Sorry, the message file could not be read here ({why}). (#4.3.0)"
INTERNAL = "Sorry, remote delivery failed on our side ({why}). (#4.3.0)"


class Worker:
    def __init__(self, settings: Settings, js: JetStreamContext, control: ControlView,
                 spool: Spool, deliverer: Deliverer) -> None:
        self.settings = settings
        self.js = js
        self.control = control
        self.spool = spool
        self.deliverer = deliverer
        self.limit = self._configured_limit()
        self.inflight: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._sub: Any = None
        self.handled = 0

    def _configured_limit(self) -> int:
        return max(1, self.control.integer("concurrencyremote",
                                           self.settings.concurrency_default))

    async def apply_limit(self) -> None:
        """Make max_ack_pending equal concurrencyremote (idempotent; every replica may)."""
        self.limit = self._configured_limit()
        await bus.ensure_consumer(
            self.js, bus.JOBS_STREAM, DURABLE, filter_subject=SUBJECT,
            max_ack_pending=self.limit, ack_wait=self.settings.ack_wait,
            max_deliver=self.settings.max_deliver)
        metrics.LIMIT.set(self.limit)
        self._slot_freed.set()

    @property
    def local_limit(self) -> int:
        cap = self.settings.max_in_flight
        return min(self.limit, cap) if cap else self.limit

    def _on_control(self, key: str, _value: bytes | None) -> None:
        if key == "concurrencyremote" and self._configured_limit() != self.limit:
            log.info("concurrencyremote changed", extra={"limit": self._configured_limit()})
            asyncio.get_running_loop().create_task(self.apply_limit())

    async def start(self) -> None:
        await self.apply_limit()
        self.control.on_change(self._on_control)
        self._sub = await self.js.pull_subscribe_bind(DURABLE, stream=bus.JOBS_STREAM)
        self._loop_task = asyncio.create_task(self._loop(), name="remote-worker")

    async def stop(self, grace: float = 60.0) -> None:
        """Stop taking jobs, let the running ones finish (SIGTERM); what does not finish in
        time is left unacked and goes to another replica."""
        self._stopping.set()
        if self._loop_task:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loop_task
        if self.inflight:
            await asyncio.wait(self.inflight, timeout=grace)
        for task in self.inflight:
            task.cancel()
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            free = self.local_limit - len(self.inflight)
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                # One at a time: nats-py's fetch(batch=n) holds what arrives until n or the
                # timeout, and a job held in a client buffer is a concurrency slot nobody
                # uses. A single-message pull returns the moment a slot frees (about one
                # loopback round trip per job).
                msgs = await self._sub.fetch(batch=1, timeout=1.0)
            except TimeoutError:
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS reconnecting: a pause, not a crash
                log.warning("fetch failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                task = asyncio.create_task(self._handle(msg))
                self.inflight.add(task)
                task.add_done_callback(self._done)
            metrics.IN_USE.set(len(self.inflight))

    def _done(self, task: asyncio.Task[None]) -> None:
        self.inflight.discard(task)
        metrics.IN_USE.set(len(self.inflight))
        self._slot_freed.set()

    async def _keep(self, msg: Any) -> None:
        """Progress acks: a long transfer keeps its job instead of being redelivered."""
        period = max(0.5, self.settings.ack_wait / 3)
        while True:
            await asyncio.sleep(period)
            with contextlib.suppress(Exception):
                await msg.in_progress()

    async def _handle(self, msg: Any) -> None:
        started = time.monotonic()
        try:
            job = bus.decode(DeliveryJob, msg.data)
        except Exception:
            log.error("undecodable job dropped (not a DeliveryJob)")
            with contextlib.suppress(Exception):
                await msg.term()
            return
        token = queue_id_var.set(job.queue_id)
        keeper = asyncio.create_task(self._keep(msg))
        try:
            results = await self.run(job)
            outcome = DeliveryResult(job_id=job.job_id, queue_id=job.queue_id,
                                     channel=CHANNEL_REMOTE, results=results,
                                     worker=self.settings.instance,
                                     duration_seconds=time.monotonic() - started)
            now = Timestamp()
            now.GetCurrentTime()
            outcome.finished_at.CopyFrom(now)
            try:
                await bus.publish(self.js, RESULTS, outcome, msg_id=job.job_id)
            except BusError as exc:
                # Not acked: the job comes back after ack_wait and its result with it.
                log.warning("result not published: %s", exc)
                return
            with contextlib.suppress(Exception):
                await msg.ack()
            for res in results:
                metrics.DELIVERIES.labels(_label(res)).inc()
            metrics.DELIVERY_SECONDS.observe(time.monotonic() - started)
            self.handled += 1
            log.info("delivered job", extra={
                "job_id": job.job_id, "attempt": job.attempt,
                "results": [f"{_label(r)}:{r.enhanced_code}" for r in results]})
        finally:
            keeper.cancel()
            queue_id_var.reset(token)

    async def run(self, job: DeliveryJob) -> list[RecipientResult]:
        """Read the message and deliver it; never raises, never sends an empty message."""
        try:
            envelope, data = await self.spool.read(job.spool_path)
            if job.sha256 and envelope.sha256 != job.sha256:
                raise SpoolError("the spool file is not the job's message")
        except SpoolError as exc:
            log.error("spool read failed: %s", exc)
            return all_recipients(job, OUTCOME_DEFERRED, SPOOL_TROUBLE.format(why=exc),
                                  reason="spool")
        try:
            return await self.deliverer.deliver(job, data)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("delivery crashed")
            return all_recipients(job, OUTCOME_DEFERRED,
                                  INTERNAL.format(why=type(exc).__name__), reason="internal")


def _label(res: RecipientResult) -> str:
    if res.outcome == OUTCOME_DELIVERED:
        return "delivered"
    return "deferred" if res.outcome == OUTCOME_DEFERRED else "failed"
