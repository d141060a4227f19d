"""Searching the history (mailyard.history.v1.History, `mailyard log`, GET /api/history).

By id: the message's own subject. By address: its index subject gives the queue ids (newest
`limit`), then each message's subject, read concurrently. Both are batched direct gets
(`$JS.API.DIRECT.GET`, nats-server >= 2.11): one request answers every record of one subject
(the server jumps to it through its per-subject index), so an address search costs one
request for the index plus one per message, with no consumer to create and delete; it
used to be a consumer for the index and one direct get per step of each message.
By time only: the messages' subjects from `since` on, through an ephemeral, ack-less,
in-memory consumer (JetStream finds the start by time). Any queue process answers (leader
or not).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
from collections.abc import AsyncIterator, Callable

import grpc
import nats.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from mailyard.api.history.v1 import history_pb2 as pb
from mailyard.api.history.v1 import history_pb2_grpc
from mailyard.core import bus
from mailyard.queue.history import NULL_SENDER, addr_subject, address_key, msg_subject

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
READERS = 32          # messages read at once for an address search
FETCH = 1000
MAX_STEPS = 1000     # of one message (a message retried for 30 days has ~100)
MAX_REFS = 1_000_000  # index records of one address read for a search (oldest first)


class BadRequest(ValueError):
    """A search that cannot be answered (INVALID_ARGUMENT / HTTP 400)."""


async def read_subject(js: JetStreamContext, subject: str, since: float = 0.0,
                       max_msgs: int = 0,
                       enough: Callable[[list[bytes]], bool] | None = None) -> list[bytes]:
    """Payloads stored on `subject` (from `since`, a Unix time), oldest first; at most
    `max_msgs` (0 = all) of the newest when more are stored. `enough(read so far)` ends
    the read early (checked after each fetch of up to FETCH messages)."""
    config = ConsumerConfig(
        ack_policy=AckPolicy.NONE, inactive_threshold=30.0, mem_storage=True,
        num_replicas=1, deliver_policy=DeliverPolicy.ALL, max_waiting=1)
    if since > 0:
        config.deliver_policy = DeliverPolicy.BY_START_TIME
        config.opt_start_time = datetime.datetime.fromtimestamp(since, datetime.UTC)
    try:
        sub = await js.pull_subscribe(subject, stream=bus.HISTORY_STREAM, config=config)
    except nats.js.errors.NotFoundError:
        return []  # no stream yet: nothing recorded
    out: list[bytes] = []
    try:
        pending = int((await sub.consumer_info()).num_pending or 0)
        while len(out) < pending:
            try:
                msgs = await sub.fetch(min(FETCH, pending - len(out)), timeout=5)
            except (TimeoutError, nats.errors.TimeoutError):
                break
            out.extend(m.data for m in msgs)
            if enough is not None and enough(out):
                break
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        with contextlib.suppress(Exception):
            await js.delete_consumer(bus.HISTORY_STREAM, config.name or "")
    return out[-max_msgs:] if max_msgs else out


def _decode(data: bytes) -> pb.HistoryEvent | None:
    try:
        return pb.HistoryEvent.FromString(data)
    except Exception:
        return None


def _seconds(ts: object) -> float:
    return ts.ToNanoseconds() / 1e9 if ts.ByteSize() else 0.0  # type: ignore[attr-defined]


def check(req: pb.SearchRequest) -> int:
    """The effective message limit, or BadRequest."""
    if req.queue_id and not all(c.isalnum() for c in req.queue_id):
        raise BadRequest(f"not a queue id: {req.queue_id!r}")
    if len(req.address) > 1000:
        raise BadRequest("address too long")
    if req.limit > MAX_LIMIT:
        raise BadRequest(f"limit is at most {MAX_LIMIT}")
    return req.limit or DEFAULT_LIMIT


async def read_batch(js: JetStreamContext, subject: str, since: float = 0.0,
                     max_msgs: int = MAX_STEPS * 10) -> list[bytes]:
    """Payloads stored on the literal `subject` (from `since`, a Unix time), oldest first,
    at most `max_msgs`, by batched direct gets of FETCH records each."""
    nc = js._nc  # the direct-get API answers a batch as several messages to one inbox
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    out: list[bytes] = []
    request: dict[str, object] = {"next_by_subj": subject}
    if since > 0:
        request["start_time"] = datetime.datetime.fromtimestamp(
            since, datetime.UTC).isoformat().replace("+00:00", "Z")
    else:
        request["seq"] = 1
    try:
        while len(out) < max_msgs:
            request["batch"] = min(FETCH, max_msgs - len(out))
            await nc.publish(f"$JS.API.DIRECT.GET.{bus.HISTORY_STREAM}",
                             json.dumps(request).encode(), reply=inbox)
            last, pending = 0, 0
            while True:
                msg = await sub.next_msg(timeout=5)
                headers = msg.headers or {}
                status = headers.get("Status")
                if status is None:
                    out.append(msg.data)
                    last = int(headers.get("Nats-Sequence", last))
                    continue
                if status == "204":  # end of this batch
                    pending = int(headers.get("Nats-Num-Pending", 0) or 0)
                break  # 404: nothing (more) stored; 503: no stream yet
            if not pending or not last:
                break
            request.pop("start_time", None)
            request["seq"] = last + 1
    except nats.errors.TimeoutError:
        pass  # an answer cut short: what arrived is what we know
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return out


async def _message(js: JetStreamContext, queue_id: str) -> list[pb.HistoryEvent]:
    """One message's steps (one batched direct get)."""
    decoded = map(_decode, await read_batch(js, msg_subject(queue_id), max_msgs=MAX_STEPS))
    return [e for e in decoded if e is not None]


