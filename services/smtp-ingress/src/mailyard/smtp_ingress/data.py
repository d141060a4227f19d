"""DATA: read the message, refuse bare CR/LF, discard what exceeds databytes, then commit
through mailyard.core.inject (spool fsync + JetStream ack) before answering 250.

The message is read in chunks, not lines: the terminator and the line endings are checked
with bytes.find/count over whole lines at a time, so a 10 MB upload costs a few C calls
per 64 KB. The idle timer restarts on every chunk, and after a grace period the upload
must keep an average of MIN_DATA_RATE bytes/s, so a slow honest upload finishes while a
client dribbling a byte now and then loses its slot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from mailyard.api.mail.v1.envelope_pb2 import ORIGIN_SMTP, Envelope
from mailyard.core.errors import BusError, SpoolError
from mailyard.core.ids import new_queue_id
from mailyard.core.inject import inject
from mailyard.smtp_ingress import policy, replies
from mailyard.smtp_ingress.dkim_sign import sign
from mailyard.smtp_ingress.errors import Close
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
_END = b"\r\n.\r\n"


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
    message, size, nul = await receive(s, s.app.databytes())
    started = time.perf_counter()
    tx.message, tx.real_size = message or b"", size
    try:
        if nul:  # refused whole, before any check: nothing of it is kept
            s.reject(replies.NUL_IN_DATA, "nul")
            return True
        verdict = await policy.run("data", s)
        if not verdict.accepted:
            s.reject(verdict.reply, verdict.reason)
            return True
        await commit(s, started)
    finally:
        s.tx = None
    return True


async def commit(s: Session, started: float) -> None:
    tx = s.tx
    assert tx is not None
    if not s.app.bus_ready():  # fail fast: nothing written when the ack cannot come
        s.reject(replies.NOT_ACCEPTED, "unavailable")
        return
    qid = new_queue_id()
    signature = b""
    if tx.sign_with:
        signature = sign(tx.message, tx.sign_with)
        DKIM_SIGNED.labels("signed").inc()
    payload = received_line(s, tx, qid) + tx.auth_results + signature + tx.message
    envelope = Envelope(
        queue_id=qid, sender=tx.sender.address, recipients=tx.recipients, client_ip=s.ip,
        helo=s.helo, auth_user=s.auth_user, tls=s.tls, origin=ORIGIN_SMTP,
        smtputf8=tx.smtputf8, body_8bit=tx.body_8bit)
    s.committing = True
    try:
        assert s.app.js is not None
        await inject(s.app.spool, s.app.js, envelope, payload,
                     publish_timeout=s.settings.publish_timeout)
    except (SpoolError, BusError) as exc:
        log.warning("message not accepted: %s", exc, extra={"queue_id": qid})
        s.reject(replies.NOT_ACCEPTED, "unavailable")
        return
    finally:
        s.committing = False
    COMMIT_SECONDS.observe(time.perf_counter() - started)
    ACCEPTED_ON[s.listener.name].inc()
    ACCEPTED_BYTES.inc(len(payload))
    log.info("accepted", extra={"queue_id": qid, "client_ip": s.ip, "size": len(payload),
                                "recipients": len(tx.recipients)})
    s.reply(replies.queued(qid))


async def receive(s: Session, limit: int) -> tuple[bytes | None, int, bool]:
    """(message, size, False) with dot-stuffing undone; (None, size, nul) past the limit or
    after a NUL (the rest is read to the end and discarded; nul says which).
    Raises Close on a bare CR/LF, IdleTimeout when idle or too slow."""
    settings = s.settings
    loop = asyncio.get_running_loop()
    start = loop.time()
    raw, s.buf = s.buf, bytearray()
    got = len(raw)
    checked = 0                     # raw[:checked] is whole, verified lines
    cap = limit + limit // 64 + 1024 if limit else 0  # room for dot-stuffing
    dropped, carry = -1, b""        # dropped >= 0: over the limit, only find the end
    nul = False
    while True:
        if dropped < 0:
            whole = raw.rfind(b"\n") + 1
            if whole > checked:
                lf = raw.count(b"\n", checked, whole)
                if raw.count(b"\r\n", checked, whole) != lf or \
                        raw.count(b"\r", checked, whole) != lf:
                    raise Close(replies.BARE_LF_DATA, "bare_lf")
                if checked == 0 and raw.startswith(b".\r\n"):
                    s.buf = raw[3:]
                    return b"", 0, False
                end = raw.find(_END, max(0, checked - 2), whole)
                if raw.find(b"\0", checked, end + 2 if end >= 0 else whole) >= 0:
                    nul = True
                if end >= 0:
                    s.buf = raw[end + 5:]
                    if nul:
                        return None, end + 2, True
                    message = _unstuff(raw[:end + 2])
                    return message, len(message), False
                checked = whole
            if nul or (cap and len(raw) > cap):
                dropped, carry = len(raw), bytes(raw[-4:])
                raw = bytearray()
        else:
            window = carry + raw
            end = window.find(_END)
            if end >= 0:
                s.buf = bytearray(window[end + 5:])
                return None, dropped + end + 2 - len(carry), nul
            dropped += len(raw)
            carry = window[-4:]
            raw.clear()
        wait = settings.idle_timeout
        if settings.min_data_rate:
            wait = min(wait, start + max(settings.data_rate_grace,
                                         got / settings.min_data_rate) - loop.time())
        chunk = await s.read_chunk(max(0.0, wait))
        got += len(chunk)
        raw += chunk


def _unstuff(body: bytearray) -> bytes:
    out = bytes(body).replace(b"\r\n..", b"\r\n.")
    return out[1:] if out.startswith(b"..") else out
