"""Bounds on the confirmation requests subscribe.py sends: anyone may ask us to mail one to
any address (LIST+subscribe-victim=host@, or a forged sender), so unbounded they make a
mail bomb sent in our name, through every list we host.

- at most one request per (list, action, address) per PAIR_INTERVAL (an hour): the first
  replica to create the pair's key in KV `listrequests` sends it. Joining and leaving are
  counted apart, so a member who joined by mistake can leave in the same hour;
- at most `per_day` requests per address a day across all lists: the address's key holds
  the times of its requests of the last day, changed by compare-and-set so replicas agree;
  an address counts as its mailbox (mailbox()), so other spellings of it share the bound.

Keys are digests (no address stored) with per-key TTLs, so the bucket holds only what was
asked lately. A request over a bound is dropped without an answer: answering is the abuse.
When the bucket cannot be reached the request goes out (as greylisting lets mail through):
the bound is a guard, never a reason for a subscriber to hear nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from mailyard.core import bus
from mailyard.core.addresses import to_ascii_domain

log = logging.getLogger(__name__)

PAIR_INTERVAL = 3600.0
DAY = 86400.0
OPEN_TIMEOUT = 10.0  # seconds the bucket may take to open or answer before we give up
_RACES = 5  # compare-and-set attempts on an address's key before letting the request go


def pair_key(mlist: str, action: str, address: str) -> str:
    return "p" + hashlib.sha256(f"{mlist}\0{action}\0{address}".encode()).hexdigest()[:40]


def address_key(address: str) -> str:
    return "a" + hashlib.sha256(mailbox(address).encode()).hexdigest()[:40]


def mailbox(address: str) -> str:
    """The mailbox an address reaches, as far as we can tell from outside: the local part
    before a "+" (sub-addressing, at nearly every provider), the domain as DNS sees it
    (A-label, no final dot). Counted by its spelling, victim+1@, victim+2@ ... each had a
    day's bound of its own."""
    local, _, domain = address.lower().rpartition("@")
    base = local.split("+", 1)[0] or local
    return f"{base}@{to_ascii_domain(domain.rstrip('.'))}"


class Claim:
    """A request allowed: undone if it could not be sent, so a retry is not taken for a
    repeat."""

    def __init__(self, kv: KeyValue | None, pair: str = "", address: str = "",
                 stamp: str = "") -> None:
        self.kv, self.pair, self.address, self.stamp = kv, pair, address, stamp

    async def undo(self) -> None:
        if self.kv is None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(OPEN_TIMEOUT):
                await self.kv.delete(self.pair)
                for _ in range(_RACES):
                    entry = await self.kv.get(self.address)
                    stamps = (entry.value or b"").decode().split()
                    if self.stamp not in stamps:
                        return
                    stamps.remove(self.stamp)
                    try:
                        await self.kv._update(self.address, " ".join(stamps).encode(),
                                              last=entry.revision, msg_ttl=DAY)
                        return
                    except KeyWrongLastSequenceError:
                        continue


class RequestLimit:
    def __init__(self, js: JetStreamContext, per_day: int) -> None:
        self.js = js
        self.per_day = per_day
        self._kv: KeyValue | None = None
        self._opening = asyncio.Lock()

    async def _bucket(self) -> KeyValue:
        """Opened at the first request: hosts whose lists take no subscriptions never make
        it."""
        async with self._opening:
            if self._kv is None:
                self._kv = await bus.ensure_kv(self.js, bus.KV_LIST_REQUESTS, ttl=DAY,
                                               msg_ttl=True)
        return self._kv

    async def claim(self, mlist: str, action: str, address: str, now: float
                    ) -> Claim | None:
        """A Claim when the request may go out, None when it is over a bound."""
        try:
            async with asyncio.timeout(OPEN_TIMEOUT):
                return await self._claim(mlist, action, address, now)
        except Exception as exc:
            log.warning("list request bound not checked: %s", exc or type(exc).__name__)
            self._kv = None  # opened (made) again next time: the bucket may be gone
            return Claim(None)

    async def _claim(self, mlist: str, action: str, address: str, now: float
                     ) -> Claim | None:
        kv = await self._bucket()
        pair = pair_key(mlist, action, address)
        try:
            await kv.create(pair, b"", msg_ttl=PAIR_INTERVAL)
        except KeyWrongLastSequenceError:
            return None
        key, stamp = address_key(address), f"{now:.6f}"
        for _ in range(_RACES):
            try:
                entry = await kv.get(key)
            except KeyNotFoundError:
                try:
                    await kv.create(key, stamp.encode(), msg_ttl=DAY)
                    return Claim(kv, pair, key, stamp)
                except KeyWrongLastSequenceError:  # another replica was first
                    continue
            stamps = [s for s in (entry.value or b"").decode().split()
                      if _float(s) > now - DAY]
            if len(stamps) >= self.per_day:
                return None
            try:
                # KeyValue.update() takes no TTL (nats-py 2.16); _update is what it calls
                await kv._update(key, " ".join([*stamps, stamp]).encode(),
                                 last=entry.revision, msg_ttl=DAY)
                return Claim(kv, pair, key, stamp)
            except KeyWrongLastSequenceError:
                continue
        log.warning("list request bound not checked: address key contended")
        return Claim(kv, pair, key, stamp)


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0