async def search(js: JetStreamContext, req: pb.SearchRequest) -> pb.SearchResponse:
    limit = check(req)
    since, until = _seconds(req.since), _seconds(req.until)
    if req.queue_id:
        events = await _message(js, req.queue_id)
        if req.address and not any(_concerns(e, req.address) for e in events):
            events = []
        return pb.SearchResponse(events=events)
    if req.address:
        ids: dict[str, None] = {}
        for data in await read_batch(js, addr_subject(req.address), since,
                                     max_msgs=MAX_REFS):
            ref = pb.AddressRef.FromString(data)
            if not until or _seconds(ref.at) <= until:
                ids[ref.queue_id] = None
        chosen = list(ids)[-limit:]
        gate = asyncio.Semaphore(READERS)

        async def one(qid: str) -> list[pb.HistoryEvent]:
            async with gate:
                return await _message(js, qid)

        events = [e for batch in await asyncio.gather(*map(one, chosen)) for e in batch]
        return pb.SearchResponse(events=events, truncated=len(ids) > len(chosen))
    # By time: every message's steps from `since` (default: the last hour).
    start = since or (datetime.datetime.now(datetime.UTC).timestamp() - 3600)

    def enough(read: list[bytes]) -> bool:  # more than `limit` messages seen: stop reading
        return len({e.queue_id for e in map(_decode, read) if e}) > limit

    raw = await read_subject(js, msg_subject("*"), start, enough=enough)
    seen: dict[str, None] = {}
    out: list[pb.HistoryEvent] = []
    truncated = False
    for event in map(_decode, raw):
        if event is None or (until and _seconds(event.at) > until):
            continue
        if event.queue_id not in seen:
            if len(seen) >= limit:
                truncated = True
                continue
            seen[event.queue_id] = None
        out.append(event)
    return pb.SearchResponse(events=out, truncated=truncated)


def _concerns(event: pb.HistoryEvent, address: str) -> bool:
    key = address_key(address)
    return any(address_key(a) == key for a in
               (event.sender or NULL_SENDER if event.kind == "new" else "",
                event.recipient, *event.recipients) if a)


def matches(event: pb.HistoryEvent, req: pb.SearchRequest,
            followed: set[str]) -> bool:
    """Follow's filter: a message is followed from its `new` event on when it concerns the
    address; steps of followed messages pass."""
    if req.queue_id:
        return event.queue_id == req.queue_id
    if not req.address:
        return True
    if event.queue_id in followed or _concerns(event, req.address):
        followed.add(event.queue_id)
        return True
    return False


class HistoryService(history_pb2_grpc.HistoryServicer):
    def __init__(self, nc: object, js: JetStreamContext) -> None:
        self.nc = nc
        self.js = js

    async def Search(self, request: pb.SearchRequest,
                     context: grpc.aio.ServicerContext) -> pb.SearchResponse:
        try:
            return await search(self.js, request)
        except BadRequest as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise

    async def Follow(self, request: pb.SearchRequest,
                     context: grpc.aio.ServicerContext) -> AsyncIterator[pb.HistoryEvent]:
        try:
            check(request)
        except BadRequest as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        async for event in follow(self.nc, request):
            yield event


async def follow(nc: object, req: pb.SearchRequest) -> AsyncIterator[pb.HistoryEvent]:
    """New events as the queue records them (the stream's subjects, on core NATS)."""
    inbox: asyncio.Queue[bytes] = asyncio.Queue(maxsize=10_000)

    async def on_msg(msg: object) -> None:
        if not inbox.full():  # a slow reader misses events rather than grow memory
            inbox.put_nowait(msg.data)  # type: ignore[attr-defined]

    subject = msg_subject(req.queue_id or "*")
    sub = await nc.subscribe(subject, cb=on_msg)  # type: ignore[attr-defined]
    followed: set[str] = set()
    try:
        while True:
            event = _decode(await inbox.get())
            if event is not None and matches(event, req, followed):
                yield event
    finally:
        await sub.unsubscribe()
