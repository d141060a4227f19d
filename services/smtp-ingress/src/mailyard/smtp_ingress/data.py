"""DATA: read the message, refuse bare CR/LF and NUL, discard what exceeds databytes, then
commit through mailyard.core.inject (spool fsync + JetStream ack) before answering 250.

The message is read in chunks and decoded as it arrives (data_decoder.py), and kept in a
MessageBody: memory first, then a spill file on the spool, so no upload is held whole.
The idle timer restarts on every chunk, and after a grace period the upload must keep an
average of MIN_DATA_RATE bytes/s, so a slow honest upload finishes while a client
dribbling a byte now and then loses its slot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from mailyard.api.mail.v1.envelope_pb2 import ORIGIN_SMTP, Envelope, Lines
from mailyard.core.dkim_sign import sign
from mailyard.core.errors import BusError, SpoolError
from mailyard.core.ids import new_queue_id
from mailyard.core.inject import inject
from mailyard.smtp_ingress import policy, replies
from mailyard.smtp_ingress.data_decoder import DataDecoder, line_facts
from mailyard.smtp_ingress.errors import Close
from mailyard.smtp_ingress.message_body import MessageBody
from mailyard.smtp_ingress.metrics import (
    ACCEPTED_BYTES,
    ACCEPTED_ON,
    COMMIT_SECONDS,
    DKIM_SIGNED,
)
from mailyard.smtp_ingress.received import received_line

if TYPE_CHECKING:
    from mailyard.smtp_ingress.session import Session

log = logging.getLogger(__name__)


async def data(s: Session, arg: str) -> bool:
    tx = s.tx
    if tx is None:
        s.reject(replies.MAIL_FIRST, "sequence")
        return True
    if not tx.recipients:
        s.reject(replies.RCPT_FIRST, "sequence")
        return True
    if arg.strip():
        s.reject(replies.DATA_SYNTAX, "syntax")
        return True
    s.reply(replies.GO_AHEAD)
    tx.body = MessageBody(s.app.spool, s.app.databytes(), s.settings.data_memory,
                          s.app.data_budget)
    try:
        tx.decoder = await receive(s, tx.body)
        started = time.perf_counter()
        tx.real_size = tx.body.size
        if tx.decoder.nul:  # refused whole, before any check: nothing of it is kept
            s.reject(replies.NUL_IN_DATA, "nul")
            return True
        if tx.body.failed:
            s.reject(replies.NOT_ACCEPTED, "unavailable")
            return True
        verdict = await policy.run("data", s)
        if not verdict.accepted:
            s.reject(verdict.reply, verdict.reason)
            return True
        await commit(s, tx.body, started)
    finally:
        tx.body.close()
        s.tx = None
    return True


async def commit(s: Session, body: MessageBody, started: float) -> None:
    tx = s.tx
    assert tx is not None and tx.decoder is not None
    if not s.app.bus_ready():  # fail fast: nothing written when the ack cannot come
        s.reject(replies.NOT_ACCEPTED, "unavailable")
        return
    qid = new_queue_id()
    signature = b""
    if tx.sign_with:
        signature = sign(await body.whole(), tx.sign_with)
        DKIM_SIGNED.labels("signed").inc()
    ours = received_line(s, tx, qid) + tx.auth_results + tx.scan_headers + signature
    payload = body.in_memory(before=ours)
    size = len(payload) + (0 if body.tail is None else body.size)
    envelope = Envelope(
        queue_id=qid, sender=tx.sender.address, recipients=tx.recipients, client_ip=s.ip,
        helo=s.helo, auth_user=s.auth_user, tls=s.tls, origin=ORIGIN_SMTP,
        smtputf8=tx.smtputf8, body_8bit=tx.body_8bit, lines=lines_of(tx.decoder, ours, body),
        sender_unverified=tx.sender_unverified)
    s.committing = True
    try:
        assert s.app.js is not None
        await inject(s.app.spool, s.app.js, envelope, payload,
                     publish_timeout=s.settings.publish_timeout, tail=body.tail)
    except (SpoolError, BusError) as exc:
        log.warning("message not accepted: %s", exc, extra={"queue_id": qid})
        s.reject(replies.NOT_ACCEPTED, "unavailable")
        return
    finally:
        s.committing = False
    COMMIT_SECONDS.observe(time.perf_counter() - started)
    ACCEPTED_ON[s.listener.name].inc()
    ACCEPTED_BYTES.inc(size)
    log.info("accepted", extra={"queue_id": qid, "client_ip": s.ip, "size": size,
                                "recipients": len(tx.recipients)})
    s.reply(replies.queued(qid))
    s.errors = s.junk = 0  # Postfix forgives a client's errors once it delivered a message


def lines_of(decoder: DataDecoder, ours: bytes, body: MessageBody) -> Lines | None:
    """The Lines facts of the spooled message: the decoder's of what the client sent, with
    our headers' and, if a check edited the header section, the edited section's (what it
    took out may leave `longest` too high: delivery then looks, and finds nothing to fold).
    None when not known."""
    longest, dot = decoder.longest, decoder.leading_dot
    for block in (ours, body.header()) if body.edited else (ours,):
        facts = None if block is None else line_facts(block)
        if facts is None:
            return None
        longest, dot = max(longest, facts[0]), dot or facts[1]
    return Lines(longest=longest, leading_dot=dot)


async def receive(s: Session, body: MessageBody) -> DataDecoder:
    """Read the message into `body` up to the end-of-data line (dot-stuffing undone; past
    databytes only counted); the decoder, with what it found: `nul` if it held a NUL (then
    nothing of it is kept), the Lines facts. Input after the end stays in s.buf for the
    command loop.
    Raises Close on a bare CR/LF, IdleTimeout when idle or too slow."""
    settings = s.settings
    loop = asyncio.get_running_loop()
    start = loop.time()
    decoder = DataDecoder()
    chunk, s.buf = bytes(s.buf), bytearray()
    got = len(chunk)
    while True:
        if chunk:
            data, rest = decoder.feed(chunk)
            if decoder.bare:
                raise Close(replies.BARE_LF_DATA, "bare_lf")
            if decoder.nul:
                body.close()
                body.size += len(data)
            else:
                await body.add(data)
            if rest is not None:
                s.buf = bytearray(rest)
                await body.finish()
                return decoder
        wait = settings.idle_timeout
        if settings.min_data_rate:
            wait = min(wait, start + max(settings.data_rate_grace,
                                         got / settings.min_data_rate) - loop.time())
        chunk = await s.read_chunk(max(0.0, wait))
        got += len(chunk)
