"""Jobs whose JetStream message is gone (a purged or deleted MAIL_JOBS stream): handed out,
never to come back, so their recipients would sit "queued" until STUCK_AFTER.

A channel's jobs are known lost when the queue holds recipients dispatched to it before a
grace period, while neither its job subject in MAIL_JOBS nor its result subject in
MAIL_RESULTS holds a message. That is exact, not a guess: a job leaves MAIL_JOBS only when a
worker acks it, and a worker acks only after publishing the result, which stays in
MAIL_RESULTS until the queue has applied it (and applying it ends the "queued" state). The
recipients found are requeued only if they still carry the job id seen first, so a result
applied meanwhile wins. The check is per channel: with other jobs still in the stream, a
lost one waits for STUCK_AFTER (or a poison-job advisory, see poison.py).
"""

from __future__ import annotations

import asyncio
import logging
import time

from nats.js.errors import NotFoundError

from mailyard.api.mail.v1.delivery_pb2 import CHANNEL_LOCAL, CHANNEL_REMOTE
from mailyard.core import bus
from mailyard.queue.engine import Queue
from mailyard.queue.state import Recipient

log = logging.getLogger(__name__)
GRACE = 5.0  # seconds: a job just dispatched may still be on its way into the stream
CHANNELS = {CHANNEL_LOCAL: "local", CHANNEL_REMOTE: "remote"}


async def _messages(q: Queue, stream: str, subject: str) -> int | None:
    """Messages on `subject` in `stream` now; None when JetStream cannot say (then nothing
    is declared lost). A missing stream holds nothing."""
    try:
        info = await q.js.stream_info(stream, subjects_filter=subject)
    except NotFoundError:
        return 0
    except Exception as exc:
        log.debug("stream info of %s unavailable: %s", stream, exc)
        return None
    return sum((info.state.subjects or {}).values())


async def find(q: Queue) -> list[Recipient]:
    """Recipients whose job is gone from JetStream (see the module docstring)."""
    dispatched = await q.store.run(q.store.stuck, time.time() - GRACE)
    lost: list[Recipient] = []
    for channel, name in CHANNELS.items():
        mine = [r for r in dispatched if r.channel == channel]
        if not mine:
            continue
        jobs = await _messages(q, bus.JOBS_STREAM, bus.JOB_SUBJECT[name])
        results = await _messages(q, bus.RESULTS_STREAM, bus.RESULT_SUBJECT.format(channel=name))
        if jobs == 0 and results == 0:
            lost += mine
    return lost


async def requeue(q: Queue, dry_run: bool = False) -> list[Recipient]:
    """find(), then give those recipients a new attempt now (unless dry_run)."""
    lost = await find(q)
    if lost and not dry_run:
        await q.store.run(q.store.requeue, lost, time.time())
        q.wake.set()
        log.warning("jobs lost from JetStream dispatched again",
                    extra={"recipients": len(lost)})
    return lost


async def watch(q: Queue, every: float) -> None:
    """requeue() every `every` seconds, so lost jobs run again within a minute or so."""
    while True:
        await asyncio.sleep(every)
        try:
            await requeue(q)
        except Exception:
            log.exception("lost-job check failed")
