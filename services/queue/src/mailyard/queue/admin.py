"""mailyard.queue.v1.QueueService: qmail-qstat, qmail-qread and the operator's actions.

Stat reads the in-memory counters (never a scan). A standby (not the leader) answers
UNAVAILABLE, so clients and load balancers go to the active process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from mailyard.api.queue.v1 import queue_pb2 as pb
from mailyard.api.queue.v1 import queue_pb2_grpc
from mailyard.core import bus
from mailyard.core.ids import is_queue_id
from mailyard.queue import answer_bound, live, lost
from mailyard.queue.engine import Queue, enum
from mailyard.queue.history_search import MAX_QUEUE_ID
from mailyard.queue.reconcile import Reconciler
from mailyard.queue.results import complete, settle
from mailyard.queue.state import STATE_NAMES, Message, Recipient

log = logging.getLogger(__name__)
OPERATOR_BOUNCE = "This message was bounced by the queue operator. (#5.0.0)"


@dataclass
class Runtime:
    """What the admin plane serves from; `queue` is None until this process leads."""

    queue: Queue | None = None
    reconciler: Reconciler | None = None
    extras: dict[str, object] = field(default_factory=dict)


def _ts(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


async def stat(q: Queue) -> pb.StatResponse:
    store = q.store
    await q.refresh_not_preprocessed()
    oldest = store.oldest
    out = pb.StatResponse(
        messages=store.messages, not_preprocessed=q.not_preprocessed,
        recipients_by_state={STATE_NAMES[s]: max(n, 0) for s, n in store.by_state.items()},
        oldest_age_seconds=max(0.0, time.time() - oldest) if oldest is not None else 0.0,
        held_messages=store.held)
    for channel in ("local", "remote"):
        busy, limit = await in_progress(q, channel)
        setattr(out, f"{channel}_in_progress", busy)
        setattr(out, f"{channel}_limit", limit)
    return out


async def in_progress(q: Queue, channel: str) -> tuple[int, int]:
    """Jobs the workers of a channel hold, cluster-wide (their shared consumer's
    ack-pending), and its limit (max_ack_pending = concurrencylocal / concurrencyremote).
    (0, 0) when the consumer does not exist yet: no worker ever started."""
    try:
        info = await q.js.consumer_info(bus.JOBS_STREAM, bus.JOB_CONSUMER[channel],
                                        timeout=1.0)
    except Exception as exc:
        log.debug("job consumer info unavailable: %s", exc)
        return 0, 0
    return int(info.num_ack_pending or 0), int(info.config.max_ack_pending or 0)


def summary(m: Message, rcpts: list[Recipient]) -> pb.MessageSummary:
    out = pb.MessageSummary(queue_id=m.queue_id, sender=m.sender, size=m.size,
                            received_at=_ts(m.received_at), held=m.held)
    for r in rcpts:
        rs = out.recipients.add(address=r.address, state=enum(r.state),
                                channel=enum(r.channel), attempts=r.attempts,
                                last_reply=r.last_reply)
        if r.state in (2, 5) and r.next_attempt:  # deferred or held: when it is due
            rs.next_attempt.CopyFrom(_ts(r.next_attempt))
    return out


class BadList(ValueError):
    """A List request the queue cannot take: a page_token that is no queue id, a state it
    does not know (INVALID_ARGUMENT / 400)."""


async def listing(q: Queue, req: pb.ListRequest) -> pb.ListResponse:
    # the token is the last listed message's id: anything else listed nothing, an empty
    # queue to whoever mistyped it
    if req.page_token and not is_queue_id(req.page_token):
        raise BadList(f"page_token {req.page_token[:MAX_QUEUE_ID]!r} is not a "
                           "next_page_token of this listing (a queue id)")
    if req.state and req.state not in STATE_NAMES:  # it listed nothing
        raise BadList(f"state {req.state} is none of {sorted(STATE_NAMES)} (or 0: any)")
    size = min(req.page_size or 100, 1000)
    rows, token = await q.store.run(q.store.list, req.sender, req.recipient, req.domain,
                                    int(req.state), req.page_token, size)
    return answer_bound.page((summary(m, r) for m, r in rows), token)


async def explain(q: Queue, queue_id: str) -> pb.MessageDetail | None:
    m = await q.store.run(q.store.message, queue_id)
    if m is None:
        return None
    rcpts = await q.store.run(q.store.recipients, queue_id)
    detail = pb.MessageDetail(summary=summary(m, rcpts), spool_path=m.spool_path,
                              client_ip=m.client_ip, auth_user=m.auth_user)
    for r in rcpts:
        d = pb.RecipientDetail(address=r.address, state=enum(r.state), channel=enum(r.channel),
                               attempts=r.attempts, last_reply=r.last_reply,
                               enhanced_code=r.enhanced_code, route=r.route)
        if r.state in (2, 5) and r.next_attempt:  # deferred or held: when it is due
            d.next_attempt.CopyFrom(_ts(r.next_attempt))
        detail.recipients.append(d)
    answer_bound.bound(detail)
    return detail


class BadSelection(ValueError):
    """An action request naming nothing, or ids and --all at once."""


ACTIONS = ("retry", "hold", "release", "delete", "bounce")


async def act(q: Queue, action: str, req: pb.SelectRequest) -> pb.ActionResponse:
    """One operator action (gRPC and HTTP): on the named ids in queue, or on all; named ids
    not in queue are reported back. --all is the same for every action."""
    if req.all and req.queue_ids:
        raise BadSelection("name queue ids or --all, not both")
    if not req.all and not req.queue_ids:
        raise BadSelection("name queue ids (or --all)")
    store, now = q.store, time.time()
    ids = await store.run(store.select_ids, list(req.queue_ids), req.all)
    found = set(ids)
    unknown = [i for i in req.queue_ids if i not in found]
    n = 0
    if action == "retry":
        await lost.requeue(q)  # a job purged from JetStream is dispatched again too
        n = await store.run(store.retry_now, ids, req.recipient, now)
        q.wake.set()
    elif action in ("hold", "release"):
        n = await store.run(store.set_held, ids, action == "hold", now)
        q.wake.set()
    elif action == "delete":
        for qid in ids:
            m = await store.run(store.message, qid)
            if m is not None:
                n += len(await store.run(store.recipients, qid))
                log.warning("deleted by the operator", extra={"queue_id": qid})
                q.history.step(qid, "deleted", "deleted by the operator, no bounce")
                await complete(q, m)
    elif action == "bounce":
        n = await store.run(store.fail_now, ids, req.recipient, OPERATOR_BOUNCE)
        for qid in ids:
            await settle(q, qid)
    else:
        raise BadSelection(f"unknown action {action!r}")
    return pb.ActionResponse(messages=len(ids), recipients=n, unknown_ids=unknown)


class QueueAdmin(queue_pb2_grpc.QueueServiceServicer):
    def __init__(self, runtime: Runtime, streams: live.Streams) -> None:
        self.rt = runtime
        self.streams = streams  # Watch's, shared with history's Follow

    async def _queue(self, context: grpc.aio.ServicerContext) -> Queue:
        if self.rt.queue is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                "standby: this queue process is not the leader")
        assert self.rt.queue is not None
        return self.rt.queue

    async def Stat(self, request: pb.StatRequest,
                   context: grpc.aio.ServicerContext) -> pb.StatResponse:
        return await stat(await self._queue(context))

    async def List(self, request: pb.ListRequest,
                   context: grpc.aio.ServicerContext) -> pb.ListResponse:
        q = await self._queue(context)
        try:
            return await listing(q, request)
        except BadList as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise

    async def Explain(self, request: pb.ExplainRequest,
                      context: grpc.aio.ServicerContext) -> pb.MessageDetail:
        detail = await explain(await self._queue(context), request.queue_id)
        if detail is None:
            # cut: a client drops a status with more than 16 KiB of details
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"{request.queue_id[:MAX_QUEUE_ID]} not in queue")
        assert detail is not None
        return detail

    async def _act(self, action: str, request: pb.SelectRequest,
                   context: grpc.aio.ServicerContext) -> pb.ActionResponse:
        q = await self._queue(context)
        try:
            return await act(q, action, request)
        except BadSelection as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise

    async def Retry(self, request: pb.SelectRequest,
                    context: grpc.aio.ServicerContext) -> pb.ActionResponse:
        return await self._act("retry", request, context)

    async def Hold(self, request: pb.SelectRequest,
                   context: grpc.aio.ServicerContext) -> pb.ActionResponse:
        return await self._act("hold", request, context)

    async def Release(self, request: pb.SelectRequest,
                      context: grpc.aio.ServicerContext) -> pb.ActionResponse:
        return await self._act("release", request, context)

    async def Delete(self, request: pb.SelectRequest,
                     context: grpc.aio.ServicerContext) -> pb.ActionResponse:
        return await self._act("delete", request, context)

    async def Bounce(self, request: pb.SelectRequest,
                     context: grpc.aio.ServicerContext) -> pb.ActionResponse:
        return await self._act("bounce", request, context)

    async def Fsck(self, request: pb.FsckRequest,
                   context: grpc.aio.ServicerContext) -> pb.FsckResponse:
        await self._queue(context)
        assert self.rt.reconciler is not None
        report = await self.rt.reconciler.run(dry_run=request.dry_run)
        return pb.FsckResponse(
            repairs=[pb.Repair(kind=r.kind, queue_id=r.queue_id, action=r.action,
                               detail=r.detail) for r in report.repairs],
            checked_files=report.checked_files, checked_messages=report.checked_messages)

    async def Watch(self, request: pb.WatchRequest,
                    context: grpc.aio.ServicerContext) -> AsyncIterator[pb.DeliveryEvent]:
        q = await self._queue(context)
        try:
            subscription = self.streams.subscribe(q.nc, bus.EVENTS_SUBJECT)
        except live.TooMany as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
            raise
        async with subscription as sub:
            while True:
                data = await sub.get()
                if isinstance(data, live.Gap):
                    yield pb.DeliveryEvent(at=_ts(data.at), kind=live.DROPPED,
                                           reply=live.DROPPED_TEXT)
                    continue
                try:
                    batch = pb.DeliveryEvents.FromString(data)
                except DecodeError:  # not ours: the subject is open to every bus client
                    continue
                for ev in batch.events:
                    yield ev
