"""One delivery job: every recipient gets its own outcome (qmail-local + vdelivermail).

For each recipient: loop check on the Delivered-To lines already in the header, expand the
address (resolve.py), write each mailbox copy with `Return-Path:` and `Delivered-To:`
prepended (Maildir++, quota checked first), reinject forwards and list mail, and, once the
recipient is delivered, send the vacation replies of its mailboxes (autoreply.py). One
recipient's trouble (over quota, a loop, a full disk) never changes another's outcome.

Replies keep qmail's wording with the enhanced code in "(#x.y.z)", since people grep for them.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext

from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.api.mail.v1.delivery_pb2 import (
    Channel,
    DeliveryJob,
    DeliveryResult,
    Outcome,
    RecipientResult,
)
from mailyard.core import list_posting, postmaster, srs
from mailyard.core.directory import DirectoryView, canonical
from mailyard.core.errors import MailyardError, SpoolError
from mailyard.core.fsync_batch import FsyncBatch
from mailyard.core.identity import POSTMASTER_NAMES, Identity
from mailyard.core.spool import Spool
from mailyard.core.srs_keys import SrsSecrets, list_cookie_secrets
from mailyard.local_delivery import (
    autoreply,
    listmail,
    maildir,
    metrics,
    quota,
    quotawarn,
    reinject,
    resolve,
    subscribe,
)
from mailyard.local_delivery.settings import Settings
from mailyard.local_delivery.srs_sender import SrsSender

log = logging.getLogger(__name__)

MAX_HOPS = 100
LOOPING = resolve.LOOPING[0]
TOO_MANY_HOPS = "too many hops, this message is looping (#5.4.6)"
OVER_QUOTA = "The user you are trying to reach is over quota. (#{code})"
SYMLINK = "Unable to deliver: the mailbox holds a symbolic link; not followed. (#4.3.0)"
TO_POSTMASTER = "delivered to the local postmaster mailbox"
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_HOP_LINE = re.compile(rb"^(received|delivered-to):", re.IGNORECASE | re.MULTILINE)
_DELIVERED_TO = re.compile(rb"^delivered-to:[ \t]*(.*?)\r?$", re.IGNORECASE | re.MULTILINE)
_RESULT_NAME = {Outcome.OUTCOME_DELIVERED: "delivered", Outcome.OUTCOME_DEFERRED: "deferred",
                Outcome.OUTCOME_FAILED: "failed"}


@dataclass(frozen=True)
class Message:
    """The spooled bytes with what every recipient's checks need, computed once."""

    data: bytes
    eol: bytes
    header: bytes
    delivered_to: frozenset[str]
    hops: int
    sender_unverified: bool = False  # the envelope's: no bounce of a refused list post

    @classmethod
    def parse(cls, data: bytes, *, sender_unverified: bool = False) -> Message:
        first = data.find(b"\n")
        eol = b"\r\n" if first > 0 and data[first - 1:first] == b"\r" else b"\n"
        if data.startswith((b"\r\n", b"\n")):
            header = b""
        else:
            end = _HEADER_END.search(data)
            header = data[:end.start()] if end else data
        values = (m.group(1).strip(b" \t<>").decode("utf-8", "replace").lower()
                  for m in _DELIVERED_TO.finditer(header))
        # in the form _one compares (canonical): another MTA may write our address in
        # another Unicode normal form or with the domain's UTF-8 form
        seen = frozenset(v if v.isascii() else canonical(v) for v in values)
        return cls(data, eol, header, seen, len(_HOP_LINE.findall(header)),
                   sender_unverified)


def _delivered_to(address: str, eol: bytes) -> bytes:
    return b"Delivered-To: " + address.encode() + eol


def _result(recipient: str, outcome: int, reply: str, code: str) -> RecipientResult:
    return RecipientResult(recipient=recipient, outcome=outcome,  # type: ignore[arg-type]
                           reply=reply, enhanced_code=code)


