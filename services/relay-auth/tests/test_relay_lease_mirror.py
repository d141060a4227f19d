"""The in-memory lease mirror's expiry bookkeeping (what /metrics and the purge read)."""

from __future__ import annotations

import time

from mailyard.core.tcprules import parse_ip
from mailyard.relay_auth.leases import ActiveLease, LeaseStore, lease_key


def _put(store: LeaseStore, ip: str, expires_at: float) -> str:
    key = lease_key(parse_ip(ip))
    store._apply(key, ActiveLease(ip, "u@example.org", time.time(), expires_at)
                 .to_pb().SerializeToString())
    return key


def test_active_count_follows_expiry_refresh_and_delete() -> None:
    store = LeaseStore(default_ttl=3600)
    now = time.time()
    _put(store, "10.0.0.1", now + 3600)
    gone = _put(store, "10.0.0.2", now - 1)           # arrived already expired
    soon = _put(store, "10.0.0.3", now + 0.2)
    assert store.active_count() == 2
    assert store.lookup(parse_ip("10.0.0.2")) is None
    time.sleep(0.3)  # no timing is asserted: only that an expired lease stops counting
    assert store.active_count() == 1
    assert store._expired_now() == {gone, soon}
    _put(store, "10.0.0.3", time.time() + 3600)       # refreshed after it expired
    assert store.active_count() == 2
    assert store.lookup(parse_ip("10.0.0.3")) is not None
    store._apply(gone, None)                          # purged
    assert store.active_count() == 2 and store._expired_now() == set()
    assert [x.ip for x in store.page(0, "")[0]] == ["10.0.0.1", "10.0.0.3"]
