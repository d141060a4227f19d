"""Verified logins, remembered for a short time, and checks of the same login shared.

Mail clients log in again and again with the same password: an IMAP client opens several
connections at once and reconnects for every poll, a POP3 client polls every few minutes,
a phone submits with SMTP AUTH per message. Each login used to cost one argon2id check
(about 30 ms of a core, on purpose), and 20 logins at once queued behind each other on two
cores. Dovecot's own auth cache cannot do this job here: a login it answers from its cache
never reaches relay-auth, so it grants no lease, is not throttled, and (measured) the old
password keeps working after `mailyard user passwd` until its TTL ends.

What is kept: for each login verified in the last TTL seconds, HMAC-SHA256 of (user, the
stored hash it matched, the password) under a random key that lives only in this process's
memory. No password, no fast unkeyed hash of one. A later login is a hit only when its
digest, computed with the mailbox's *current* stored hash, is present: a new password, a
new hash (rehash on login) or a removed mailbox changes or removes the stored hash, so an
old entry can never match again (nothing to invalidate, nothing stale to serve). Wrong
passwords are never remembered: every one costs the full check and counts as a failure.

Checks of the same (user, hash, password) running at once are one check: the rest wait for
its answer (a client opening five connections costs one argon2id check, and so do a
hundred identical wrong guesses sent at once, each still counted as a failure).

The trade-off, written down: a hit answers in microseconds, a miss in tens of
milliseconds, so timing tells whether this exact login succeeded in the last TTL, which
only someone who knows the password can ask. A memory dump of a live relay-auth would
let guesses for recently logged-in users be tested at HMAC speed; such a dump holds the
passwords in flight anyway. TTL 0 turns the cache (not the sharing) off.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from mailyard.relay_auth import metrics


class LoginCache:
    def __init__(self, ttl: float, size: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.size = size
        self.clock = clock
        self._key = secrets.token_bytes(32)
        # digest -> expiry; insertion order is expiry order (one TTL for all)
        self._entries: OrderedDict[bytes, float] = OrderedDict()
        self._flights: dict[bytes, asyncio.Future[bool]] = {}
        self._results = {r: metrics.AUTH_CACHE.labels(r) for r in metrics.CACHE_RESULTS}

    def __len__(self) -> int:
        return len(self._entries)

    def _digest(self, user: str, stored: str, password: str) -> bytes:
        # Length-prefixed fields: no choice of user or password can imitate another triple.
        message = b"".join(len(f).to_bytes(4, "big") + f for f in
                           (user.encode(), stored.encode(), password.encode("utf-8",
                                                                            "surrogatepass")))
        return hmac.new(self._key, message, hashlib.sha256).digest()

    async def verify(self, user: str, stored: str, password: str,
                     check: Callable[[], Awaitable[bool]]) -> tuple[bool, bool]:
        """(password right, answered without a check of its own). `check` runs the real
        verification of `password` against `stored`, the mailbox's current hash."""
        digest = self._digest(user, stored, password)
        now = self.clock()
        self._expire(now)
        if self.ttl > 0 and digest in self._entries:
            self._results["hit"].inc()
            return True, True
        flight = self._flights.get(digest)
        if flight is not None:
            self._results["shared"].inc()
            return await asyncio.shield(flight), True
        self._results["miss"].inc()
        flight = asyncio.ensure_future(check())
        self._flights[digest] = flight
        flight.add_done_callback(lambda f: self._landed(digest, f))
        # shielded: a caller that gives up (client gone) leaves the check to the others
        return await asyncio.shield(flight), False

    def _landed(self, digest: bytes, flight: asyncio.Future[bool]) -> None:
        self._flights.pop(digest, None)
        if self.ttl <= 0 or flight.cancelled() or flight.exception() is not None:
            return
        if flight.result():
            self._entries[digest] = self.clock() + self.ttl
            self._entries.move_to_end(digest)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def _expire(self, now: float) -> None:
        while self._entries:
            digest, expires = next(iter(self._entries.items()))
            if expires > now:
                return
            del self._entries[digest]