class Deliverer:
    def __init__(self, settings: Settings, directory: DirectoryView, identity: Identity,
                 spool: Spool, js: JetStreamContext, *, threads: int = 16) -> None:
        self.settings = settings
        self.root = Path(settings.mail_dir).resolve()
        self.owner = settings.owner()
        self.directory = directory
        self.identity = identity
        self.spool = spool
        self.js = js
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="maildir")
        self._fsyncs = FsyncBatch(self._pool)
        self.autoresponder = autoreply.Autoresponder(settings, spool, js)
        self.srs = SrsSender(directory, identity, SrsSecrets(js))
        self.subscriptions = subscribe.Subscriptions(settings, spool, js,
                                                     list_cookie_secrets(js))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._fsyncs.close()

    async def run(self, job: DeliveryJob) -> DeliveryResult:
        started = time.monotonic()
        try:
            stored, data = await self.spool.read(job.spool_path, size=job.size,
                                                 inline_max=self.settings.inline_read_max)
        except SpoolError as exc:
            # Never deliver empty: the queue retries and its reconciler holds and alerts.
            log.warning("cannot read spooled message: %s", exc,
                        extra={"queue_id": job.queue_id})
            results = [_result(r, Outcome.OUTCOME_DEFERRED,
                               "Unable to read the message from the spool. (#4.3.0)", "4.3.0")
                       for r in job.recipients]
        else:
            message = Message.parse(data, sender_unverified=stored.sender_unverified)
            results = [await self._one(job, message, r) for r in job.recipients]
        for res in results:
            metrics.DELIVERIES.labels(_RESULT_NAME.get(res.outcome, "failed")).inc()
        finished = Timestamp()
        finished.GetCurrentTime()
        return DeliveryResult(job_id=job.job_id, queue_id=job.queue_id,
                              channel=Channel.CHANNEL_LOCAL, results=results,
                              worker=self.settings.instance, finished_at=finished,
                              duration_seconds=time.monotonic() - started)

    async def _one(self, job: DeliveryJob, message: Message, recipient: str) -> RecipientResult:
        address = canonical(recipient)
        if address in message.delivered_to:
            return _result(recipient, Outcome.OUTCOME_FAILED, LOOPING, "5.4.6")
        if message.hops > MAX_HOPS:
            return _result(recipient, Outcome.OUTCOME_FAILED, TOO_MANY_HOPS, "5.4.6")
        # qmail-local: one Delivered-To line for this address on every copy it makes.
        delivered_to = _delivered_to(address, message.eol)
        return_path = b"Return-Path: <" + job.sender.encode() + b">" + message.eol
        local, _, domain = address.rpartition("@")
        if self.identity.is_local_name(domain) and not self.directory.is_local_domain(domain):
            # this host's own name (qmail's control/locals): only ~alias's names have a box
            if local not in POSTMASTER_NAMES:
                return _result(recipient, Outcome.OUTCOME_FAILED, *resolve.NO_MAILBOX)
            try:
                await postmaster.deliver(self.spool.root, return_path + delivered_to
                                         + message.data, job.queue_id)
            except OSError as exc:
                log.warning("postmaster mailbox not written: %s", exc,
                            extra={"queue_id": job.queue_id})
                return _result(recipient, Outcome.OUTCOME_DEFERRED,
                               f"Unable to write the message to the postmaster mailbox: "
                               f"{exc.strerror or exc}. (#4.3.0)", "4.3.0")
            return _result(recipient, Outcome.OUTCOME_DELIVERED, TO_POSTMASTER, "2.0.0")
        if srs.is_srs(local):  # a prefix test: other mail pays nothing more
            return await self._srs_return(job, recipient, address,
                                          delivered_to + message.data)
        exp = resolve.expand(self.directory, address, message.delivered_to)
        if exp.failure:
            return _result(recipient, Outcome.OUTCOME_FAILED, *exp.failure)
        if exp.deferral:
            if exp.deferral == resolve.NOT_LOCAL and self.srs.is_srs_domain(domain):
                # routed here for our SRS addresses there (the queue): no mailbox otherwise
                return _result(recipient, Outcome.OUTCOME_FAILED, *resolve.NO_MAILBOX)
            return _result(recipient, Outcome.OUTCOME_DEFERRED, *exp.deferral)
        if exp.returned:
            return _result(recipient, *subscribe.returned(job, exp.returned))
        if exp.command is not None:
            try:
                return _result(recipient, *await self.subscriptions.handle(
                    job, message.data, exp.command))
            except MailyardError as exc:
                log.warning("list command not answered: %s", exc,
                            extra={"queue_id": job.queue_id})
                return _result(recipient, Outcome.OUTCOME_DEFERRED,
                               "Unable to answer: queue unavailable. (#4.3.0)", "4.3.0")

        for mailbox in exp.mailboxes.values():
            refused = await self._to_mailbox(job, mailbox, [return_path, delivered_to,
                                                           message.data])
            if refused is not None:
                return _result(recipient, *refused)
        try:
            data = delivered_to + message.data
            if exp.forwards:
                # qmail delivers to each address an alias leads to on its own, each adding
                # its line: without the forwarding mailbox's (or the list's, below), mail
                # that came back to it went round once more before the loop check saw it
                lines = b"".join(_delivered_to(a, message.eol) for a in exp.forwarders)
                await self._forward(job, address, exp.forwards, lines + data,
                                    message.sender_unverified)
            for mlist in exp.lists:
                lines = delivered_to if mlist.address == address else \
                    _delivered_to(mlist.address, message.eol) + delivered_to
                listed = lines + message.data
                if not job.sender:
                    # A bounce (of forged spam, or of a member's copy) is the owner's
                    # business, never the members': sent to them from the owner it reached
                    # thousands, and bounced on, round for ever when the list owns itself.
                    # It keeps <>, so its own failure is a double bounce.
                    if not mlist.owner:  # (lists from before owners were required)
                        return _result(recipient, Outcome.OUTCOME_FAILED, *resolve.NO_OWNER)
                    qid = await reinject.bounce_to_owner(self.spool, self.js, job, address,
                                                         mlist.address, mlist.owner, listed)
                    log.info("bounce to a list sent to its owner",
                             extra={"queue_id": job.queue_id, "new_queue_id": qid})
                    continue
                if listmail.went_through(message.header, mlist.address):
                    return _result(recipient, Outcome.OUTCOME_FAILED,
                                   listmail.LOOP.format(list=mlist.address), "5.4.6")
                owner = mlist.owner or job.sender
                # the record's owner: the stand-in above (the poster) may not post for it
                if mlist.posting and (not_allowed := list_posting.refusal(
                        mlist.posting, mlist.address, mlist.owner, mlist.members, mlist.posters,
                        job.sender, message.data, self.directory.delimiters)):
                    if message.sender_unverified:
                        # smtp-ingress could not refuse it (an alias led here, or other
                        # recipients took it) and nothing vouches for the sender: a bounce
                        # would go to whoever a spammer named. Postfix's discard: logged
                        # and recorded as done, never returned.
                        log.info("list post discarded, sender not verified",
                                 extra={"queue_id": job.queue_id, "list": mlist.address})
                        return _result(recipient, Outcome.OUTCOME_DELIVERED,
                                       listmail.DISCARDED.format(why=not_allowed), "2.0.0")
                    return _result(recipient, Outcome.OUTCOME_FAILED, not_allowed, "5.7.2")
                if mlist.members:
                    listed = lines + listmail.fields(
                        mlist.address, owner, self.directory.delimiters, message.eol,
                        mlist.subscription == pb.SUBSCRIPTION_POLICY_CONFIRM) + message.data
                    for sender, members in await self._list_senders(owner, mlist):
                        qid = await reinject.to_list(self.spool, self.js, job, address,
                                                     mlist.address, owner, members, listed,
                                                     sender=sender)
                        log.info("list mail sent", extra={"queue_id": job.queue_id,
                                                          "new_queue_id": qid,
                                                          "members": len(members)})
        except MailyardError as exc:
            log.warning("reinjection failed: %s", exc, extra={"queue_id": job.queue_id})
            return _result(recipient, Outcome.OUTCOME_DEFERRED,
                           "Unable to forward message: queue unavailable. (#4.3.0)", "4.3.0")
        if exp.deleted:
            return _result(recipient, Outcome.OUTCOME_DELIVERED,
                           "message deleted by the domain's catch-all", "2.0.0")
        for mailbox in exp.mailboxes.values():
            # a field test per mailbox: the header is read only where a reply is on
            if mailbox.HasField("autoresponse") and mailbox.autoresponse.enabled:
                await self.autoresponder.after_delivery(job, message.data, address, mailbox)
        return _result(recipient, Outcome.OUTCOME_DELIVERED, "delivered", "2.0.0")

    async def _srs_return(self, job: DeliveryJob, recipient: str, address: str,
                          data: bytes) -> RecipientResult:
        """Mail to one of our SRS addresses that did not come through smtp-ingress's RCPT
        (the queue's bounce of a forwarded copy the next hop refused): on to the address it
        reverses to, as postsrsd's canonical map does for Postfix's own bounces."""
        try:
            original = await self.srs.reverse(address)
            qid = await reinject.forward(self.spool, self.js, job, address, [original], data)
        except srs.SrsError:
            return _result(recipient, Outcome.OUTCOME_FAILED, *resolve.SRS_INVALID)
        except MailyardError as exc:
            log.warning("SRS return not sent: %s", exc, extra={"queue_id": job.queue_id})
            return _result(recipient, Outcome.OUTCOME_DEFERRED,
                           "Unable to forward message: queue unavailable. (#4.3.0)", "4.3.0")
        log.info("returned to the original sender", extra={"queue_id": job.queue_id,
                                                           "new_queue_id": qid})
        return _result(recipient, Outcome.OUTCOME_DELIVERED, "forwarded (SRS)", "2.0.0")

    async def _list_senders(self, owner: str, mlist: resolve.ListSend
                            ) -> list[tuple[str | None, list[str]]]:
        """The list's members by envelope sender (None: the owner). An owner of another
        domain goes to the members elsewhere as an SRS address of the list's domain reversing
        to the owner, as a forward's sender does: from our IP as owner@gmail.com the copies
        failed SPF at the members' hosts. Members of our own domains keep the owner (a list
        of ours among them still sees its owner post). Paid only where the owner is not ours."""
        if not self.srs.needed(owner):
            return [(None, mlist.members)]
        return await self._by_sender(owner, mlist.address, mlist.members)

    async def _by_sender(self, sender: str, forwarder: str, targets: list[str]
                         ) -> list[tuple[str | None, list[str]]]:
        """`targets` in our own domains (None: the sender as it is) and elsewhere (the SRS
        sender `forwarder` sends them from), leaving out an empty part."""
        home: list[str] = []
        away: list[str] = []
        for target in targets:
            (home if self.srs.ours(target.rpartition("@")[2]) else away).append(target)
        if not away:
            return [(None, home)]
        parts: list[tuple[str | None, list[str]]] = [(None, home)] if home else []
        return [*parts, (await self.srs.rewrite(sender, forwarder), away)]

    async def _forward(self, job: DeliveryJob, address: str, targets: list[str],
                       data: bytes, unverified: bool) -> None:
        """Copies to our own domains keep the sender; those leaving for another domain go
        from an SRS address when the sender is not ours (srs_sender)."""
        parts = await self._by_sender(job.sender, address, targets) \
            if self.srs.needed(job.sender) else [(None, targets)]
        for sender, part in parts:
            qid = await reinject.forward(self.spool, self.js, job, address, part, data,
                                         sender=sender, sender_unverified=unverified)
            log.info("forwarded", extra={"queue_id": job.queue_id, "new_queue_id": qid,
                                         "targets": len(part), "sender": sender or job.sender})

    async def _to_mailbox(self, job: DeliveryJob, mailbox: pb.Mailbox,
                          parts: list[bytes]) -> tuple[int, str, str] | None:
        """Write one copy; None when it is in new/, else (outcome, reply, code)."""
        local, _, domain = mailbox.address.rpartition("@")
        relative = mailbox.maildir or f"{domain}/{local}/Maildir"
        try:
            path = maildir.mailbox_path(self.root, relative)
        except ValueError:
            log.error("mailbox path outside the mail root", extra={"queue_id": job.queue_id})
            return (Outcome.OUTCOME_DEFERRED,
                    "Unable to deliver: bad mailbox path in the directory. (#4.3.5)", "4.3.5")
        limits = quota.Quota(mailbox.quota_bytes, mailbox.quota_messages)
        try:
            return await self._write(path, limits, parts, mailbox.address)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                # Someone who can write into the maildir put a symbolic link where a folder
                # or maildirsize belongs (to have root write there): kept in the queue.
                log.error("symbolic link in the maildir, not followed: %s (%s)", path,
                          exc.filename, extra={"queue_id": job.queue_id})
                return Outcome.OUTCOME_DEFERRED, SYMLINK, "4.3.0"
            # A full or broken volume is temporary, as for qmail-local: nothing is in new/.
            log.warning("maildir write failed: %s", exc, extra={"queue_id": job.queue_id})
            return (Outcome.OUTCOME_DEFERRED,
                    f"Unable to write the message to the mailbox: "
                    f"{exc.strerror or exc}. (#4.3.0)", "4.3.0")

    async def _write(self, path: Path, limits: quota.Quota, parts: list[bytes],
                     address: str) -> tuple[int, str, str] | None:
        """On the event loop but for the fsyncs (maildir.deliver says why) and a count of
        the whole mailbox for its quota: every other step is a quick system call."""
        size = sum(len(p) for p in parts)
        with maildir.opened(self.root, path, self.owner) as box:
            used = (0, 0)
            full = False
            if limits.enabled:
                decided = quota.cached(box, limits, size)
                if decided is None:
                    decided = await asyncio.get_running_loop().run_in_executor(
                        self._pool, quota.recount, box, limits, size, self.owner)
                full, used = decided
            if full:
                metrics.QUOTA_REFUSALS.inc()
                # vdelivermail warns a full mailbox too: its user may not have heard yet
                await self._warn(box, limits, used, address)
                # Deferring waits for room; one larger than the quota would wait in vain for
                # queuelifetime before its sender heard.
                if self.settings.over_quota == "defer" and not limits.never_fits(size):
                    return Outcome.OUTCOME_DEFERRED, OVER_QUOTA.format(code="4.2.2"), "4.2.2"
                return Outcome.OUTCOME_FAILED, OVER_QUOTA.format(code="5.2.2"), "5.2.2"
            _, written = await maildir.deliver(box, parts, self.owner, self._fsyncs.fsync)
            if limits.enabled:
                quota.add(box, written)
                await self._warn(box, limits, (used[0] + written, used[1] + 1), address)
        metrics.DELIVERED_BYTES.inc(written)
        return None

    async def _warn(self, box: int, limits: quota.Quota, used: tuple[int, int],
                    address: str) -> None:
        """The quota warning when `used` is at or above the level and none was written this
        interval; whatever fails here leaves the delivery as it was."""
        percent = self.settings.quota_warn_percent
        if not percent or not quotawarn.reached(limits, used, percent):
            return  # below the level (nearly every delivery): no more filesystem work
        try:
            if not quotawarn.claim(box, self.settings.quota_warn_interval, self.owner):
                return
        except OSError as exc:
            log.warning("quota warning not written: %s", exc, extra={"mailbox": address})
            metrics.QUOTA_WARNINGS.labels("failed").inc()
            return
        domain = address.rpartition("@")[2]
        control = self.identity.control
        text = (control.text(quotawarn.control_name(domain))
                or control.text(quotawarn.CONTROL) or quotawarn.default_text(limits, used))
        try:
            # past the quota on purpose: the warning must reach a full mailbox
            _, written = await maildir.deliver(
                box, [quotawarn.compose(text, address, domain)], self.owner, self._fsyncs.fsync)
        except OSError as exc:
            quotawarn.release(box)
            log.warning("quota warning not written: %s", exc, extra={"mailbox": address})
            metrics.QUOTA_WARNINGS.labels("failed").inc()
            return
        quota.add(box, written)
        metrics.QUOTA_WARNINGS.labels("sent").inc()
        log.info("quota warning written", extra={"mailbox": address, "bytes": used[0],
                                                 "messages": used[1]})
