"""Which remote-delivery replicas are alive, so the per-destination limit can be split.

Each replica puts its key in KV bucket `remote_members` (created with a TTL, MEMBER_TTL,
30 s by default) and puts it again every TTL / 3; after each put it lists the bucket's keys
and the number of keys (itself always included, so never 0) is the member count handed to
`on_change`. A replica that stops cleanly deletes its key; one that crashed drops out when
its last put expires. Expiry removes the key without a watch event, hence the listing.

The key is the INSTANCE name (made KV-safe) plus a random suffix per process: two replicas
started with the same INSTANCE by mistake still count as two, and a replica restarted
after a crash counts twice until its old key expires, which only lowers allowances.

If NATS or the bucket is unreachable the last count is kept (1 before the first success:
the full limit, as one replica had it) and the next heartbeat tries again.

A higher count applies at once (smaller shares: never over the limit); a lower one only when
two heartbeats in a row see it. A live replica whose put came late (a stalled, overloaded
host) makes its key lapse for a moment: taking its share at once put one MX over the limit
(3 sessions against 2 in the test, under load). A crashed replica's share comes back one
heartbeat later (TTL / 3).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from collections.abc import Callable

from nats.js import JetStreamContext
from nats.js.errors import NoKeysError
from nats.js.kv import KeyValue

from mailyard.core import bus

log = logging.getLogger(__name__)
_UNSAFE = re.compile(r"[^-_=a-zA-Z0-9]")
LISTING_TRIES = 3  # listings per heartbeat until one holds our own key


def member_key(instance: str) -> str:
    """A KV key for this process: INSTANCE with unsafe characters replaced, and a suffix."""
    name = _UNSAFE.sub("_", instance)[:100] or "replica"
    return f"{name}.{secrets.token_hex(4)}"


class Membership:
    def __init__(self, js: JetStreamContext, instance: str, *, ttl: float = 30.0,
                 on_change: Callable[[int], None] | None = None,
                 bucket: str = bus.KV_REMOTE_MEMBERS, timeout: float = 5.0) -> None:
        self.js = js
        self.instance = instance
        self.key = member_key(instance)
        self.ttl = ttl
        self.interval = ttl / 3
        self.bucket = bucket
        self.timeout = min(timeout, self.interval)
        self.on_change = on_change
        self.members = 1
        self._fewer: int | None = None  # a lower count seen once, applied when seen again
        self._kv: KeyValue | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """First heartbeat now (a failure is logged, not raised), then every TTL / 3."""
        await self.beat()
        self._task = asyncio.create_task(self._run(), name="remote-members")

    async def stop(self) -> None:
        """Stop heartbeating and delete our key (best effort: else it expires)."""
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._kv is not None:
            try:
                await asyncio.wait_for(self._kv.delete(self.key), self.timeout)
            except Exception as exc:
                log.warning("could not remove member key %s: %s", self.key, exc)

    async def beat(self) -> bool:
        """Put our key, count the keys; False (count unchanged) when KV did not answer."""
        try:
            if self._kv is None:
                kv = await asyncio.wait_for(
                    bus.ensure_kv(self.js, self.bucket, ttl=self.ttl), self.timeout)
                self._follow_bucket_ttl((await asyncio.wait_for(kv.status(),
                                                                self.timeout)).ttl)
                self._kv = kv
            await asyncio.wait_for(self._kv.put(self.key, self.instance.encode()),
                                   self.timeout)
            keys = await asyncio.wait_for(self._listing(self._kv), self.timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("remote_members heartbeat failed, keeping %d member(s): %s",
                        self.members, exc or type(exc).__name__)
            return False
        self._count(len(keys | {self.key}))
        return True

    def _follow_bucket_ttl(self, bucket_ttl: float | None) -> None:
        """The bucket keeps the TTL it was created with (by the first replica): heartbeat
        often enough for it even if our MEMBER_TTL differs."""
        if not bucket_ttl:
            log.warning("KV bucket %s has no TTL: crashed replicas are never forgotten "
                        "(recreate it)", self.bucket)
        elif bucket_ttl < self.ttl:
            log.warning("KV bucket %s has a TTL of %ss, below MEMBER_TTL: heartbeating "
                        "for it", self.bucket, bucket_ttl)
            self.ttl, self.interval = bucket_ttl, bucket_ttl / 3
            self.timeout = min(self.timeout, self.interval)

    async def _listing(self, kv: KeyValue) -> set[str]:
        """The bucket's keys. A listing without our own key, put and acked just before, is
        incomplete: nats-py's keys() ends at once when the consumer-info reply overtakes
        the first deliveries (the server sends both from different goroutines; seen under
        load as a count of 1 with two members). Such a listing is taken again."""
        keys: set[str] = set()
        for _ in range(LISTING_TRIES):
            try:
                keys = set(await kv.keys())
            except NoKeysError:  # what keys() raises for an empty listing
                keys = set()
            if self.key in keys:
                break
        return keys

    def _count(self, members: int) -> None:
        if members < self.members and self._fewer != members:
            self._fewer = members  # maybe a late heartbeat: wait for the next one
            return
        self._fewer = None
        if members == self.members:
            return
        log.info("remote-delivery members changed", extra={"members": members,
                                                           "was": self.members})
        self.members = members
        if self.on_change is not None:
            self.on_change(members)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.beat()
