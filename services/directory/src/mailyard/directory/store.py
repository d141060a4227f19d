"""Writes to a JetStream KV bucket with revision CAS: two directory replicas never lose an
update, because each write names the revision it was computed from and JetStream refuses it
(Nats-Expected-Last-Subject-Sequence) when another write came in between; then we re-read
and recompute.

Also gives read-your-writes on the service's own KVView: after a write, wait until the
view's watch has seen that revision, so a listing right after a change shows it.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from mailyard.core.errors import BusError
from mailyard.core.kvview import KVView
from mailyard.directory.errors import invalid

log = logging.getLogger(__name__)

_OP = "KV-Operation"
_EXPECT = "Nats-Expected-Last-Subject-Sequence"
_WRONG_LAST = (10071, 10164)  # JSStreamWrongLastSequence(Constant)Err
ATTEMPTS = 50


def _header_size(headers: dict[str, str]) -> int:
    """Bytes of the header block nats-py sends: NATS/1.0, "key: value" lines, a blank line."""
    return len("NATS/1.0\r\n") + sum(len(k) + len(v) + 4 for k, v in headers.items()) + 2


class Conflict(Exception):
    """Another writer changed the key since we read it."""


@dataclass(frozen=True)
class Current:
    key: str
    value: bytes | None          # None: absent or deleted
    revision: int                # 0: never written; else the last message (even a delete)
    updated_at: datetime.datetime | None = None


# mutate(current value) -> new value, or None to delete; it may raise to refuse the change
Mutation = Callable[[bytes | None], bytes | None]


class KVStore:
    def __init__(self, js: JetStreamContext, bucket: str, *, timeout: float = 5.0) -> None:
        self.js = js
        self.bucket = bucket
        self.stream = f"KV_{bucket}"
        self.timeout = timeout

    @property
    def max_payload(self) -> int:
        """The largest message nats-server takes: no record, headers included, is larger."""
        return int(self.js._nc.max_payload)

    def subject(self, key: str) -> str:
        return f"$KV.{self.bucket}.{key}"

    async def get(self, key: str) -> Current:
        """The newest message of the key, straight from the stream (not from a view)."""
        try:
            msg = await self.js.get_msg(self.stream, subject=self.subject(key))
        except NotFoundError:
            return Current(key, None, 0)
        except Exception as exc:
            raise BusError(f"reading {self.bucket}/{key} failed: {exc}") from exc
        deleted = bool(msg.headers and msg.headers.get(_OP) in ("DEL", "PURGE"))
        return Current(key, None if deleted else (msg.data or b""), int(msg.seq or 0),
                       msg.time)

    async def _publish(self, key: str, value: bytes, headers: dict[str, str]) -> int:
        # The request's fault (a huge list or control file). nats-server takes a message whose
        # headers and value together fit max_payload and closes the connection for a larger
        # one; nats-py checks the value alone, so a record a few bytes short of the limit cost
        # the directory its connection (UNAVAILABLE).
        size = len(value) + _header_size(headers)
        if size > self.max_payload:
            raise invalid(f"{self.bucket}/{key} would be {size} bytes; one record holds at "
                          f"most {self.max_payload} (nats-server max_payload)")
        try:
            ack = await self.js.publish(self.subject(key), value, timeout=self.timeout,
                                        headers=headers)
        except APIError as exc:
            if exc.err_code in _WRONG_LAST:
                raise Conflict(key) from exc
            raise BusError(f"writing {self.bucket}/{key} failed: {exc}") from exc
        except Exception as exc:
            raise BusError(f"writing {self.bucket}/{key} failed: {exc}") from exc
        return int(ack.seq)

    async def put(self, key: str, value: bytes, *, expect: int) -> int:
        """Write if the key's last revision is still `expect` (0: it was never written)."""
        return await self._publish(key, value, {_EXPECT: str(expect)})

    async def delete(self, key: str, *, expect: int) -> int:
        return await self._publish(key, b"", {_OP: "DEL", _EXPECT: str(expect)})

    async def change(self, key: str, mutate: Mutation) -> tuple[Current, int]:
        """Read, compute, write with CAS; on a lost race start over from a fresh read.

        Returns the state the winning write was computed from and the new revision
        (0 when nothing had to be written).
        """
        for _ in range(ATTEMPTS):
            current = await self.get(key)
            new = mutate(current.value)
            try:
                if new is None:
                    if current.value is None:
                        return current, 0
                    return current, await self.delete(key, expect=current.revision)
                if new == current.value:
                    return current, 0
                return current, await self.put(key, new, expect=current.revision)
            except Conflict:
                log.debug("lost a write race on %s/%s, retrying", self.bucket, key)
                await asyncio.sleep(0)
        raise BusError(f"{self.bucket}/{key}: too many concurrent writers, giving up")


class ViewSync:
    """Read-your-writes on a KVView: wait until its watch has applied a revision."""

    def __init__(self, view: KVView) -> None:
        self.view = view
        self._changed = asyncio.Event()
        view.on_change(lambda _key, _value: self._changed.set())

    async def wait(self, revision: int, timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.view.revision < revision:
            self._changed.clear()
            if self.view.revision >= revision:
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.warning("view of %s behind: at %d, want %d", self.view.bucket,
                            self.view.revision, revision)
                return
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass
