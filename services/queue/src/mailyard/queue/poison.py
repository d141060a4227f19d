"""Poison jobs: a job JetStream delivered `max_deliver` times without an ack (the worker
crashed on it, or never finished it) is held, counted and alerted on, as the runbook says.

JetStream announces such a job with an advisory on core NATS
($JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.MAIL_JOBS.<consumer>, carrying the stream
sequence) and stops delivering it, but keeps it in the stream. The queue reads the job from
the stream, puts its recipients on hold (`mailyard queue release` gives them a new attempt
once the cause is fixed), counts it (mailyard_queue_poison_jobs_total, alert
MailyardPoisonJob) and deletes the message, which would otherwise sit in MAIL_JOBS for ever.
Advisories are not persisted: one sent while no queue leads is missed, and that job is
re-sent after STUCK_AFTER like any other.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from mailyard.api.mail.v1.delivery_pb2 import DeliveryJob
from mailyard.core import bus
from mailyard.queue import metrics
from mailyard.queue.engine import Queue
from mailyard.queue.state import QUEUED

log = logging.getLogger(__name__)
ADVISORY = f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{bus.JOBS_STREAM}.*"
CHANNELS = {v: k for k, v in bus.JOB_SUBJECT.items()}  # subject -> channel name


async def hold(q: Queue, stream_seq: int) -> DeliveryJob | None:
    """Hold the recipients of the job at `stream_seq`, count it, delete its message."""
    try:
        raw = await q.js.get_msg(bus.JOBS_STREAM, stream_seq)
    except Exception as exc:  # acked meanwhile, or already handled by another leader
        log.info("poison job %s not in the stream any more: %s", stream_seq, exc)
        return None
    job = bus.decode(DeliveryJob, raw.data or b"")
    channel = CHANNELS.get(raw.subject or "", "unknown")
    mine = [r for r in await q.store.run(q.store.recipients, job.queue_id)
            if r.state == QUEUED and r.job_id == job.job_id]
    if mine:
        await q.store.run(q.store.requeue, mine, time.time())  # QUEUED -> DEFERRED
        await q.store.run(q.store.set_held, [job.queue_id], True, time.time())
    metrics.POISON_JOBS.labels(channel).inc()
    log.error("poison job held: delivered max_deliver times without an ack",
              extra={"queue_id": job.queue_id, "job_id": job.job_id, "channel": channel,
                     "recipients": len(mine)})
    why = f"poison job {job.job_id}: delivered max_deliver times without an ack"
    q.history.step(job.queue_id, "held", why)
    await q.event("held", job.queue_id, reply=why)
    try:
        await q.js.delete_msg(bus.JOBS_STREAM, stream_seq)
    except Exception as exc:
        log.warning("poison job message not deleted: %s", exc)
    return job


async def watch(q: Queue) -> None:
    """Hold every job JetStream gives up on, for as long as this queue leads."""
    pending: asyncio.Queue[int] = asyncio.Queue()

    async def on_advisory(msg: Any) -> None:
        try:
            pending.put_nowait(int(json.loads(msg.data)["stream_seq"]))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("unreadable max-deliveries advisory: %s", exc)

    sub = await q.nc.subscribe(ADVISORY, cb=on_advisory)
    try:
        while True:
            seq = await pending.get()
            try:
                await hold(q, seq)
            except Exception:
                log.exception("poison job %s not held", seq)
    finally:
        await sub.unsubscribe()
