"""Putting a message into the queue: the durability contract in one place.

smtp-ingress, bounces (queue) and forwards / list mail (local-delivery) all enter the queue
here: commit to the spool, publish the todo notice, wait for the JetStream ack. If the
publish fails the file is withdrawn, so a caller that reports failure leaves nothing
committed behind (the client is told 451 and will retry). A todo notice that did reach the
stream despite the error finds no file and is dropped by the queue as withdrawn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from nats.js import JetStreamContext

from mailyard.api.mail.v1.envelope_pb2 import Envelope
from mailyard.core import bus
from mailyard.core.errors import BusError, SpoolError
from mailyard.core.ids import new_queue_id
from mailyard.core.spool import Spool

log = logging.getLogger(__name__)


async def inject(spool: Spool, js: JetStreamContext, envelope: Envelope, data: bytes,
                 *, publish_timeout: float = 5.0,
                 tail: tuple[int, int, int] | None = None) -> Envelope:
    """Commit and announce one message (`data`, then the spill file `tail` if given: see
    Spool.commit). Returns the stored envelope (with its queue id).

    Raises SpoolError or BusError; in both cases nothing stays committed."""
    if not envelope.queue_id:
        envelope.queue_id = new_queue_id()
    if not envelope.HasField("received_at"):  # (GetCurrentTime goes through datetime)
        envelope.received_at.FromNanoseconds(time.time_ns())
    stored = await spool.commit(envelope, data, tail)
    try:
        await bus.publish(js, bus.TODO_SUBJECT, stored, msg_id=stored.queue_id,
                          timeout=publish_timeout)
    except BusError:
        with contextlib.suppress(SpoolError):
            await spool.remove(stored.spool_path)
        log.warning("publish failed, message withdrawn", extra={"queue_id": stored.queue_id})
        raise
    return stored


async def inject_derived(spool: Spool, js: JetStreamContext, envelopes: list[Envelope],
                         data: bytes, *, publish_timeout: float = 5.0) -> list[Envelope]:
    """Inject messages of the same bytes whose queue ids the caller derives from why they
    are sent (core.ids.derived_queue_id: local-delivery's forwards and list mail, in parts),
    so that doing it again is harmless. A file already spooled under an id is that message:
    announced again as stored (JetStream's duplicate window, then the queue, which skips a
    known id, drop the repeat); one gone meanwhile was delivered, and is not sent again.

    Nothing is withdrawn when a commit or publish fails: the caller's retry derives the
    same ids and announces what is left, and the queue's reconciler announces an orphan
    file no retry comes for. Withdrawing instead could remove a file that another run of
    the same job (JetStream hands a slow job out twice) had announced: mail lost.

    Returns the envelopes announced; raises SpoolError or BusError (the caller defers)."""
    if not all(envelope.queue_id for envelope in envelopes):
        raise ValueError("inject_derived needs the queue ids")
    for envelope in envelopes:
        if not envelope.HasField("received_at"):
            envelope.received_at.FromNanoseconds(time.time_ns())
    present = [await spool.exists(spool.relpath(e.queue_id)) for e in envelopes]
    # together, so the spool makes them one batch of fsyncs
    committed = iter(await asyncio.gather(
        *(spool.commit(e, data) for e, there in zip(envelopes, present, strict=True)
          if not there)))
    stored: list[Envelope] = []
    for envelope, there in zip(envelopes, present, strict=True):
        if not there:
            stored.append(next(committed))
            continue
        try:
            stored.append((await spool.read(spool.relpath(envelope.queue_id), verify=False))[0])
        except SpoolError:
            continue  # delivered and removed since (a damaged one is the reconciler's)
    for one in stored:
        await bus.publish(js, bus.TODO_SUBJECT, one, msg_id=one.queue_id,
                          timeout=publish_timeout)
    return stored
