"""Failed-AUTH throttling, per client IP and per user, shared by every replica.

KV bucket "auth_failures": key "ip.<address>" or "user.<base64url address>", value JSON
{"n": failures, "start": window start}. A window is fixed (AUTH_FAIL_WINDOW seconds from the
first failure); once n reaches the limit the IP or user is throttled until the window ends.
Updates are compare-and-set on the key's revision, so failures counted by two replicas at
once are both kept. Reads (every CheckClient, every AUTH) come from a watched mirror.
The bucket's TTL (two windows) lets the server forget stale counters by itself.
"""

from __future__ import annotations

import base64
import json
import logging
import time

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from mailyard.core import bus
from mailyard.core.kvview import KVView
from mailyard.relay_auth.leases import lease_key
from mailyard.relay_auth.rules import IPAddress

log = logging.getLogger(__name__)
_CAS_ATTEMPTS = 10


def ip_key(ip: IPAddress) -> str:
    return "ip." + lease_key(ip)


def user_key(user: str) -> str:
    return "user." + base64.urlsafe_b64encode(user.lower().encode()).decode().rstrip("=")


class Throttle:
    def __init__(self, limit_ip: int, limit_user: int, window: float) -> None:
        self.limit_ip = limit_ip
        self.limit_user = limit_user
        self.window = window
        self.view = KVView(bus.KV_AUTH_FAILURES)

    async def start(self, js: JetStreamContext) -> None:
        # Create the bucket with its TTL before the view opens it (ensure_kv is idempotent).
        await bus.ensure_kv(js, bus.KV_AUTH_FAILURES, ttl=2 * self.window)
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
        return self.key_throttled(lease_key(ip), now)

    def key_throttled(self, address_key: str, now: float | None = None) -> bool:
        """ip_throttled() by lease_key(ip). No failures recorded (the usual case) costs one
        dict lookup."""
        key = "ip." + address_key
        if key not in self.view.data:
            return False
        return self._count(key, now or time.time()) >= self.limit_ip

    def user_throttled(self, user: str, now: float | None = None) -> bool:
        return bool(user) and self._count(user_key(user), now or time.time()) >= self.limit_user

    def throttled(self, ip: IPAddress | None, user: str) -> bool:
        now = time.time()
        return (ip is not None and self.ip_throttled(ip, now)) or self.user_throttled(user, now)

    async def record_failure(self, ip: IPAddress | None, user: str) -> None:
        if ip is not None:
            await self._increment(ip_key(ip))
        if user:
            await self._increment(user_key(user))

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
