"""POP-before-SMTP leases (vpopmail's open-smtp + clearopensmtp) in the KV bucket
"relay_leases", shared by every replica.

Key: the client address (IPv4 dotted, IPv6 exploded with '-' for ':' since KV keys allow
only [-/_=.a-zA-Z0-9]). Value: a relayauth.v1.Lease protobuf (ip, user, granted_at,
expires_at, source: "manual" for GrantLease, "import" for one carried over from open-smtp,
"imap" / "pop3" for a mailbox login).
Expiry needs no cron: a lease past expires_at is ignored on read, and a
background task deletes expired keys (with the revision it saw, so a concurrent refresh by
another replica is never lost). No bucket TTL: a grant may carry its own TTL.

Reads come from an in-memory mirror kept by a KV watch, so CheckClient never waits on NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import ipaddress
import logging
import time
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext

from mailyard.api.relayauth.v1 import relayauth_pb2 as pb
from mailyard.core import bus, paging
from mailyard.core.kvview import KVView
from mailyard.core.relaypolicy import lease_key
from mailyard.core.tcprules import IPAddress, parse_ip
from mailyard.relay_auth import metrics

log = logging.getLogger(__name__)

MANUAL = "manual"
IMPORT = "import"  # carried over from vpopmail's open-smtp, which names no user
SOURCES = (MANUAL, IMPORT, "imap", "pop3")  # bounded: the label values of LEASES_GRANTED


@dataclass(frozen=True)
class ActiveLease:
    ip: str
    user: str
    granted_at: float
    expires_at: float
    source: str = MANUAL

    def to_pb(self) -> pb.Lease:
        lease = pb.Lease(ip=self.ip, user=self.user, source=self.source)
        lease.granted_at.FromNanoseconds(int(self.granted_at * 1e9))
        lease.expires_at.FromNanoseconds(int(self.expires_at * 1e9))
        return lease


def _seconds(ts: Timestamp) -> float:
    return float(ts.seconds) + ts.nanos / 1e9


def _order(key: str) -> str:
    """Sort key of a lease key: IPv4 before IPv6, each in numeric order. An IPv6 key is the
    exploded address (fixed width) already; an IPv4 key's dotted quad is not."""
    if key.startswith("v4."):
        with contextlib.suppress(ValueError):
            return f"v4.{int(ipaddress.IPv4Address(key[3:])):08x}"
    return key


class LeaseStore:
    def __init__(self, default_ttl: float, purge_interval: float = 60.0) -> None:
        self.default_ttl = default_ttl
        self.purge_interval = purge_interval
        self.view = KVView(bus.KV_LEASES)
        self.view.on_change(self._apply)
        self._mirror: dict[str, ActiveLease] = {}
        self._keys = paging.SortedKeys(lambda: list(self._mirror), _order)  # for pages
        # Expiry bookkeeping so neither /metrics nor the purge scans 100,000 leases: a heap of
        # (expires_at, key) (stale entries skipped) and the keys seen expired so far.
        self._expiries: list[tuple[float, str]] = []
        self._expired: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        metrics.LEASES_ACTIVE.set_function(self.active_count)

    async def start(self, js: JetStreamContext, *, purge: bool = True) -> None:
        await self.view.start(js, timeout=60.0)  # 100,000 leases load in a few seconds
        if purge:
            self._task = asyncio.create_task(self._purge_loop(), name="lease-purge")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.view.stop()

    # -- the mirror ------------------------------------------------------------------------

    def _apply(self, key: str, value: bytes | None) -> None:
        self._expired.discard(key)
        try:
            lease = pb.Lease.FromString(value) if value is not None else None
        except Exception:  # it replaced whatever lease was there: that one is gone too
            log.warning("unreadable lease %s ignored", key)
            lease = None
        if lease is None:
            self._mirror.pop(key, None)
            self._keys.discard(key)
            return
        active = ActiveLease(lease.ip, lease.user, _seconds(lease.granted_at),
                             _seconds(lease.expires_at), lease.source or MANUAL)
        self._mirror[key] = active
        self._keys.add(key)
        heapq.heappush(self._expiries, (active.expires_at, key))

    def lookup(self, ip: IPAddress, now: float | None = None) -> ActiveLease | None:
        """The active lease for this client, from memory (no network round trip)."""
        return self.lookup_key(lease_key(ip), now)

    def lookup_key(self, key: str, now: float | None = None) -> ActiveLease | None:
        """lookup() by lease_key(ip), for callers that already have the key."""
        lease = self._mirror.get(key)
        if lease is None or lease.expires_at <= (now or time.time()):
            return None
        return lease

    def page(self, size: int, token: str) -> tuple[list[pb.Lease], str]:
        """One page of the active leases and its next_page_token (paging.BadPage)."""
        now = time.time()

        def fetch(key: str) -> tuple[pb.Lease, int] | None:
            lease = self.lookup_key(key, now)
            if lease is None:
                return None
            record = lease.to_pb()
            return record, record.ByteSize()

        return paging.page(self._keys, "v", size, token, fetch)

    def active_count(self) -> int:
        return len(self._mirror) - len(self._expired_now())

    def _expired_now(self) -> set[str]:
        """Keys in the mirror whose lease has expired (amortised O(log n) per lease)."""
        now = time.time()
        while self._expiries and self._expiries[0][0] <= now:
            expires_at, key = heapq.heappop(self._expiries)
            lease = self._mirror.get(key)
            if lease is not None and lease.expires_at == expires_at:
                self._expired.add(key)  # else refreshed or deleted since: a stale entry
        return self._expired

    # -- writes ----------------------------------------------------------------------------

    async def grant(self, ip_text: str, user: str, ttl: float | None = None,
                    source: str = MANUAL) -> ActiveLease:
        """Grant or refresh: a new grant replaces the old one (and its expiry)."""
        assert self.view.kv is not None
        if source not in SOURCES:
            raise ValueError(f"unknown lease source: {source!r}")
        ip = parse_ip(ip_text)
        now = time.time()
        lease = ActiveLease(str(ip), user, now, now + (ttl or self.default_ttl), source)
        key = lease_key(ip)
        value = lease.to_pb().SerializeToString()
        await self.view.kv.put(key, value)
        self._apply(key, value)  # visible to this replica now; the watch brings it to others
        metrics.LEASES_GRANTED.labels(source).inc()
        return lease

    async def revoke(self, ip_text: str) -> bool:
        assert self.view.kv is not None
        key = lease_key(parse_ip(ip_text))
        existed = key in self._mirror
        if not existed:
            try:
                await self.view.kv.get(key)
                existed = True
            except Exception:
                existed = False
        if existed:
            await self.view.kv.delete(key)
            self._apply(key, None)
        return existed

    async def purge_expired(self) -> int:
        """clearopensmtp: delete expired leases from the bucket. Returns how many."""
        assert self.view.kv is not None
        now = time.time()
        purged = 0
        for key in list(self._expired_now()):
            try:
                entry = await self.view.kv.get(key)
            except Exception:
                self._apply(key, None)  # already gone
                continue
            if entry.value is None:
                continue
            stored = pb.Lease.FromString(entry.value)
            if _seconds(stored.expires_at) > now:
                continue  # refreshed meanwhile
            try:
                await self.view.kv.delete(key, last=entry.revision)
                purged += 1
            except Exception as exc:  # refreshed or deleted by another replica in between
                log.debug("lease %s not purged: %s", key, exc)
        if purged:
            log.info("purged expired leases", extra={"count": purged})
        return purged

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(self.purge_interval)
            try:
                await self.purge_expired()
            except Exception as exc:
                log.warning("lease purge failed: %s", exc)
