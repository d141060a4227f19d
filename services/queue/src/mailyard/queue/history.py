"""Recording qmail's log as history: every step of a message (new, each delivery result with
the remote's text, bounce, done) on its own JetStream subject, plus one index record per
(address, message), kept HISTORY_DAYS in the stream MAIL_HISTORY. The same steps go to the
JSON log with their addresses and replies, for those who ship logs elsewhere.

Events are published as core NATS messages into the stream's subjects (no ack round trip on
the queue's path; the stream stores them on disk); a NATS outage loses the history of those
seconds, never mail. Metrics never see an address.

The index records are for a search of the stream by address (a lookup of one subject);
the queue's history index derives the same rows from the `new` events, and its feed never
reads them (history_feed.py).
"""

from __future__ import annotations

import hashlib
import logging
import time
import unicodedata

from nats.aio.client import Client as NATS

from mailyard.api.history.v1.history_pb2 import AddressRef, HistoryEvent
from mailyard.api.mail.v1 import envelope_pb2 as epb
from mailyard.api.mail.v1.envelope_pb2 import Envelope
from mailyard.core import bus

log = logging.getLogger(__name__)
NULL_SENDER = "<>"
ORIGINS = {epb.ORIGIN_SMTP: "smtp", epb.ORIGIN_BOUNCE: "bounce",
           epb.ORIGIN_DOUBLE_BOUNCE: "double_bounce", epb.ORIGIN_FORWARD: "forward",
           epb.ORIGIN_LIST: "list", epb.ORIGIN_AUTOREPLY: "autoreply"}


def address_key(address: str) -> str:
    """The subject token of an address, and its key in the history index: a hash, since
    addresses hold dots, spaces and wildcards that subjects cannot; case-insensitive
    (Alice@X finds alice@x) and, when not ASCII, in NFC (jose\u0301@ finds jos\u00e9@, as
    in the directory; NFC text keeps the key it always had)."""
    text = address.strip().lower() or NULL_SENDER
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    if text.startswith("<") and text.endswith(">") and text != NULL_SENDER:
        text = text[1:-1]
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def concerned(event: HistoryEvent) -> list[str]:
    """The addresses a `new` event names, as searches find them: the sender (<> for the
    null sender) and each recipient once; [] for any other step."""
    if event.kind != "new":
        return []
    return list(dict.fromkeys((event.sender or NULL_SENDER, *event.recipients)))


def msg_subject(queue_id: str) -> str:
    return bus.HISTORY_MSG_SUBJECT.format(queue_id=queue_id)


def addr_subject(address: str) -> str:
    return bus.HISTORY_ADDR_SUBJECT.format(key=address_key(address))


class Recorder:
    """One step at a time (add the events of a batch, then flush once)."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self.pending: list[tuple[str, bytes]] = []

    def _event(self, event: HistoryEvent) -> None:
        if not event.HasField("at"):
            event.at.FromNanoseconds(time.time_ns())
        self.pending.append((msg_subject(event.queue_id), event.SerializeToString()))

    def new(self, env: Envelope) -> None:
        sender = env.sender or NULL_SENDER
        origin = ORIGINS.get(env.origin, "smtp")
        event = HistoryEvent(queue_id=env.queue_id, kind="new", sender=sender,
                             recipients=list(env.recipients), size=env.size,
                             client_ip=env.client_ip, origin=origin)
        event.at.FromNanoseconds(time.time_ns())
        # The references first, the event last: every flush then ends on a step's subject,
        # the only ones the index feed reads, so its last seq can reach the stream's.
        for role, address in (("sender", sender), *(("recipient", r) for r in
                                                    dict.fromkeys(env.recipients))):
            ref = AddressRef(queue_id=env.queue_id, at=event.at, role=role)
            self.pending.append((addr_subject(address), ref.SerializeToString()))
        self._event(event)
        log.info("new message", extra={"queue_id": env.queue_id, "sender": sender,
                                       "recipients": list(env.recipients), "size": env.size,
                                       "client_ip": env.client_ip, "origin": origin})

    def delivery(self, queue_id: str, recipient: str, channel: str, result: str, reply: str,
                 remote_host: str = "") -> None:
        self._event(HistoryEvent(queue_id=queue_id, kind="delivery", recipient=recipient,
                                 channel=channel, result=result, reply=reply,
                                 remote_host=remote_host))
        log.info("delivery %s", result, extra={
            "queue_id": queue_id, "recipient": recipient, "channel": channel,
            "result": result, "reply": reply, "remote_host": remote_host})

    def step(self, queue_id: str, kind: str, detail: str = "") -> None:
        """bounce / done / deleted: logged where they happen; recorded here."""
        self._event(HistoryEvent(queue_id=queue_id, kind=kind, detail=detail))

    async def flush(self) -> None:
        pending, self.pending = self.pending, []
        try:
            for subject, data in pending:
                await self.nc.publish(subject, data)
        except Exception as exc:  # history is a record, never a reason to stop mail
            log.warning("history not recorded: %s", exc)
