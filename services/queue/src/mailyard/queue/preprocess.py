"""qmail-send's preprocessing and hand-out: todo notices in, delivery jobs out.

TodoConsumer classifies each new message's recipients (local if the domain is a directory
domain, a name of this host itself or control/srsdomain, remote otherwise), records them as
due now and hands them out in the same transaction (one commit and one store hop per
fetched batch), acks the todos only after that commit, then publishes the jobs. Dispatcher
is the retry scheduler: it polls the store's (state, next_attempt) index in small batches,
so a million waiting deferrals cost nothing until they are due and never hold a delivery
concurrency slot on the job consumers; it also hands out what the todo step could not (a
full batch, a batch recorded one by one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from nats.aio.msg import Msg
from nats.js.errors import NoStreamResponseError

from mailyard.api.mail.v1.delivery_pb2 import CHANNEL_LOCAL, CHANNEL_REMOTE, DeliveryJob
from mailyard.api.mail.v1.envelope_pb2 import Envelope
from mailyard.core import bus, js_publish
from mailyard.core.addresses import domain_of, to_ascii_domain
from mailyard.core.control import srs_domain
from mailyard.core.spool import Spool
from mailyard.queue import metrics
from mailyard.queue.engine import Queue, enum
from mailyard.queue.state import Job, Store

log = logging.getLogger(__name__)
CHANNEL_NAME: dict[int, str] = {CHANNEL_LOCAL: "local", CHANNEL_REMOTE: "remote"}
PUBLISH_TIMEOUT = 5.0  # seconds for a batch of job publishes to be acked (as bus.publish)
WITHDRAWN = metrics.REPAIRS.labels("withdrawn")


def classify(queue: Queue, recipients: list[str],
             domains: dict[str, tuple[int, str]] | None = None) -> list[tuple[str, int, str]]:
    """(address, channel, domain) for each distinct recipient. `domains` caches the lookup
    per domain across a batch (most recipients of a batch share a few domains)."""
    out: list[tuple[str, int, str]] = []
    seen: set[str] = set()
    cache = {} if domains is None else domains
    for address in recipients:
        if address in seen:
            continue
        seen.add(address)
        raw = domain_of(address)
        known = cache.get(raw)
        if known is None:
            domain = to_ascii_domain(raw)
            local = (queue.directory.is_local_domain(domain)
                     or queue.identity.is_local_name(domain) or _srs_domain(queue, domain))
            channel = CHANNEL_LOCAL if local else CHANNEL_REMOTE
            known = cache[raw] = (channel, domain)
        out.append((address, known[0], known[1]))
    return out


def _srs_domain(queue: Queue, domain: str) -> bool:
    """control/srsdomain: a name only our SRS addresses live at, its MX us and no hosted
    domain needed. The queue's own bounce of a forwarded copy goes to such an address and
    local-delivery reverses it (smtp-ingress does for one from outside); out by MX it looped
    back to us (5.4.6) and the sender never heard. Asked only of domains not ours."""
    return srs_domain(queue.control) == domain


Item = tuple[Envelope, list[tuple[str, int, str]]]


def _file_present(spool: Spool, spool_path: str) -> bool:
    try:
        return spool.exists_sync(spool_path)
    except Exception:  # outside the spool, unreadable: not a committed file
        return False


def record(store: Store, spool: Spool, items: list[Item], now: float,
           take: int = 0) -> tuple[list[str], list[str], list[Job]]:
    """On the store's thread, in one hop per batch: drop the todos whose spool file is gone,
    record the rest in one transaction and, with `take`, hand out up to that many due
    recipients in the same transaction (new mail is due at once: no second transaction,
    no dispatcher wake-up per batch). Returns (ids added, ids withdrawn, jobs)."""
    present: list[Item] = []
    withdrawn: list[str] = []
    for item in items:
        if _file_present(spool, item[0].spool_path):
            present.append(item)
        else:
            withdrawn.append(item[0].queue_id)
    if not present:
        return [], withdrawn, []
    if take:
        added, jobs = store.add_and_take(present, now, take)
        return added, withdrawn, jobs
    return store.add(present, now), withdrawn, []


class TodoConsumer:
    def __init__(self, queue: Queue) -> None:
        self.q = queue

    async def run(self) -> None:
        await self.q.consume(bus.TODO_STREAM, bus.TODO_CONSUMER, bus.TODO_SUBJECT, self.handle)

    async def handle(self, msgs: list[Msg]) -> None:
        """One fetched batch: one store hop (file checks + one transaction), then the acks.
        If the batch transaction fails, each todo is tried alone, so one bad notice cannot
        hold up the others; a todo that still fails stays unacked and comes back after
        CONSUME_ACK_WAIT (its file is committed: it must not be dropped)."""
        q = self.q
        decoded: list[tuple[Msg, Item]] = []
        domains: dict[str, tuple[int, str]] = {}
        for msg in msgs:
            try:
                env: Envelope = bus.decode(Envelope, msg.data)
                decoded.append((msg, (env, classify(q, list(env.recipients), domains))))
            except Exception:
                log.error("undecodable todo notice dropped")
                await msg.term()
        if not decoded:
            return
        store, now = q.store, time.time()
        take = q.settings.dispatch_batch
        failed: set[str] = set()
        jobs: list[Job] = []
        try:
            added, withdrawn, jobs = await store.run(record, store, q.spool,
                                                     [item for _, item in decoded], now, take)
        except Exception as exc:
            log.error("todo batch not recorded, trying one by one: %s", exc)
            added, withdrawn = [], []
            for _, item in decoded:
                try:
                    one_added, one_withdrawn, _ = await store.run(record, store, q.spool,
                                                                  [item], now)
                except Exception as one_exc:
                    log.error("todo not recorded, retried after the ack wait: %s", one_exc,
                              extra={"queue_id": item[0].queue_id})
                    failed.add(item[0].queue_id)
                    continue
                added += one_added
                withdrawn += one_withdrawn
        # Acked only now: the state is committed (a crash before this redelivers the todo,
        # and a known queue id is skipped).
        for msg, (env, _) in decoded:
            if env.queue_id not in failed:
                with contextlib.suppress(Exception):
                    await msg.ack()
        for qid in withdrawn:
            # The injector withdrew it (its client got a 451) or it is long done.
            log.info("todo without spool file dropped", extra={"queue_id": qid})
            WITHDRAWN.inc()
        if added:
            events = q.events()
            for qid in added:
                events.add("new", qid)
            await events.send()
            fresh = set(added)
            for _, (env, _) in decoded:
                if env.queue_id in fresh:
                    q.history.new(env)
            await q.history.flush()
        if jobs:
            await publish_jobs(q, jobs)
        if added and (not jobs or sum(len(j.recipients) for j in jobs) >= take):
            q.wake.set()  # recorded but not handed out here, or more may be due


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
            await publish_jobs(self.q, jobs)
        return len(jobs)

    async def run(self) -> None:
        store, settings, wake = self.q.store, self.q.settings, self.q.wake
        if announced := await self.announce_recent():
            log.info("re-announced recent jobs after taking over", extra={"jobs": announced})
        while True:
            # Cleared before looking: a wake set while we look or publish means another
            # round, never a missed one.
            wake.clear()
            now = time.time()
            try:
                jobs, nxt = await store.run(store.dispatch_round, now, settings.dispatch_batch)
            except Exception:
                log.exception("taking due recipients failed")
                jobs, nxt = [], None
            if jobs:
                await publish_jobs(self.q, jobs)
            if nxt is not None and nxt <= time.time():
                continue  # more is due already (the batch was full)
            delay = settings.scheduler_max_sleep if nxt is None else nxt - time.time()
            delay = min(max(delay, 0.005), settings.scheduler_max_sleep)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), delay)


async def publish_jobs(q: Queue, jobs: list[Job]) -> None:
    """Send every job, then wait for their acks together (one round trip per batch, not
    per job). A job without an ack within PUBLISH_TIMEOUT goes back to deferred; if it
    did reach the stream after all, its next hand-out has a new job id and the stale
    result is ignored (at least once)."""
    js = q.js
    acks = js_publish.publisher(q.nc)
    pending: list[tuple[Job, asyncio.Future[Any]]] = []
    failed: list[tuple[Job, str]] = []
    gone = False
    for job in jobs:  # (a batch is at most dispatch_batch jobs: that bounds what is pending)
        subject = bus.JOB_SUBJECT[CHANNEL_NAME[job.channel]]
        try:
            fut = await acks.send(subject, job_message(job).SerializeToString(),
                                  {"Nats-Msg-Id": job.job_id})
        except Exception as exc:
            failed.append((job, f"publish to {subject} failed: {exc}"))
            continue
        pending.append((job, fut))
    if pending:
        await asyncio.wait([f for _, f in pending], timeout=PUBLISH_TIMEOUT)
    for job, fut in pending:
        if not fut.done():
            fut.cancel()
            failed.append((job, f"no ack from JetStream within {PUBLISH_TIMEOUT}s"))
        elif fut.cancelled():
            failed.append((job, "publish cancelled"))
        elif (error := fut.exception()) is not None:
            failed.append((job, f"publish to JetStream failed: {error}"))
            gone = gone or isinstance(error, NoStreamResponseError)
    if gone:  # MAIL_JOBS was deleted: create it again, the retry in 5 s then goes through
        log.warning("stream %s is missing: creating it again", bus.JOBS_STREAM)
        with contextlib.suppress(Exception):
            await bus.ensure_mail_streams(js, patience=PUBLISH_TIMEOUT)
    if failed:
        for job, why in failed:
            log.warning("job not published, retried shortly: %s", why,
                        extra={"queue_id": job.message.queue_id})
        store = q.store
        await store.run(store.undo_dispatch_many, [j for j, _ in failed], time.time() + 5.0)
