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


async def inject_all(spool: Spool, js: JetStreamContext, envelopes: list[Envelope],
                     data: bytes, *, publish_timeout: float = 5.0) -> list[Envelope]:
    """inject() for several envelopes of the same bytes (one list's mail in parts), all or
    nothing: every file is committed before any notice is published, and if one commit or
    publish fails every file committed here is withdrawn, so the caller's retry sends each
    part once more rather than the parts that went out twice (a notice the queue already
    took in the moment before the withdrawal is the one duplicate left: at least once).

    An envelope whose queue id is already in the spool (a caller that derives its ids,
    running again) is that file's message: it is announced again as it is stored (JetStream
    and the queue drop the repeat), left out of the answer if it went meanwhile, and never
    withdrawn here, as it may be queued already.

    Raises SpoolError or BusError; in both cases nothing committed here stays."""
    for envelope in envelopes:
        if not envelope.queue_id:
            envelope.queue_id = new_queue_id()
        if not envelope.HasField("received_at"):
            envelope.received_at.FromNanoseconds(time.time_ns())
    present = [await spool.exists(spool.relpath(e.queue_id)) for e in envelopes]
    fresh = [e for e, there in zip(envelopes, present, strict=True) if not there]
    # together, so the spool makes them one batch of fsyncs
    outcomes = await asyncio.gather(*(spool.commit(e, data) for e in fresh),
                                    return_exceptions=True)
    committed = [o for o in outcomes if isinstance(o, Envelope)]
    try:
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        made = iter(committed)
        stored: list[Envelope] = []
        for envelope, there in zip(envelopes, present, strict=True):
            if not there:
                stored.append(next(made))
                continue
            try:
                stored.append((await spool.read(spool.relpath(envelope.queue_id),
                                                verify=False))[0])
            except SpoolError:
                # gone since: the queue has delivered it (an unreadable one the reconciler
                # announces): not sent again
                continue
        for one in stored:
            await bus.publish(js, bus.TODO_SUBJECT, one, msg_id=one.queue_id,
                              timeout=publish_timeout)
    except (SpoolError, BusError):
        with contextlib.suppress(SpoolError):
            await spool.remove_many([one.spool_path for one in committed])
        log.warning("a part failed, %d withdrawn", len(committed),
                    extra={"queue_id": envelopes[0].queue_id if envelopes else ""})
        raise
    return stored
