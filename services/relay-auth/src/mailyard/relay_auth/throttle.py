"""Failed-login throttling, shared by every replica and by every protocol that logs in
through relay-auth (SMTP AUTH, and the IMAP/POP3 logins of the mailbox server).

Three counters, so that guessing is slowed without handing an attacker a way to lock the
real user out (five wrong passwords from anywhere used to lock the user out everywhere):

* per (user, client address), key "pair.<user>.<address>": at AUTH_FAIL_LIMIT_PAIR failures
  this address may not try this user again until the window ends (THROTTLED);
* per client address, key "ip.<address>": at AUTH_FAIL_LIMIT_IP failures (any users) the
  address may not log in at all until the window ends (and CheckClient says
  auth_throttled);
* per user, key "user.<user>", from every address together: never a refusal. Past
  AUTH_FAIL_LIMIT_USER failures each check for that user first waits a delay that doubles
  with every further failure (AUTH_DELAY_BASE up to AUTH_DELAY_MAX), and checks from
  addresses that already failed for this user take turns (one at a time per replica), so a
  botnet's guesses against one user are slowed to about one per delay, while the right
  password from an address with no failures is answered after the delay alone.

An IPv6 client address is counted as its /64 (address_key): the address part of a key is
an IPv4 address or the first address of an IPv6 /64.

KV bucket "auth_failures": value JSON {"n": failures, "start": window start}. A window is
fixed (AUTH_FAIL_WINDOW seconds from the first failure). Updates are compare-and-set on the
key's revision, so failures counted by two replicas at once are both kept. Reads (every
CheckClient, every login) come from a watched mirror. The bucket's TTL (two windows) lets
the server forget stale counters by itself. A success resets nothing (an attacker with one
valid account must not be able to clear an address's counter).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import json
import logging
import time

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from mailyard.core import bus
from mailyard.core.kvview import KVView
from mailyard.core.tcprules import IPAddress
from mailyard.relay_auth import metrics
from mailyard.relay_auth.leases import lease_key

log = logging.getLogger(__name__)
_CAS_ATTEMPTS = 10
# A key is a NATS subject, which nats-server takes up to max_control_line (4 KiB) of, and
# closes the connection past it. A user name is the client's text: past the longest name a
# mailbox can have (the directory takes a 64-octet local part and a 253-octet domain) it
# goes into the key as a digest.
_MAX_MAILBOX_NAME = 64 + 1 + 253


def address_key(ip: IPAddress) -> str:
    """Whose failures an address counts with: its own for IPv4, its /64's for IPv6. A LAN
    or a customer holds a /64 at least and may take any of its 2**64 addresses for each
    guess (Dovecot's auth penalty counts IPv6 by network too)."""
    if ip.version == 6:
        ip = ipaddress.IPv6Address(int(ip) >> 64 << 64)
    return lease_key(ip)


def ip_key(ip: IPAddress) -> str:
    return "ip." + address_key(ip)


def _user_token(user: str) -> str:
    name = user.lower().encode()
    if len(name) > _MAX_MAILBOX_NAME:  # no mailbox's: counted by digest, the key stays short
        name = hashlib.sha256(name).digest()
    return base64.urlsafe_b64encode(name).decode().rstrip("=")


def user_key(user: str) -> str:
    return "user." + _user_token(user)


def pair_key(user: str, ip: IPAddress) -> str:
    return f"pair.{_user_token(user)}.{address_key(ip)}"


class Throttle:
    def __init__(self, limit_ip: int, limit_user: int, window: float, *,
                 limit_pair: int = 5, delay_base: float = 0.5, delay_max: float = 8.0
                 ) -> None:
        self.limit_ip = limit_ip
        self.limit_user = limit_user
        self.limit_pair = limit_pair
        self.delay_base = delay_base
        self.delay_max = delay_max
        self.window = window
        self.view = KVView(bus.KV_AUTH_FAILURES)
        self._turns: dict[str, asyncio.Lock] = {}

    async def start(self, js: JetStreamContext) -> None:
        # Create the bucket with its TTL before the view opens it (ensure_kv is idempotent),
        # or bring its TTL to this window: counters must outlive the window they count.
        await bus.ensure_kv(js, bus.KV_AUTH_FAILURES, ttl=2 * self.window, set_ttl=True)
        await self.view.start(js)

    async def stop(self) -> None:
        await self.view.stop()

    def _count(self, key: str, now: float) -> int:
        raw = self.view.data.get(key)
        if raw is None:
            return 0
        try:
            state = json.loads(raw)
            if now - float(state["start"]) >= self.window:
                return 0
            return int(state["n"])
        except (ValueError, KeyError, TypeError):
            return 0

    def ip_throttled(self, ip: IPAddress, now: float | None = None) -> bool:
        return self.key_throttled(address_key(ip), now)

    def key_throttled(self, address: str, now: float | None = None) -> bool:
        """ip_throttled() by address_key(ip). No failures recorded (the usual case) costs one
        dict lookup."""
        key = "ip." + address
        if key not in self.view.data:
            return False
        return self._count(key, now or time.time()) >= self.limit_ip

    def pair_failures(self, ip: IPAddress | None, user: str, now: float | None = None) -> int:
        if ip is None or not user:
            return 0
        return self._count(pair_key(user, ip), now or time.time())

    def throttled(self, ip: IPAddress | None, user: str) -> bool:
        """May this address not try this user now? (never true for every address at once)"""
        now = time.time()
        return (ip is not None and self.ip_throttled(ip, now)) or (
            self.pair_failures(ip, user, now) >= self.limit_pair)

    def user_delay(self, user: str, now: float | None = None) -> float:
        """Seconds every check for this user waits first (0 below AUTH_FAIL_LIMIT_USER)."""
        excess = self._count(user_key(user), now or time.time()) - self.limit_user if user else -1
        if excess < 0:
            return 0.0
        return min(self.delay_max, self.delay_base * 2.0 ** min(excess, 32))

    async def slow_down(self, ip: IPAddress | None, user: str) -> None:
        """Wait the user's delay; addresses that already failed for the user take turns."""
        delay = self.user_delay(user)
        if delay <= 0:
            return
        metrics.AUTH_DELAYED.inc()
        if self.pair_failures(ip, user) == 0:
            await asyncio.sleep(delay)  # a fresh address (maybe the user) waits, no queue
            return
        async with self._turns.setdefault(user, asyncio.Lock()):
            await asyncio.sleep(delay)

    async def record_failure(self, ip: IPAddress | None, user: str) -> None:
        if ip is not None:
            await self._increment(ip_key(ip))
        if user:
            await self._increment(user_key(user))
        if ip is not None and user:
            await self._increment(pair_key(user, ip))

    async def _increment(self, key: str) -> None:
        kv = self.view.kv
        assert kv is not None
        for _ in range(_CAS_ATTEMPTS):
            now = time.time()
            try:
                entry = await kv.get(key)
                state = json.loads(entry.value or b"{}")
                revision: int | None = entry.revision
            except KeyNotFoundError:
                state, revision = {}, None
            except ValueError:
                state, revision = {}, None
            start = float(state.get("start", 0))
            if now - start >= self.window:
                state = {"n": 1, "start": now}
            else:
                state = {"n": int(state.get("n", 0)) + 1, "start": start}
            value = json.dumps(state).encode()
            try:
                if revision is None:
                    await kv.create(key, value)
                else:
                    await kv.update(key, value, last=revision)
                self.view.data[key] = value  # this replica sees its own count at once
                return
            except KeyWrongLastSequenceError:
                continue  # another replica counted first; read again
        log.warning("could not record auth failure for %s (contention)", key.partition(".")[0])

    def forget_expired(self) -> None:
        """Drop ended windows from the mirror (the bucket TTL removes them from the store)."""
        now = time.time()
        for key in [k for k in self.view.data if self._count(k, now) == 0]:
            self.view.data.pop(key, None)
        for user in [u for u, lock in self._turns.items()
                     if not lock.locked() and self.user_delay(u, now) == 0]:
            del self._turns[user]
