"""Forwards and list mail go back into the queue (qmail-local's qmail-inject of a .qmail
forward line), through mailyard.core.inject like every other message, so the queue routes,
retries and bounces them.

Envelope senders:
- a forward keeps the original sender (vpopmail, qmail without SRS): bounces of the
  forwarded copy go to whoever wrote the message;
- list mail gets the list owner as sender, so members' bounces reach the owner and not
  the author (ezmlm's reason for its own return path);
- a vacation reply (autoreply.py) goes from <> (RFC 3834 3.3), so nothing answers it.
- a message from <> (a bounce) to a list goes to its owner only, still from <>: members
  never get bounces (ezmlm refuses them), and the null sender ends any loop.

The bytes carry our Delivered-To line, which is what stops a forward cycle: when the copy
comes back to the same address the loop check in deliver.py bounces it.
"""

from __future__ import annotations

from nats.js import JetStreamContext

from mailyard.api.mail.v1.delivery_pb2 import DeliveryJob
from mailyard.api.mail.v1.envelope_pb2 import (
    ORIGIN_AUTOREPLY,
    ORIGIN_FORWARD,
    ORIGIN_LIST,
    Envelope,
    Origin,
)
from mailyard.core.inject import inject
from mailyard.core.spool import Spool


async def send(spool: Spool, js: JetStreamContext, job: DeliveryJob, *, origin: Origin.ValueType,
               sender: str, recipients: list[str], data: bytes) -> str:
    """Inject one message; returns its queue id. Raises SpoolError / BusError, in which case
    nothing was committed and the caller defers."""
    envelope = Envelope(origin=origin, sender=sender, recipients=recipients,
                        smtputf8=job.smtputf8, body_8bit=job.body_8bit)
    stored = await inject(spool, js, envelope, data)
    return stored.queue_id


async def forward(spool: Spool, js: JetStreamContext, job: DeliveryJob, targets: list[str],
                  data: bytes) -> str:
    return await send(spool, js, job, origin=ORIGIN_FORWARD, sender=job.sender,
                      recipients=targets, data=data)


async def to_list(spool: Spool, js: JetStreamContext, job: DeliveryJob, owner: str,
                  members: list[str], data: bytes) -> str:
    return await send(spool, js, job, origin=ORIGIN_LIST, sender=owner,
                      recipients=members, data=data)


async def autoreply(spool: Spool, js: JetStreamContext, recipient: str, data: bytes, *,
                    smtputf8: bool) -> str:
    envelope = Envelope(origin=ORIGIN_AUTOREPLY, sender="", recipients=[recipient],
                        smtputf8=smtputf8)
    stored = await inject(spool, js, envelope, data)
    return stored.queue_id


async def bounce_to_owner(spool: Spool, js: JetStreamContext, job: DeliveryJob, owner: str,
                          data: bytes) -> str:
    return await send(spool, js, job, origin=ORIGIN_LIST, sender="", recipients=[owner],
                      data=data)
