"""The job-consumer loop both delivery workers share (qmail-lspawn / qmail-rspawn).

Every replica of a delivery service binds the one durable pull consumer of its channel
("local-delivery", "remote-delivery"), so JetStream shares the jobs out and the consumer's
max_ack_pending (concurrencylocal / concurrencyremote) is the cluster-wide limit. A worker
creates and updates that consumer itself (it owns the limit); `JobConsumer` only runs it:

- one standing pull request for the free slots, topped up as jobs finish (issue 20): the
  jobs are delivered to an inbox as they arrive, with no fetch per job. A fetch per job
  (under load nats-py's no_wait probe, its 404 and then a lingering request; a task and a
  timer per message in nats-py) cost two to three NATS messages per job besides the job,
  its result and its ack. What is asked never exceeds the free slots (a job held for a
  replica that cannot run it is a max_ack_pending slot nobody uses), and a request is made
  once a quarter of the slots are free or nothing is asked any more, so a trickle of jobs
  needs a request per few jobs and a full worker one per freed slot, as before. Requests
  expire after `fetch_wait` (their 408 gives back what they did not bring), and one with
  no 408 by LOST_AFTER later (nats-server restarted) is written off;
- decode the DeliveryJob (a job that is not one is terminated: it can never succeed);
- run the worker's handler, which never sends anything twice by itself and returns the
  DeliveryResult with a result for every recipient;
- publish that result (Nats-Msg-Id = job id, deduplicated) and only then ack the job: a
  worker killed at any point before the ack loses nothing, JetStream redelivers after
  ack_wait (at least once, as qmail promises);
- progress acks (`in_progress`) every ack_wait / 3 for jobs that run long, from one ticker
  for all jobs in flight instead of one timer task per job;
- stop: the inbox goes (nats-server then drops the open requests), the jobs in flight
  finish (up to `grace` seconds), what does not finish stays unacked and goes to another
  replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from nats.js import JetStreamContext

from mailyard.api.mail.v1.delivery_pb2 import DeliveryJob, DeliveryResult
from mailyard.core import bus
from mailyard.core.batch_pull import LOST_AFTER, consumer_gone
from mailyard.core.errors import BusError
from mailyard.core.logs import queue_id_var

log = logging.getLogger(__name__)
RESULT_RETRY_MAX = 10.0  # seconds between tries to publish a kept result, at most
# A result is one NATS message (max_payload, 1 MiB by default) and a next hop may answer
# each recipient with up to 32 KB: 40 such replies made a result JetStream never took, and
# the job was kept and retried for ever, never delivered, deferred or bounced. Replies are
# cut to what fits (fitted), keeping their start; this much is left for the message's
# headers (Nats-Msg-Id) and the rest of the result.
RESULT_HEADROOM = 4096
CUT_MARK = " [...]"


Handler = Callable[[DeliveryJob], Awaitable[DeliveryResult]]
Settled = Callable[[DeliveryJob, DeliveryResult, float], None]


@dataclass
class _InFlight:
    msg: Any
    touched: float = field(default_factory=time.monotonic)


class JobConsumer:
    """Runs `handle` for the jobs of one channel's shared durable consumer.

    channel: "local" or "remote" (subjects and consumer names from `mailyard.core.bus`).
    limit: jobs this replica runs at once, asked again whenever a slot frees (so a changed
        concurrency file applies at once; call `wake()` after raising it).
    sync_ack: wait for JetStream to confirm the ack (logs a failed ack).
    on_in_flight: told the number of jobs in flight whenever it changes (a gauge).
    on_settled: called with (job, result, seconds) after the job is acked (metrics, logs).
    recreate: creates the stream and the durable consumer again. Called when a fetch finds
        them gone (an operator deleted them): the loop binds the new consumer and goes on,
        instead of failing every fetch until a restart. `ready` is False meanwhile.
    """

    def __init__(self, js: JetStreamContext, channel: str, handle: Handler, *,
                 limit: Callable[[], int], ack_wait: float, fetch_wait: float = 1.0,
                 sync_ack: bool = False,
                 on_in_flight: Callable[[int], None] | None = None,
                 on_settled: Settled | None = None,
                 recreate: Callable[[], Awaitable[None]] | None = None) -> None:
        self.js = js
        self.channel = channel
        self.durable = bus.JOB_CONSUMER[channel]
        self.result_subject = bus.RESULT_SUBJECT.format(channel=channel)
        self.handle = handle
        self.limit = limit
        self.ack_wait = ack_wait
        self.fetch_wait = fetch_wait
        self.sync_ack = sync_ack
        self.on_in_flight = on_in_flight
        self.on_settled = on_settled
        self.recreate = recreate
        self.ready = True  # False while the consumer is gone and not created again yet
        self.tasks: dict[asyncio.Task[None], _InFlight] = {}
        self.handled = 0
        self._sub: Any = None  # the inbox subscription the jobs are delivered to
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{bus.JOBS_STREAM}.{self.durable}"
        # pull requests still open, oldest first: [expires at (monotonic), jobs still due]
        self._asked: deque[list[float]] = deque()
        self._due = 0  # jobs asked for and not delivered: the sum over _asked
        self._gone = False  # the consumer did not answer (deleted): make it again
        self._slot_free = asyncio.Event()
        self._stopping = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None

    @property
    def in_flight(self) -> int:
        return len(self.tasks)

    @property
    def progress_period(self) -> float:
        return max(0.5, self.ack_wait / 3)

    async def start(self) -> None:
        """Start pulling from the durable consumer (the worker has made it)."""
        nc = self.js._nc
        self._sub = await nc.subscribe(nc.new_inbox(), cb=self._arrived)
        self._loop_task = asyncio.create_task(self._loop(), name=f"{self.channel}-consumer")
        self._ticker = asyncio.create_task(self._progress(), name=f"{self.channel}-progress")

    def wake(self) -> None:
        """The limit may have grown: look for a free slot again."""
        self._slot_free.set()

    async def stop(self, grace: float | None = 60.0) -> None:
        """Stop fetching; let the jobs in flight finish for up to `grace` seconds (None:
        as long as they take). What is still running then is cancelled and stays unacked."""
        self._stopping.set()
        self._slot_free.set()
        # no interest in the inbox any more: nats-server drops the open pull requests, so
        # the jobs waiting go to another replica now rather than after ack_wait
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()
        if self._loop_task:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loop_task
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=grace)
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=5)
        if self._ticker:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._ticker

    async def run(self, stop: asyncio.Event, grace: float | None = None) -> None:
        """start(), wait for `stop`, then stop(grace): a whole worker life in one call."""
        await self.start()
        await stop.wait()
        await self.stop(grace)

    # -- the loop ------------------------------------------------------------------------

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            self._slot_free.clear()
            if self._gone:
                await self._recreate()
                continue
            self._forget_expired()
            limit = max(1, self.limit())
            free = limit - len(self.tasks) - self._due
            if free > 0 and (not self._due or free >= max(1, limit // 4)):
                try:
                    await self._ask(free)
                except Exception as exc:  # NATS reconnecting: a pause, not a crash
                    log.warning("fetch failed: %s", exc)
                    await asyncio.sleep(0.5)
                    continue
            # woken by a finished job, a delivery, the end of a request; else in time to
            # notice a request that was lost
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._slot_free.wait(), self.fetch_wait + LOST_AFTER)

    async def _ask(self, jobs: int) -> None:
        request = {"batch": jobs, "expires": int(self.fetch_wait * 1e9)}
        await self.js._nc.publish(self._next, json.dumps(request).encode(),
                                  reply=self._sub.subject)
        self._asked.append([time.monotonic() + self.fetch_wait, jobs])
        self._due += jobs

    def _forget_expired(self) -> None:
        lost = time.monotonic() - LOST_AFTER
        while self._asked and self._asked[0][0] < lost:
            self._due -= int(self._asked.popleft()[1])

    def _forget_all(self) -> None:
        self._asked.clear()
        self._due = 0

    async def _arrived(self, msg: Any) -> None:
        """A job, or the status that ends a pull request (nats-py's subscription task)."""
        status = msg.headers.get("Status") if msg.headers else None
        if status is None:
            if self._asked:  # JetStream serves requests in order: the oldest is served
                self._asked[0][1] -= 1
                self._due -= 1
                if self._asked[0][1] <= 0:
                    self._asked.popleft()
            self.ready = True
            if self._stopping.is_set():
                return  # not acked: it goes to another replica after ack_wait
            task = asyncio.create_task(self._run(msg))
            self.tasks[task] = _InFlight(msg)
            task.add_done_callback(self._done)
            if self.on_in_flight:
                self.on_in_flight(len(self.tasks))
            return
        if status == "100":  # a heartbeat
            return
        if status in ("404", "408"):  # the oldest request ended with this much undelivered
            self.ready = True
            if self._asked:
                self._due -= int(self._asked.popleft()[1])
        else:
            # 503: nobody answers for the consumer; 409: deleted, leadership moved, ...:
            # every open request is over
            self._forget_all()
            if consumer_gone(status, str(msg.headers.get("Description", ""))):
                self.ready = False
                self._gone = True
            else:
                log.warning("pull request ended: %s %s", status,
                            msg.headers.get("Description", ""))
        self._slot_free.set()

    async def _recreate(self) -> None:
        self._forget_all()
        if self.recreate is None:
            log.warning("consumer %s is gone", self.durable)
            self._gone = False
            await asyncio.sleep(0.5)
            return
        try:
            await self.recreate()
            self._gone = False
            log.warning("consumer %s was gone: created again", self.durable)
        except Exception as exc:
            log.warning("consumer %s is gone and not created again yet: %s", self.durable, exc)
            await asyncio.sleep(0.5)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.pop(task, None)
        if self.on_in_flight:
            self.on_in_flight(len(self.tasks))
        self._slot_free.set()

    async def _progress(self) -> None:
        """Progress acks, so a long job is not handed to a second replica."""
        period = self.progress_period
        while True:
            await asyncio.sleep(period / 2)
            now = time.monotonic()
            for entry in list(self.tasks.values()):
                if now - entry.touched >= period:
                    entry.touched = now
                    with contextlib.suppress(Exception):
                        await entry.msg.in_progress()

    async def _publish(self, job: DeliveryJob, result: DeliveryResult) -> bool:
        """Publish the result, retrying until JetStream takes it (a full disk, a stream
        refusing writes): the job stays in flight, kept by progress acks, so it is not
        delivered again meanwhile (a full volume once redelivered the same messages every
        90 s). False only when stopping first."""
        result = fitted(result, self.js._nc.max_payload)
        wait = 1.0
        while True:
            try:
                await bus.publish(self.js, self.result_subject, result, msg_id=job.job_id)
                return True
            except BusError as exc:
                log.warning("result not published, kept and tried again in %.0f s: %s",
                            wait, exc, extra={"job_id": job.job_id})
            if self._stopping.is_set():
                return False
            await asyncio.sleep(wait)
            wait = min(wait * 2, RESULT_RETRY_MAX)

    async def _run(self, msg: Any) -> None:
        started = time.monotonic()
        try:
            job = DeliveryJob.FromString(msg.data)
        except Exception:
            log.error("undecodable delivery job terminated (not a DeliveryJob)")
            with contextlib.suppress(Exception):
                await msg.term()
            return
        token = queue_id_var.set(job.queue_id)
        try:
            try:
                result = await self.handle(job)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Not acked: the job comes back after ack_wait (max_deliver bounds it).
                log.exception("delivery job crashed")
                return
            if not await self._publish(job, result):
                return  # stopping: unacked, so it runs again elsewhere (a rare duplicate)
            try:
                if self.sync_ack:
                    await msg.ack_sync()
                else:
                    await msg.ack()
            except Exception as exc:
                log.warning("ack failed (job will be redelivered): %s", exc)
            self.handled += 1
            if self.on_settled:
                self.on_settled(job, result, time.monotonic() - started)
        finally:
            queue_id_var.reset(token)


def fitted(result: DeliveryResult, max_payload: int) -> DeliveryResult:
    """`result`, or a copy whose longest replies are cut (each to the same length, on a
    character boundary, marked) so that it fits one NATS message. Outcomes, codes and
    recipients are never changed: only the text a person reads is shortened."""
    budget = max_payload - RESULT_HEADROOM
    size = result.ByteSize()
    if size <= budget:
        return result
    lengths = sorted(len(r.reply.encode()) for r in result.results)
    rest = size - sum(lengths)  # what is not reply text (give or take a length prefix)
    # the largest cap under which the replies fit: shorter ones stay whole
    cap, room, left = lengths[-1] if lengths else 0, budget - rest, len(lengths)
    room -= left * len(CUT_MARK)
    for n in lengths:
        if n * left > room:
            cap = max(room // left, 0)
            break
        room, left = room - n, left - 1
    out = DeliveryResult()
    out.CopyFrom(result)
    for r in out.results:
        data = r.reply.encode()
        if len(data) > cap:
            r.reply = data[:cap].decode("utf-8", "ignore") + CUT_MARK
    return out
