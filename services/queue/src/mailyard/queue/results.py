"""Outcomes from the delivery workers: record them, schedule retries, bounce, complete.

Results are applied in one transaction per fetched batch and acked after the commit. Then
each touched message is settled: failures not yet bounced are bounced once nothing of the
message is in flight (so three refusals in one job make one DSN), and a message whose every
recipient is final loses its spool file, then its state (file first: a todo redelivered
after that finds no file and is dropped, never delivered twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from nats.aio.msg import Msg

from mailyard.api.mail.v1.delivery_pb2 import (
    CHANNEL_LOCAL,
    CHANNEL_REMOTE,
    OUTCOME_DEFERRED,
    OUTCOME_DELIVERED,
    OUTCOME_FAILED,
    DeliveryResult,
)
from mailyard.api.mail.v1.envelope_pb2 import (
    ORIGIN_BOUNCE,
    ORIGIN_DOUBLE_BOUNCE,
    Envelope,
    Origin,
)
from mailyard.core import bus, postmaster
from mailyard.core.errors import MailyardError, SpoolError
from mailyard.core.ids import new_queue_id
from mailyard.core.inject import inject
from mailyard.queue import bounce, metrics, schedule
from mailyard.queue.engine import Queue
from mailyard.queue.state import (
    DEFERRED,
    DELIVERED,
    FAILED,
    FINAL,
    HELD,
    QUEUED,
    Message,
    Outcome,
    Recipient,
)

log = logging.getLogger(__name__)
RESULT_NAME: dict[int, str] = {OUTCOME_DELIVERED: "delivered", OUTCOME_DEFERRED: "deferred",
               OUTCOME_FAILED: "failed"}
CHANNEL_NAME: dict[int, str] = {CHANNEL_LOCAL: "local", CHANNEL_REMOTE: "remote"}
# Label children looked up once, not per recipient.
DELIVERIES = {(c, r): metrics.DELIVERIES.labels(c, r)
              for c in CHANNEL_NAME.values() for r in RESULT_NAME.values()}
RETRIES = {c: metrics.RETRIES.labels(c) for c in CHANNEL_NAME.values()}
BOUNCE_RETRY = 2.0  # seconds before a bounce JetStream did not take is tried again


class ResultConsumer:
    def __init__(self, queue: Queue) -> None:
        self.q = queue

    async def run(self) -> None:
        await self.q.consume(bus.RESULTS_STREAM, bus.RESULTS_CONSUMER,
                             bus.RESULT_SUBJECT.format(channel="*"), self.handle)

    def decide(self, rcpt: Recipient, message: Message, outcome: int) -> tuple[int, float]:
        """New state and next attempt of one recipient (called in the store's thread)."""
        if outcome == OUTCOME_DELIVERED:
            return DELIVERED, 0.0
        if outcome == OUTCOME_FAILED:
            return FAILED, 0.0
        now = time.time()
        if schedule.expired(message.received_at, now, self.q.lifetime()):
            return FAILED, 0.0
        s = self.q.settings
        c = s.retry_c_local if rcpt.channel == CHANNEL_LOCAL else s.retry_c_remote
        return (HELD if message.held else DEFERRED), schedule.next_attempt(
            message.received_at, now, c)

    def _apply(self, rows: list[tuple[str, str, str, int, str, str, str]]
               ) -> tuple[list[Outcome], dict[str, tuple[Message, list[Recipient]]]]:
        """On the store's thread: apply the batch (one transaction) and return what settling
        the touched messages needs, in the same hop."""
        return self.q.store.apply_and_snapshot(rows, self.decide)

    async def handle(self, msgs: list[Msg]) -> None:
        rows: list[tuple[str, str, str, int, str, str, str]] = []
        for msg in msgs:
            try:
                result: DeliveryResult = bus.decode(DeliveryResult, msg.data)
            except Exception:
                log.error("undecodable delivery result dropped")
                continue
            for r in result.results:
                outcome = r.outcome if r.outcome in RESULT_NAME else OUTCOME_DEFERRED
                rows.append((result.job_id, result.queue_id, r.recipient, outcome,
                             r.reply, r.enhanced_code, r.remote_host))
        by_key = {(qid, addr): outcome for _, qid, addr, outcome, *_ in rows}
        hosts = {(qid, addr): host for _, qid, addr, _, _, _, host in rows}
        applied, snap = await self.q.store.run(self._apply, rows) if rows else ([], {})
        for m in msgs:
            with contextlib.suppress(Exception):
                await m.ack()
        events = self.q.events()
        for o in applied:
            reported = by_key.get((o.queue_id, o.address), OUTCOME_DEFERRED)
            channel = CHANNEL_NAME.get(o.channel, "remote")
            DELIVERIES[channel, RESULT_NAME[reported]].inc()
            if o.state in (DEFERRED, HELD):
                RETRIES[channel].inc()
            final = OUTCOME_FAILED if o.state == FAILED else reported
            events.add("delivery", o.queue_id, o.address, o.channel, final, o.reply)
            self.q.history.delivery(o.queue_id, o.address, channel, RESULT_NAME[final],
                                    o.reply, hosts.get((o.queue_id, o.address), ""))
        await events.send()
        await self.q.history.flush()
        if snap:
            await settle_many(self.q, list(snap), snap)
        if self.q.settings.delay_warnings:
            for qid in {o.queue_id for o in applied if o.state == DEFERRED}:
                await warn_delay(self.q, qid)


async def settle(q: Queue, queue_id: str) -> None:
    """Bounce what failed, and remove the message once every recipient is final."""
    await settle_many(q, [queue_id])


async def settle_many(q: Queue, queue_ids: list[str],
                      snap: dict[str, tuple[Message, list[Recipient]]] | None = None) -> None:
    """settle() for many messages: one read (unless given), the bounces owed, then every
    completed message removed together (see complete_many)."""
    if q.settling.locked():
        snap = None  # another settle runs: what it did is read again once it is done
    async with q.settling:
        await _settle_many(q, queue_ids, snap)


async def _settle_many(q: Queue, queue_ids: list[str],
                       snap: dict[str, tuple[Message, list[Recipient]]] | None) -> None:
    store = q.store
    if snap is None:
        snap = await store.run(store.snapshot, queue_ids)
    done: list[Message] = []
    for qid in queue_ids:
        if qid not in snap:
            continue
        message, rcpts = snap[qid]
        failed = [r for r in rcpts if r.state == FAILED and not r.bounced]
        if failed and not any(r.state == QUEUED for r in rcpts):
            try:
                await send_bounce(q, message, failed)
            except MailyardError as exc:  # retried soon (retry_owed); nothing is removed before
                log.warning("bounce not injected yet: %s", exc, extra={"queue_id": qid})
                q.owed.set()
                continue
        if rcpts and all(r.state in FINAL for r in rcpts):
            done.append(message)
    if done:
        await complete_many(q, done)
    await q.history.flush()  # bounces of messages that stay queued


async def complete(q: Queue, message: Message) -> None:
    await complete_many(q, [message])


async def complete_many(q: Queue, messages: list[Message]) -> None:
    """Spool files first (together), then the state of those removed, in one transaction:
    a crash in between leaves final recipients without a file, which the sweep completes
    (the file is already gone) and the reconciler does not count as missing."""
    # Not fsynced one by one (a directory fsync per message was the queue's largest cost):
    # delete_many marks them completed, so a removal an OS crash undoes is recognised.
    removed = await q.spool.remove_many([m.spool_path for m in messages], durable=False)
    gone: list[str] = []
    for message, outcome in zip(messages, removed, strict=True):
        if isinstance(outcome, SpoolError):
            log.error("spool file not removed: %s", outcome,
                      extra={"queue_id": message.queue_id})
        else:
            gone.append(message.queue_id)
    if not gone:
        return
    await q.store.run(q.store.delete_many, gone)
    events = q.events()
    for qid in gone:
        events.add("done", qid)
        q.history.step(qid, "done")
        log.info("message done", extra={"queue_id": qid})
    await events.send()
    await q.history.flush()


async def _original(q: Queue, message: Message) -> bytes:
    return (await _stored(q, message))[1]


async def _stored(q: Queue, message: Message) -> tuple[Envelope | None, bytes]:
    try:
        return await q.spool.read(message.spool_path, verify=False)
    except SpoolError:
        return None, b""


def _envelope(queue_id: str, to: str, origin: Origin.ValueType, me: str,
              data: bytes) -> Envelope:
    """A bounce's envelope, flagged for what its address and bytes need (as smtp-ingress
    flags a client's message): without SMTPUTF8 remote-delivery cannot name a sender whose
    address is not ASCII (553 5.1.3, and the bounce became a double bounce), and 8-bit text
    (a returned header, a UTF-8 address) goes out with BODY=8BITMIME."""
    return Envelope(queue_id=queue_id, sender="", recipients=[to], origin=origin, helo=me,
                    smtputf8=not to.isascii(), body_8bit=not data.isascii())


async def send_bounce(q: Queue, message: Message, failed: list[Recipient]) -> None:
    # Only a null sender's message is read to tell where it goes (a forwarded double bounce
    # carries bounce.DOUBLE_BOUNCE_FIELD); any other is read once a bounce is built from it.
    original = (await _original(q, message)
                if not message.sender and message.origin != ORIGIN_DOUBLE_BOUNCE else None)
    kind = bounce.kind_of(message.origin, message.sender, original or b"")
    store = q.store
    addresses = [r.address for r in failed]
    if kind == bounce.DROP:
        # qmail: a double bounce that bounces is dropped; the postmaster is unreachable.
        log.error("double bounce failed, dropped", extra={"queue_id": message.queue_id,
                                                           "recipients": addresses})
        metrics.BOUNCES.labels(bounce.DROP).inc()
        await store.run(store.mark_bounced, message.queue_id, addresses)
        q.history.step(message.queue_id, "bounce", "double bounce failed: dropped")
        return
    if kind == bounce.BOUNCE:
        stored, original = await _stored(q, message)
        if stored is not None and stored.sender_unverified:
            # smtp-ingress found nothing vouching for this sender (no SPF pass, no aligned
            # DKIM): it may be forged, and a bounce to it is backscatter (a forward's copy
            # the next host refused, a backup MX's primary refusing spam). Recorded, as qmail
            # logs a bounce, and not sent.
            log.info("bounce not sent, sender not verified",
                     extra={"queue_id": message.queue_id, "recipients": addresses})
            metrics.BOUNCES.labels(bounce.UNSENT).inc()
            await store.run(store.mark_bounced, message.queue_id, addresses)
            q.history.step(message.queue_id, "bounce", bounce.UNSENT_DETAIL)
            return
    s, me = q.settings, q.identity.me
    to = message.sender if kind == bounce.BOUNCE else q.identity.postmaster
    # A postmaster no MX can reach (postmaster@localhost, @<me> while me is not hosted)
    # gets the double bounce in the local postmaster mailbox, not a week in the queue.
    keep_here = (kind == bounce.DOUBLE_BOUNCE
                 and not q.identity.deliverable(to, q.directory.is_local_domain))
    bounce_id = await store.run(store.reserve_bounce_id, message.queue_id, new_queue_id())
    if keep_here or not await q.spool.exists(q.spool.relpath(bounce_id)):
        if original is None:
            original = await _original(q, message)
        data = bounce.build(
            fmt=s.bounce_format, me=me, to=to, kind=kind, queue_id=message.queue_id,
            original_sender=message.sender, arrival=message.received_at, original=original,
            smtputf8=message.smtputf8,
            failures=[bounce.Failure(r.address, r.last_reply, r.enhanced_code,
                                     r.route if r.channel == CHANNEL_REMOTE else "")
                      for r in failed])
        if keep_here:
            try:
                path = await postmaster.deliver(q.spool.root, data, bounce_id)
            except OSError as exc:  # retried by the next sweep, like a failed injection
                raise MailyardError(f"postmaster mailbox not written: {exc}") from exc
            to = f"the local postmaster mailbox ({path.name})"
        else:
            origin = ORIGIN_BOUNCE if kind == bounce.BOUNCE else ORIGIN_DOUBLE_BOUNCE
            try:
                await inject(q.spool, q.js, _envelope(bounce_id, to, origin, me, data), data)
            except MailyardError:
                # A publish that timed out may still have reached the stream: its todo finds
                # the file withdrawn and is dropped, and the same id again would be
                # swallowed as a duplicate. The retry takes a new id.
                await store.run(store.release_bounce_id, message.queue_id)
                raise
    # else: injected before a crash; if its todo was lost the reconciler republishes it.
    await store.run(store.mark_bounced, message.queue_id, addresses)
    metrics.BOUNCES.labels(kind).inc()
    detail = f"{kind} {bounce_id} to {to if keep_here else f'<{to}>'}"
    await q.event("bounce", message.queue_id, reply=detail)
    q.history.step(message.queue_id, "bounce", detail)  # flushed with the step's done
    log.info("bounced", extra={"queue_id": message.queue_id, "bounce_id": bounce_id,
                               "kind": kind})


async def warn_delay(q: Queue, queue_id: str) -> None:
    """Optional (DELAY_WARNINGS): one "still trying" DSN per message, to a real sender,
    once the message is older than DELAY_WARNING_AFTER. Best effort: never retried."""
    store, s, me = q.store, q.settings, q.identity.me
    message = await store.run(store.message, queue_id)
    if (message is None or bounce.kind_of(message.origin, message.sender) != bounce.BOUNCE
            or time.time() - message.received_at < s.delay_warning_after):
        return
    if not await store.run(store.mark_warned, queue_id):
        return
    # after mark_warned: every later deferral of the message comes here and must not read
    # its file again
    stored, _ = await _stored(q, message)
    if stored is not None and stored.sender_unverified:  # as send_bounce: not to a forgery
        return
    waiting = [r for r in await store.run(store.recipients, queue_id) if r.state == DEFERRED]
    data = bounce.build(
        fmt=s.bounce_format, me=me, to=message.sender, kind=bounce.DELAY,
        queue_id=queue_id, original_sender=message.sender, arrival=message.received_at,
        original=b"", smtputf8=message.smtputf8,
        failures=[bounce.Failure(r.address, r.last_reply, r.enhanced_code,
                                 r.route if r.channel == CHANNEL_REMOTE else "")
                  for r in waiting])
    try:
        await inject(q.spool, q.js, _envelope("", message.sender, ORIGIN_BOUNCE, me, data),
                     data)
        metrics.BOUNCES.labels(bounce.DELAY).inc()
    except MailyardError as exc:
        log.warning("delay warning not sent: %s", exc, extra={"queue_id": queue_id})


async def retry_owed(q: Queue) -> None:
    """A bounce JetStream did not take (a slow ack under load, a full disk) is tried again
    after BOUNCE_RETRY seconds, not at the next reconcile run minutes later."""
    while True:
        await q.owed.wait()
        await asyncio.sleep(BOUNCE_RETRY)
        q.owed.clear()  # a failure in this sweep sets it again
        try:
            await sweep(q)
        except Exception:
            log.exception("bounce retry failed")
            q.owed.set()


async def sweep(q: Queue) -> int:
    """Finish completion work a crash interrupted (bounces owed, files to remove)."""
    ids = await q.store.run(q.store.needs_attention)
    for qid in ids:
        await settle(q, qid)
    return len(ids)
