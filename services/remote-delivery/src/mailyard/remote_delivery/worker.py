"""The JetStream consumer loop (qmail-rspawn): every replica pulls from the one shared
durable consumer "remote-delivery", so N replicas share the work and each job goes to one.

- Cluster-wide concurrency = the consumer's max_ack_pending = control file
  concurrencyremote (default 20), applied live: a change updates the consumer, whatever the
  number of replicas. Each replica also runs at most that many at a time (fewer with
  MAILYARD_REMOTE_MAX_IN_FLIGHT).
- The loop itself (a standing pull request for the free slots, progress acks every
  ack_wait / 3, result then ack, graceful stop) is `mailyard.core.consumer.JobConsumer`,
  shared with local-delivery:
  a job is acked only after its DeliveryResult is in the stream (at least once), and a
  replica killed mid-transfer never acks, so after ack_wait the job goes to another replica.
- A spool file up to INLINE_READ_MAX bytes is read on the event loop: from the page cache that
  costs less CPU than the hand-off to the spool's thread pool and back.
"""

from __future__ import annotations

import asyncio
import logging
import time

from nats.js import JetStreamContext

from mailyard.api.mail.v1.delivery_pb2 import (
    CHANNEL_REMOTE,
    OUTCOME_DEFERRED,
    OUTCOME_DELIVERED,
    OUTCOME_FAILED,
    DeliveryJob,
    DeliveryResult,
    RecipientResult,
)
from mailyard.core import bus
from mailyard.core.consumer import JobConsumer
from mailyard.core.control import ControlView
from mailyard.core.errors import SpoolError
from mailyard.core.spool import Spool
from mailyard.remote_delivery import metrics
from mailyard.remote_delivery.deliver import Deliverer, all_recipients
from mailyard.remote_delivery.settings import Settings

log = logging.getLogger(__name__)
SUBJECT = bus.JOB_SUBJECT["remote"]
DURABLE = bus.JOB_CONSUMER["remote"]
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
        self.consumer = JobConsumer(
            js, "remote", self._handle, limit=lambda: self.local_limit,
            ack_wait=settings.ack_wait, on_in_flight=metrics.IN_USE.set,
            on_settled=self._settled, recreate=self._recreate)
        self._background: set[asyncio.Task[None]] = set()  # limit updates, not jobs

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
        self.consumer.wake()

    async def _recreate(self) -> None:
        """The stream or the consumer was deleted: both again, with the current limit."""
        await bus.ensure_mail_streams(self.js)
        await self.apply_limit()

    @property
    def local_limit(self) -> int:
        cap = self.settings.max_in_flight
        return min(self.limit, cap) if cap else self.limit

    @property
    def handled(self) -> int:
        return self.consumer.handled

    @property
    def inflight(self) -> int:
        return self.consumer.in_flight

    def _on_control(self, key: str, _value: bytes | None) -> None:
        if key == "concurrencyremote" and self._configured_limit() != self.limit:
            log.info("concurrencyremote changed", extra={"limit": self._configured_limit()})
            task = asyncio.get_running_loop().create_task(self.apply_limit())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def start(self) -> None:
        await self.apply_limit()
        self.control.on_change(self._on_control)
        await self.consumer.start()

    async def stop(self, grace: float = 60.0) -> None:
        """Stop taking jobs, let the running ones finish (SIGTERM); what does not finish in
        time is left unacked and goes to another replica."""
        await self.consumer.stop(grace)

    async def _handle(self, job: DeliveryJob) -> DeliveryResult:
        started = time.monotonic()
        results = await self.run(job)
        outcome = DeliveryResult(job_id=job.job_id, queue_id=job.queue_id,
                                 channel=CHANNEL_REMOTE, results=results,
                                 worker=self.settings.instance,
                                 duration_seconds=time.monotonic() - started)
        now = time.time_ns()
        outcome.finished_at.seconds, outcome.finished_at.nanos = divmod(now, 1_000_000_000)
        return outcome

    def _settled(self, job: DeliveryJob, outcome: DeliveryResult, seconds: float) -> None:
        for res in outcome.results:
            _COUNTERS[res.outcome].inc()
        metrics.DELIVERY_SECONDS.observe(seconds)
        # One line per job that did not simply succeed; successes are counted (metrics) and
        # logged at DEBUG: a JSON line per message costs tens of µs of CPU.
        level = logging.DEBUG if all(r.outcome == OUTCOME_DELIVERED
                                     for r in outcome.results) else logging.INFO
        if log.isEnabledFor(level):
            log.log(level, "delivered job", extra={
                "job_id": job.job_id, "attempt": job.attempt,
                "results": [f"{_label(r)}:{r.enhanced_code}" for r in outcome.results]})

    async def run(self, job: DeliveryJob) -> list[RecipientResult]:
        """Read the message and deliver it; never raises, never sends an empty message."""
        try:
            envelope, data = await self.spool.read(job.spool_path, size=job.size,
                                                   inline_max=self.settings.inline_read_max)
            if job.sha256 and envelope.sha256 != job.sha256:
                raise SpoolError("the spool file is not the job's message")
        except SpoolError as exc:
            log.error("spool read failed: %s", exc)
            return all_recipients(job, OUTCOME_DEFERRED, SPOOL_TROUBLE.format(why=exc),
                                  reason="spool")
        try:
            lines = envelope.lines if envelope.HasField("lines") else None
            return await self.deliverer.deliver(job, data, lines, envelope.origin)
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


_COUNTERS = {OUTCOME_DELIVERED: metrics.DELIVERIES.labels("delivered"),
             OUTCOME_DEFERRED: metrics.DELIVERIES.labels("deferred"),
             OUTCOME_FAILED: metrics.DELIVERIES.labels("failed")}
