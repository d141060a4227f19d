"""Forwards and list mail go back into the queue (qmail-local's qmail-inject of a .qmail
forward line), through mailyard.core.inject like every other message, so the queue routes,
retries and bounces them.

Envelope senders:
- a forward keeps the original sender for copies to our own domains, and for the others
  when the sender is ours or <>; the others go from an SRS address (srs_sender.py, as
  postsrsd does for Postfix), so the next hop's SPF passes and bounces come back to
  smtp-ingress, which reverses them to whoever wrote the message;
- list mail gets the list owner as sender, so members' bounces reach the owner and not
  the author (ezmlm's reason for its own return path); an owner of another domain goes to
  the members at other domains as an SRS address (deliver.py), as for a forward;
- a vacation reply (autoreply.py) goes from <> (RFC 3834 3.3), so nothing answers it; a
  list's confirmation request, welcome or goodbye (subscribe.py) from the list's -return
  address, where local-delivery drops whatever comes back.
- a message from <> (a bounce) to a list goes to its owner only, still from <>: members
  never get bounces (ezmlm refuses them), and the null sender ends any loop.

A big list (or alias) goes out as several messages of at most BATCH_BYTES of recipients
each: the queue's todo notice carries every recipient and nats-server refuses one past
max_payload (1 MiB), which a list the directory holds can reach; the queue's history event
and log line of a message list them all too.

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
from mailyard.core.ids import derived_queue_id
from mailyard.core.inject import inject, inject_derived
from mailyard.core.spool import Spool

BATCH_BYTES = 256 * 1024  # recipients' bytes in one message: ~10,000 addresses


def batches(recipients: list[str]) -> list[list[str]]:
    """`recipients` in order, cut into parts of at most BATCH_BYTES of addresses."""
    out: list[list[str]] = [[]]
    size = 0
    for address in recipients:
        cost = len(address.encode()) + 3  # its field's tag and length in the envelope
        if out[-1] and size + cost > BATCH_BYTES:
            out.append([])
            size = 0
        out[-1].append(address)
        size += cost
    return out


async def send(spool: Spool, js: JetStreamContext, job: DeliveryJob, *, origin: Origin.ValueType,
               sender: str, recipients: list[str], data: bytes, why: tuple[str, ...],
               utf8_header: bool = False, sender_unverified: bool = False) -> str:
    """Inject the message, in parts for many recipients; returns the (first) queue id.
    `why` (the job's recipient and what it led to) names the parts: their queue ids come
    from the message's queue id and it, so doing it again makes the same messages, which
    JetStream's duplicate window and the queue (a known id) take once: a job handed out
    again (its worker died after the list mail went, before the ack) or a retry after a
    part failed sends no member a second copy. Raises SpoolError / BusError: the caller
    defers, and the retry announces what was left (core.inject.inject_derived)."""
    # Flagged for what each copy's envelope needs, as smtp-ingress flags a client's: a copy
    # of ASCII mail to (or, for a list, from) an address that is not ASCII cannot be sent
    # without SMTPUTF8; nor can one whose header we gave an address that is not ASCII (a
    # list's own, in its Delivered-To and List-* fields): `utf8_header`.
    envelopes = [Envelope(queue_id=derived_queue_id(job.queue_id, *why, str(n)), origin=origin,
                          sender=sender, recipients=part, body_8bit=job.body_8bit,
                          smtputf8=(job.smtputf8 or utf8_header or not sender.isascii()
                                    or not all(address.isascii() for address in part)),
                          sender_unverified=sender_unverified)
                 for n, part in enumerate(batches(recipients))]
    await inject_derived(spool, js, envelopes, data)
    return envelopes[0].queue_id


async def forward(spool: Spool, js: JetStreamContext, job: DeliveryJob, recipient: str,
                  targets: list[str], data: bytes, *, sender: str | None = None,
                  sender_unverified: bool = False) -> str:
    """`sender`: an SRS sender for the copies leaving for other domains (srs_sender), a
    message of its own; None keeps the original sender. `sender_unverified` goes with the
    copies: an SRS sender reverses to the original one, a bounce reaches it all the same."""
    why = (recipient, "forward") if sender is None else (recipient, "forward", "srs")
    return await send(spool, js, job, origin=ORIGIN_FORWARD,
                      sender=job.sender if sender is None else sender,
                      recipients=targets, data=data, why=why,
                      sender_unverified=sender_unverified)


async def to_list(spool: Spool, js: JetStreamContext, job: DeliveryJob, recipient: str,
                  mlist: str, owner: str, members: list[str], data: bytes, *,
                  sender: str | None = None) -> str:
    """`sender`: an SRS sender for the members at other domains (an owner elsewhere), a
    message of its own; None sends from the owner."""
    why = (recipient, "list", mlist) if sender is None else (recipient, "list", mlist, "srs")
    return await send(spool, js, job, origin=ORIGIN_LIST,
                      sender=owner if sender is None else sender,
                      recipients=members, data=data, why=why, utf8_header=not mlist.isascii())


async def autoreply(spool: Spool, js: JetStreamContext, recipient: str, data: bytes, *,
                    smtputf8: bool, sender: str = "") -> str:
    """`sender`: <> for a vacation reply; a list's -return address for its answers."""
    envelope = Envelope(origin=ORIGIN_AUTOREPLY, sender=sender, recipients=[recipient],
                        smtputf8=smtputf8 or not sender.isascii())
    stored = await inject(spool, js, envelope, data)
    return stored.queue_id


async def bounce_to_owner(spool: Spool, js: JetStreamContext, job: DeliveryJob, recipient: str,
                          mlist: str, owner: str, data: bytes) -> str:
    return await send(spool, js, job, origin=ORIGIN_LIST, sender="", recipients=[owner],
                      data=data, why=(recipient, "list", mlist))
