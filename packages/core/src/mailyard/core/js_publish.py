"""JetStream publishes with their acks, through one reply inbox per NATS connection.

nats-py's `js.publish` is a request: a reply token from os.urandom, a future, an
asyncio.wait_for (a timer and a wrapper per publish), and on the ack a JSON parse and a
PubAck dataclass built by introspecting its fields. That cost the client about 24 us a
publish, twice this one's 12 (scripts in docs/architecture.md, "Where the time goes"), and
every message is published twice on its way (its todo notice, its result). Here:

- one wildcard subscription per connection for every ack (made on the first publish;
  nats-py subscribes it again after a reconnect), a counter for the reply token;
- a timer handle per publish instead of wait_for;
- the ack is only looked at for an error (a PubAck never holds `"error"`; only then it is
  parsed), since no caller uses its sequence.

Errors are nats-py's own, so callers handle them as before: NoStreamResponseError when no
stream takes the subject (a 503 status), APIError for an error reply, TimeoutError when no
ack came in time.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.errors import APIError, NoStreamResponseError

_publishers: weakref.WeakKeyDictionary[NATS, Publisher] = weakref.WeakKeyDictionary()


class Publisher:
    """The acks of one connection's JetStream publishes."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self.prefix = ""
        self.pending: dict[str, asyncio.Future[None]] = {}
        self._count = 0
        self._starting = asyncio.Lock()

    async def _start(self) -> None:
        async with self._starting:  # one subscription, however many publish at once
            if not self.prefix:
                prefix = self.nc.new_inbox() + "."
                await self.nc.subscribe(prefix + "*", cb=self._ack)
                self.prefix = prefix

    async def send(self, subject: str, data: bytes,
                   headers: dict[str, str] | None = None) -> asyncio.Future[None]:
        """Publish; the future is done when JetStream acked (or refused) it. A caller that
        gives up must cancel it (`publish` does), or its entry stays until then."""
        if not self.prefix:
            await self._start()
        self._count += 1
        token = str(self._count)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending[token] = future
        future.add_done_callback(lambda _: self.pending.pop(token, None))
        try:
            await self.nc.publish(subject, data, reply=self.prefix + token, headers=headers)
        except BaseException:
            future.cancel()
            raise
        return future

    async def publish(self, subject: str, data: bytes, headers: dict[str, str] | None = None,
                      timeout: float = 5.0) -> None:
        """Publish and wait for the ack. Raises TimeoutError, NoStreamResponseError, APIError
        or what nats-py's publish raises (a closed connection, a payload too big)."""
        future = await self.send(subject, data, headers)
        timer = asyncio.get_running_loop().call_later(timeout, _expire, future)
        try:
            await future
        finally:
            timer.cancel()

    async def _ack(self, msg: Msg) -> None:
        future = self.pending.get(msg.subject[len(self.prefix):])
        if future is None or future.done():
            return  # an ack after its publish gave up
        if msg.headers and msg.headers.get("Status") == "503":
            future.set_exception(NoStreamResponseError())
        elif b'"error"' in msg.data:
            future.set_exception(_api_error(msg.data))
        else:
            future.set_result(None)


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


def _api_error(data: bytes) -> APIError:
    """The error reply as nats-py's exception for it (from_error raises it)."""
    try:
        error: Any = json.loads(data)["error"]
        APIError.from_error(error)
    except APIError as exc:
        return exc
    except Exception:
        pass
    return APIError(description=data[:200].decode(errors="replace"))


def publisher(nc: NATS) -> Publisher:
    """The connection's publisher (made on first use)."""
    found = _publishers.get(nc)
    if found is None:
        found = _publishers[nc] = Publisher(nc)
    return found
