"""Batches from a durable pull consumer: the queue's pulls from its own consumers (todo,
results).

nats-py's fetch waits for every message with an asyncio.wait_for on its subscription's
queue and sends a no_wait probe first: fetching and acking 20,000 messages cost its
client about 21 us a message, against 6.5 here (docs/architecture.md, "Where the time
goes"). Here each puller has one inbox, and each pull request a reply subject of its own
under it (a counter as token); the subscription's callback collects the messages and
wakes the fetch when the batch is full or the status that ends the request comes (404,
408, 409). A message that arrives for an earlier request (whose fetch had given up) is
kept for the next batch: it was delivered to us and awaits its ack. Earlier requests'
statuses are ignored.
"""

from __future__ import annotations

import asyncio
import json

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import ServiceUnavailableError

BUSY_WAIT = 0.02  # seconds a multi-message pull may wait when nothing was waiting after all
LOST_AFTER = 2.0  # seconds past its expiry a request is taken for lost (nats-server
                  # restarted, the connection dropped: no status will end it)


def consumer_gone(status: str, description: str) -> bool:
    """Whether a status that ended a pull request says the consumer is gone: 503 (nobody
    answers for it: it, or its stream, was deleted) or a 409 "Consumer Deleted"; other
    409s (leadership moved, too many waiting requests) only end the request."""
    return status == "503" or "deleted" in description.lower()


class BatchPull:
    def __init__(self, nc: NATS, stream: str, durable: str) -> None:
        self.nc = nc
        self.next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self.prefix = ""
        self._sub: Subscription | None = None
        self._count = 0
        self._current = ""          # the token of the request being waited for
        self._got: list[Msg] = []   # delivered, not handed out yet
        self._want = 0
        self._waiter: asyncio.Future[None] | None = None
        self._ended: tuple[str, str] = ("", "")  # the status that ended it, its description

    async def start(self) -> None:
        self.prefix = self.nc.new_inbox() + "."
        self._sub = await self.nc.subscribe(self.prefix + "*", cb=self._arrived)

    async def stop(self) -> None:
        """No interest in the inbox any more: nats-server drops the open request."""
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def fetch(self, batch: int, wait: float) -> list[Msg]:
        """Up to `batch` messages: as soon as that many came, else when the request ends
        (nats-server ends it after `wait` seconds) with what came. TimeoutError when none
        came; ServiceUnavailableError when nobody answers for the consumer (it, or its
        stream, was deleted)."""
        if len(self._got) < batch:
            loop = asyncio.get_running_loop()
            self._count += 1
            self._current = token = str(self._count)
            self._want, self._ended = batch, ("", "")
            self._waiter = waiter = loop.create_future()
            request = {"batch": batch - len(self._got), "expires": int(wait * 1e9)}
            await self.nc.publish(self.next, json.dumps(request).encode(),
                                  reply=self.prefix + token)
            timer = loop.call_later(wait + LOST_AFTER, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter, self._current = None, ""
        got, self._got = self._got[:batch], self._got[batch:]
        if got:
            return got
        if consumer_gone(*self._ended):
            raise ServiceUnavailableError(description=" ".join(self._ended))
        raise TimeoutError

    async def _arrived(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if status is None:
            self._got.append(msg)
            if len(self._got) >= self._want and self._waiter is not None:
                _wake(self._waiter)
        elif status != "100" and msg.subject[len(self.prefix):] == self._current:
            assert msg.headers is not None
            self._ended = (status, str(msg.headers.get("Description", "")))
            if self._waiter is not None:
                _wake(self._waiter)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def pull(puller: BatchPull, batch: int, *, busy: bool, idle_wait: float,
               busy_wait: float = BUSY_WAIT) -> list[Msg]:
    """One fetch, sized to the load. Idle (the last pull brought nothing): one message,
    waiting up to `idle_wait`; it returns the moment one arrives. Busy: up to `batch`,
    gathered for at most `busy_wait` (a longer wait makes bigger batches under load).
    Raises TimeoutError when nothing came."""
    if busy and batch > 1:
        return await puller.fetch(batch, busy_wait)
    return await puller.fetch(1, idle_wait)
