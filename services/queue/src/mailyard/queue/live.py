"""What a live stream's client has not read yet (Watch: `mailyard queue watch`; Follow:
`mailyard log -f`): the messages of one core NATS subscription, bounded in bytes.

A client that reads slower than events come, or not at all once gRPC's flow-control window
is full, misses what does not fit rather than the queue's memory grows with it: a bound by
count alone (10,000) let one stalled watcher hold gigabytes, a message of DeliveryEvents
being a batch of up to max_payload (1 MiB). Where messages were dropped the reader gets one
Gap, so the stream can tell its client (a `dropped` event) instead of skipping in silence.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

DROPPED = "dropped"  # the kind of the event a stream sends where it dropped some
DROPPED_TEXT = "events were dropped here: the client read too slowly"
TOO_MANY_TEXT = "too many live streams on this queue process ({limit}, LIVE_STREAMS)"
MAX_MESSAGES = 10_000  # empty messages weigh nothing in bytes, but each is an object


class TooMany(Exception):
    """LIVE_STREAMS streams are open already (RESOURCE_EXHAUSTED)."""


class Streams:
    """This process's live streams: at most `limit` at once, each with at most `max_bytes`
    unread. Each is a subscription of the queue's own NATS connection that gets every event,
    so nats-server sends that connection each event once per stream: 2,000 Watch calls (one
    client, under MAX_RPCS) made it close the connection as a slow consumer at the first
    burst of events, and with it the leader's work."""

    def __init__(self, limit: int, max_bytes: int) -> None:
        self.limit, self.max_bytes = limit, max_bytes
        self.open = 0

    def subscribe(self, nc: Any, subject: str) -> Subscription:
        """A stream's subscription (`async with` it), or TooMany."""
        if self.open >= self.limit:
            raise TooMany(TOO_MANY_TEXT.format(limit=self.limit))
        self.open += 1  # given back when the subscription ends
        return Subscription(nc, subject, self.max_bytes, self)


@dataclass(frozen=True)
class Gap:
    """Messages dropped here, the first of them at `at` (a Unix time)."""

    at: float


class Subscription:
    """`async with streams.subscribe(nc, subject) as sub:` then `await sub.get()`."""

    def __init__(self, nc: Any, subject: str, max_bytes: int, streams: Streams) -> None:
        self.nc, self.subject, self.max_bytes, self.streams = nc, subject, max_bytes, streams
        self.inbox: asyncio.Queue[bytes | Gap] = asyncio.Queue()
        self.size = 0        # bytes in the inbox
        self.gap = False     # the inbox ends with a Gap: a drop now is part of it
        self.sub: Any = None

    async def __aenter__(self) -> Subscription:
        try:
            self.sub = await self.nc.subscribe(self.subject, cb=self._arrived)
        except BaseException:
            self.streams.open -= 1
            raise
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.streams.open -= 1
        await self.sub.unsubscribe()

    async def _arrived(self, msg: Any) -> None:
        data: bytes = msg.data
        if self.size + len(data) > self.max_bytes or self.inbox.qsize() >= MAX_MESSAGES:
            if not self.gap:
                self.inbox.put_nowait(Gap(time.time()))
                self.gap = True
            return
        self.inbox.put_nowait(data)
        self.size += len(data)
        self.gap = False

    async def get(self) -> bytes | Gap:
        """The next message, or a Gap where some were dropped."""
        item = await self.inbox.get()
        if isinstance(item, bytes):
            self.size -= len(item)
        elif self.inbox.empty():
            self.gap = False  # that gap was read: the next drop is another one
        return item
