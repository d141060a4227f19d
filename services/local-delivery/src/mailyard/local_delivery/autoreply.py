"""Vacation replies (a mailbox's Autoresponse), sent after the message is in the mailbox, the
way RFC 3834 and vacation(1) / qmail-autoresponder say:

- never to the null sender, MAILER-DAEMON, owner-* or *-request senders, nor the mailbox
  itself (also behind an SRS forwarder's address or a BATV tag: the author it carries),
  nor to mail with Auto-Submitted other than "no", Precedence bulk/list/junk, a List-*
  field, the scanner's X-Spam: Yes, or that does not name the mailbox (or the address it
  came in by) in To/Cc;
- at most once per sender and mailbox per interval (control: MAILYARD_LOCAL_AUTOREPLY_
  INTERVAL, 7 days like vacation(1)): the first replica to create the pair's key in the KV
  bucket `autoreplies` replies; the bucket's TTL is the interval, so it holds one key per
  pair answered lately and no more. A sender forwarded with SRS, or signed with BATV, is
  the author it carries (its address changes daily), the reply still going to the
  envelope sender;
- from <> with Auto-Submitted: auto-replied, so no other responder answers it and a
  failure is a double bounce to the postmaster, not another reply;
- through the spool and todo (mailyard.core.inject) like every message, so it is durable and
  shows in the queue and history (origin "autoreply").

Whatever goes wrong here is logged and counted; the delivery it follows stays delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from dataclasses import replace
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import make_msgid

from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.api.mail.v1.delivery_pb2 import DeliveryJob
from mailyard.core import bus, headers, srs
from mailyard.core.sender_author import author
from mailyard.core.spool import Spool
from mailyard.local_delivery import autoheaders, metrics, reinject
from mailyard.local_delivery.settings import Settings

log = logging.getLogger(__name__)

OPEN_TIMEOUT = 10.0  # seconds the bucket may take to open or answer before we give up
_NOT_TO = ("mailer-daemon",)
_NOT_FROM_PREFIX = ("owner-",)
_NOT_FROM_SUFFIX = ("-request",)
_LIST_PRECEDENCE = ("bulk", "list", "junk")


def active(auto: pb.Autoresponse, now: float) -> bool:
    """On, and now within [start, end)."""
    if not auto.enabled or not auto.body:
        return False
    if auto.HasField("start") and now < auto.start.seconds + auto.start.nanos / 1e9:
        return False
    return not (auto.HasField("end") and now >= auto.end.seconds + auto.end.nanos / 1e9)


def sender_excluded(sender: str, mailbox: str) -> str | None:
    """Why the envelope sender gets no reply, or None."""
    if not sender:
        return "null sender"
    # forwarded with SRS (SRS0=HHHH=TT=domain=owner-news@fwd), signed with BATV
    # (prvs=TAG=owner-news@): the author is judged, not the day's address
    who = author(sender).lower()
    local = who.rpartition("@")[0] if "@" in who else srs.original_local(who)
    if local in _NOT_TO or local.startswith(_NOT_FROM_PREFIX) or local.endswith(
            _NOT_FROM_SUFFIX):
        return "automatic sender"
    if who == mailbox:
        return "the mailbox itself"
    return None


def header_excluded(orig: autoheaders.Original, addressed: set[str]) -> str | None:
    """Why the message gets no reply from its header, or None. `addressed`: the canonical
    addresses that count as the mailbox in To/Cc."""
    if orig.auto_submitted and orig.auto_submitted != "no":
        return "Auto-Submitted"
    if orig.precedence in _LIST_PRECEDENCE:
        return "Precedence"
    if orig.list_header:
        return "List-*"
    if orig.spam:
        return "X-Spam"
    if not orig.recipients & addressed:
        return "not in To/Cc"
    return None


def _address(text: str) -> Address:
    """The envelope sender as a To: address: as SMTP gave it (a quoted local part stays
    quoted), else its two parts (an SMTPUTF8 address the parser will not take)."""
    try:
        return Address(addr_spec=text)
    except Exception:
        local, _, domain = text.rpartition("@")
        return Address(username=local, domain=domain)


def build(auto: pb.Autoresponse, mailbox: pb.Mailbox, sender: str,
          orig: autoheaders.Original, me: str, now: float) -> tuple[bytes, bool]:
    """The reply's bytes (CRLF) and whether it needs SMTPUTF8 (an address not ASCII).
    Every header value is one line by construction: the email package refuses CR/LF in a
    value, and the texts put there went through one_line first."""
    utf8 = not (sender.isascii() and mailbox.address.isascii())
    msg = EmailMessage(policy=policy.SMTPUTF8 if utf8 else policy.SMTP)
    name = autoheaders.one_line(mailbox.gecos, 200)
    local, _, domain = mailbox.address.rpartition("@")
    msg["From"] = Address(display_name=name, username=local, domain=domain)
    msg["To"] = _address(sender)
    subject = autoheaders.one_line(auto.subject, autoheaders.MAX_SUBJECT)
    if not subject:
        original = orig.subject
        subject = original if original[:3].lower() == "re:" else f"Re: {original}".strip()
    msg["Subject"] = subject
    msg["Date"] = headers.date(now)
    msg["Message-ID"] = make_msgid("autoreply", domain=me)
    if orig.message_id:
        msg["In-Reply-To"] = orig.message_id
        msg["References"] = " ".join([*orig.references, orig.message_id])
    msg["Auto-Submitted"] = "auto-replied"
    body = auto.body if auto.body.endswith("\n") else auto.body + "\n"
    # quoted-printable, not 8bit: the reply needs no 8BITMIME from the next hop, and a line
    # past SMTP's 998 octets is folded
    plain = body.isascii() and max(map(len, body.splitlines()), default=0) <= 998
    msg.set_content(body, charset="utf-8", cte="7bit" if plain else "quoted-printable")
    return msg.as_bytes(), utf8


def pair_key(mailbox: str, sender: str) -> str:
    """The KV key of one (mailbox, sender) pair: a digest, so no address is stored. The
    sender counts as its author, behind an SRS address or a BATV tag: a forwarder's address
    for one author and a signed one change daily, and keyed by them the author was answered
    every day."""
    return hashlib.sha256(f"{mailbox}\0{author(sender).lower()}".encode()).hexdigest()[:40]


class Autoresponder:
    def __init__(self, settings: Settings, spool: Spool, js: JetStreamContext) -> None:
        self.settings = settings
        self.spool = spool
        self.js = js
        self._kv: KeyValue | None = None
        self._opening = asyncio.Lock()

    async def _bucket(self) -> KeyValue:
        """Opened at the first reply: hosts without vacation messages never make it."""
        async with self._opening:
            if self._kv is None:
                ttl = self.settings.autoreply_interval
                kv = await bus.ensure_kv(self.js, bus.KV_AUTOREPLIES, ttl=ttl)
                # made with another interval (the setting changed): the bucket follows
                info = await self.js.stream_info(f"KV_{bus.KV_AUTOREPLIES}")
                if abs((info.config.max_age or 0) - ttl) > 1:
                    await self.js.update_stream(replace(info.config, max_age=ttl))
                self._kv = kv
        return self._kv

    async def after_delivery(self, job: DeliveryJob, data: bytes, address: str,
                             mailbox: pb.Mailbox) -> None:
        """Reply if the rules allow; `address`: the envelope recipient (canonical) that led
        to `mailbox`. Never raises."""
        try:
            result = await self._reply(job, data, address, mailbox)
        except Exception as exc:
            log.warning("vacation reply not sent: %s", exc or type(exc).__name__,
                        extra={"queue_id": job.queue_id})
            result = "failed"
            self._kv = None  # opened again next time: the bucket may have been deleted
        metrics.AUTOREPLIES.labels(result).inc()

    async def _reply(self, job: DeliveryJob, data: bytes, address: str,
                     mailbox: pb.Mailbox) -> str:
        auto = mailbox.autoresponse
        now = time.time()
        if not active(auto, now):
            return "inactive"
        why = sender_excluded(job.sender, mailbox.address)
        orig = autoheaders.Original()
        if why is None:
            orig = autoheaders.parse(data)
            why = header_excluded(orig, {mailbox.address, address})
        if why:
            log.info("no vacation reply: %s", why, extra={"queue_id": job.queue_id})
            return "excluded"
        async with asyncio.timeout(OPEN_TIMEOUT):
            kv = await self._bucket()
            key = pair_key(mailbox.address, job.sender)
            try:
                await kv.create(key, str(int(now)).encode())
            except KeyWrongLastSequenceError:
                return "repeat"
        try:
            message, utf8 = build(auto, mailbox, job.sender, orig, self.settings.me, now)
            qid = await reinject.autoreply(self.spool, self.js, job.sender, message,
                                           smtputf8=utf8)
        except BaseException:
            # not sent: the next message from this sender may try again
            with contextlib.suppress(Exception):
                await kv.delete(key)
            raise
        log.info("vacation reply sent", extra={"queue_id": job.queue_id, "new_queue_id": qid})
        return "sent"
