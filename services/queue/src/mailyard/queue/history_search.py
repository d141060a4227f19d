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

Those are the stream's reads (StreamSource). Each queue process also keeps the same records
in a local index clustered for these queries (history_index.py, fed by history_feed.py),
which answers (IndexSource) whenever it holds what the stream holds at the time of the
query: a cold stream makes a busy sender's first search load every block of the stream.
Both sources go through the same `answer`, so the reply does not depend on which one did.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import sqlite3
from collections.abc import AsyncGenerator, AsyncIterator

import grpc
import nats.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from mailyard.api.history.v1 import history_pb2 as pb
from mailyard.api.history.v1 import history_pb2_grpc
from mailyard.core import bus
from mailyard.queue import answer_bound, live, metrics
from mailyard.queue.history import addr_subject, address_key, concerned, msg_subject
from mailyard.queue.history_feed import HistoryFeed, decode_event, stream_id
from mailyard.queue.history_index import HistoryIndex

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
READERS = 32          # messages read at once for an address search
FETCH = 1000
MAX_STEPS = 1000     # of one message (a message retried for 30 days has ~100)
MAX_REFS = 1_000_000  # index records of one address read for a search (oldest first)
# A queue id is 26 characters. Follow subscribes to its subject on the queue's own NATS
# connection: a SUB line past nats-server's max_control_line (4 KiB) closes that connection.
MAX_QUEUE_ID = 64
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


class BadRequest(ValueError):
    """A search that cannot be answered (INVALID_ARGUMENT / HTTP 400)."""


async def read_chunks(js: JetStreamContext, subject: str,
                      since: float = 0.0) -> AsyncGenerator[list[bytes]]:
    """Payloads stored on `subject` (a wildcard may be in it) from `since` (a Unix time),
    oldest first, a fetch of up to FETCH at a time, through an ephemeral ack-less consumer
    (deleted when the caller stops reading)."""
    config = ConsumerConfig(
        ack_policy=AckPolicy.NONE, inactive_threshold=30.0, mem_storage=True,
        num_replicas=1, deliver_policy=DeliverPolicy.ALL, max_waiting=1)
    if since > 0:
        config.deliver_policy = DeliverPolicy.BY_START_TIME
        config.opt_start_time = datetime.datetime.fromtimestamp(since, datetime.UTC)
    try:
        sub = await js.pull_subscribe(subject, stream=bus.HISTORY_STREAM, config=config)
    except nats.js.errors.NotFoundError:
        return  # no stream yet: nothing recorded
    try:
        pending = int((await sub.consumer_info()).num_pending or 0)
        while pending > 0:
            try:
                msgs = await sub.fetch(min(FETCH, pending), timeout=5)
            except (TimeoutError, nats.errors.TimeoutError):
                break
            pending -= len(msgs)
            yield [m.data for m in msgs]
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        with contextlib.suppress(Exception):
            await js.delete_consumer(bus.HISTORY_STREAM, config.name or "")


def decode_ref(data: bytes) -> pb.AddressRef | None:
    try:
        return pb.AddressRef.FromString(data)
    except Exception:
        return None


def _seconds(ts: object) -> float:
    return ts.ToNanoseconds() / 1e9 if ts.ByteSize() else 0.0  # type: ignore[attr-defined]


def check(req: pb.SearchRequest) -> int:
    """The effective message limit, or BadRequest."""
    if req.queue_id and (len(req.queue_id) > MAX_QUEUE_ID
                         or not all(c.isalnum() for c in req.queue_id)):
        raise BadRequest(f"not a queue id: {req.queue_id[:MAX_QUEUE_ID]!r}")
    if len(req.address) > 1000:
        raise BadRequest("address too long")
    if req.limit > MAX_LIMIT:
        raise BadRequest(f"limit is at most {MAX_LIMIT}")
    for name in ("since", "until"):
        try:  # a Timestamp off the wire is unchecked; reading one past 9999 raises
            getattr(req, name).ToNanoseconds()
        except ValueError:
            raise BadRequest(f"{name} is outside the years 1 to 9999") from None
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


class StreamSource:
    """The records as MAIL_HISTORY serves them (always complete; slow when cold)."""

    def __init__(self, js: JetStreamContext) -> None:
        self.js = js

    async def message(self, queue_id: str) -> list[bytes]:
        """One message's steps (one batched direct get)."""
        return await read_batch(self.js, msg_subject(queue_id), max_msgs=MAX_STEPS)

    async def refs(self, address: str, since: float) -> list[tuple[str, float]]:
        """(queue id, time) of the address's references stored from `since` on."""
        out = []
        for data in await read_batch(self.js, addr_subject(address), since,
                                     max_msgs=MAX_REFS):
            ref = decode_ref(data)
            if ref is not None:
                out.append((ref.queue_id, _seconds(ref.at)))
        return out

    def steps(self, since: float) -> AsyncGenerator[list[bytes]]:
        """Every message's steps stored from `since` on, in stream order, a fetch at a
        time (the caller stops reading when it has enough)."""
        return read_chunks(self.js, msg_subject("*"), since)


class IndexSource:
    """The same records from the local index (history_index.py), bounded to the stream's
    seqs [first, last] at the time of the query: what the stream held then."""

    def __init__(self, index: HistoryIndex, first: int, last: int) -> None:
        self.index, self.first, self.last = index, first, last

    async def message(self, queue_id: str) -> list[bytes]:
        return await self.index.run(self.index.message, queue_id, self.first, self.last,
                                    MAX_STEPS)

    async def refs(self, address: str, since: float) -> list[tuple[str, float]]:
        rows = await self.index.run(self.index.refs, address_key(address), _ns(since),
                                    self.first, self.last, MAX_REFS)
        return [(qid, at / 1e9) for qid, at in rows]

    async def steps(self, since: float) -> AsyncGenerator[list[bytes]]:
        after = (_ns(since), -1)
        while True:
            rows = await self.index.run(self.index.by_time, after, self.first, self.last,
                                        FETCH)
            if not rows:
                return
            yield [r[2] for r in rows]
            after = (rows[-1][0], rows[-1][1])


Source = StreamSource | IndexSource


def _ns(since: float) -> int:
    """A start time as JetStream compares it: to the microsecond, as read_batch and
    read_chunks send it (the same rounding, so both sources start at the same record)."""
    if since <= 0:
        return 0
    when = datetime.datetime.fromtimestamp(since, datetime.UTC)
    return (when - EPOCH) // datetime.timedelta(microseconds=1) * 1000


async def _message(source: Source, queue_id: str) -> list[pb.HistoryEvent]:
    decoded = map(decode_event, await source.message(queue_id))
    return [e for e in decoded if e is not None]


async def choose(js: JetStreamContext, feed: HistoryFeed | None, wait: float) -> Source:
    """The index when it holds everything the stream holds now (waiting up to `wait` for
    it to get there), else the stream itself."""
    if feed is not None:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            info = await js.stream_info(bus.HISTORY_STREAM)
            if await feed.caught_up(stream_id(info), info.state.last_seq, wait):
                metrics.HISTORY_SEARCHES.labels("index").inc()
                return IndexSource(feed.index, info.state.first_seq, info.state.last_seq)
    metrics.HISTORY_SEARCHES.labels("stream").inc()
    return StreamSource(js)


async def search(js: JetStreamContext, req: pb.SearchRequest, feed: HistoryFeed | None = None,
                 wait: float = 1.0) -> pb.SearchResponse:
    """Answer a search from the index if it has caught up, else from the stream; the
    answer is the same either way (tests/test_history_index.py compares them)."""
    limit = check(req)
    source = await choose(js, feed, wait)
    if feed is None or isinstance(source, StreamSource):
        return await answer(source, req, limit)
    try:
        return await answer(source, req, limit)
    except sqlite3.Error as exc:  # a page damaged under the open file, an I/O error
        if not isinstance(exc, sqlite3.OperationalError):
            feed.damaged(exc)  # damage: the feed starts the index over
        metrics.HISTORY_SEARCHES.labels("stream").inc()
        return await answer(StreamSource(js), req, limit)


async def answer(source: Source, req: pb.SearchRequest, limit: int) -> pb.SearchResponse:
    resp = await _answer(source, req, limit)
    answer_bound.history(resp)  # every attempt's reply is there: a bounded answer
    return resp


async def _answer(source: Source, req: pb.SearchRequest, limit: int) -> pb.SearchResponse:
    since, until = _seconds(req.since), _seconds(req.until)
    if req.queue_id:
        events = await _message(source, req.queue_id)
        if req.address and not any(_concerns(e, req.address) for e in events):
            events = []
        return pb.SearchResponse(events=events)
    if req.address:
        ids: dict[str, None] = {}
        for queue_id, at in await source.refs(req.address, since):
            if not until or at <= until:
                ids[queue_id] = None
        chosen = list(ids)[-limit:]
        gate = asyncio.Semaphore(READERS)

        async def one(qid: str) -> list[pb.HistoryEvent]:
            async with gate:
                return await _message(source, qid)

        events = [e for batch in await asyncio.gather(*map(one, chosen)) for e in batch]
        return pb.SearchResponse(events=events, truncated=len(ids) > len(chosen))
    # By time: the log from `since` (default: the last hour) in stream order, until a step
    # recorded after `until` or the first step of the (limit+1)-th message: a window that
    # does not depend on how the records were fetched, so both sources give the same one.
    start = since or (datetime.datetime.now(datetime.UTC).timestamp() - 3600)
    seen: dict[str, None] = {}
    out: list[pb.HistoryEvent] = []
    async with contextlib.aclosing(source.steps(start)) as chunks:
        async for chunk in chunks:
            for event in map(decode_event, chunk):
                if event is None:
                    continue
                if until and _seconds(event.at) > until:
                    return pb.SearchResponse(events=out)
                if event.queue_id not in seen:
                    if len(seen) >= limit:
                        return pb.SearchResponse(events=out, truncated=True)
                    seen[event.queue_id] = None
                out.append(event)
    return pb.SearchResponse(events=out)


def _concerns(event: pb.HistoryEvent, address: str) -> bool:
    key = address_key(address)
    return any(address_key(a) == key for a in (*concerned(event), event.recipient) if a)


def matches(event: pb.HistoryEvent, req: pb.SearchRequest,
            followed: set[str]) -> bool:
    """Follow's filter: a message is followed from its `new` event on when it concerns the
    address, until its `done` (its last step: forgotten then, or `followed` grew for as
    long as the stream was open); steps of followed messages pass."""
    if req.queue_id:
        return event.queue_id == req.queue_id
    if not req.address:
        return True
    if event.queue_id in followed or _concerns(event, req.address):
        if event.kind == "done":
            followed.discard(event.queue_id)
        else:
            followed.add(event.queue_id)
        return True
    return False


class HistoryService(history_pb2_grpc.HistoryServicer):
    def __init__(self, nc: object, js: JetStreamContext, streams: live.Streams,
                 feed: HistoryFeed | None = None, wait: float = 1.0) -> None:
        self.nc = nc
        self.js = js
        self.streams = streams  # Follow's, shared with the queue's Watch
        self.feed = feed
        self.wait = wait

    async def Search(self, request: pb.SearchRequest,
                     context: grpc.aio.ServicerContext) -> pb.SearchResponse:
        try:
            return await search(self.js, request, self.feed, self.wait)
        except BadRequest as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise

    async def Follow(self, request: pb.SearchRequest,
                     context: grpc.aio.ServicerContext) -> AsyncIterator[pb.HistoryEvent]:
        try:
            check(request)
        except BadRequest as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            subscription = self.streams.subscribe(self.nc, msg_subject(request.queue_id
                                                                       or "*"))
        except live.TooMany as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
            raise
        # closed with this call, not when collected: the subscription holds a stream's place
        async with contextlib.aclosing(follow(subscription, request)) as events:
            async for event in events:
                yield event


async def follow(subscription: live.Subscription,
                 req: pb.SearchRequest) -> AsyncGenerator[pb.HistoryEvent]:
    """New events as the queue records them (the stream's subjects, on core NATS), and a
    `dropped` event where some were missed (live.py)."""
    followed: set[str] = set()
    async with subscription as sub:
        while True:
            data = await sub.get()
            if isinstance(data, live.Gap):
                gap = pb.HistoryEvent(kind=live.DROPPED, detail=live.DROPPED_TEXT)
                gap.at.FromNanoseconds(int(data.at * 1e9))
                yield gap
                continue
            event = decode_event(data)
            if event is not None and matches(event, req, followed):
                yield event
