"""ListLeases in pages (AIP-158) over real gRPC: every active lease exactly once, IPv4 before
IPv6 and each in numeric order; leases granted and revoked between pages repeat or skip no
other; expired leases are left out; a bad page_size / page_token is INVALID_ARGUMENT."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from typing import Any

import grpc
import pytest

from mailyard.api.relayauth.v1 import relayauth_pb2 as pb
from mailyard.core import bus
from mailyard.core.relaypolicy import lease_key
from mailyard.core.tcprules import parse_ip


async def _put_leases(js: Any, ips: list[str], ttl: float = 3 * 3600) -> None:
    """What relay-auth writes for a grant, for each (its watch mirrors them)."""
    kv = await bus.ensure_kv(js, bus.KV_LEASES)
    now = time.time()
    for start in range(0, len(ips), 500):
        batch = []
        for ip in ips[start:start + 500]:
            lease = pb.Lease(ip=ip, user="alice@example.org", source="imap")
            lease.granted_at.FromNanoseconds(int(now * 1e9))
            lease.expires_at.FromNanoseconds(int((now + ttl) * 1e9))
            batch.append(kv.put(lease_key(parse_ip(ip)), lease.SerializeToString()))
        await asyncio.gather(*batch)


def _numeric(ip: str) -> tuple[int, int]:
    address = ipaddress.ip_address(ip)
    return address.version, int(address)


async def _walk(stub: Any, size: int) -> list[list[str]]:
    pages: list[list[str]] = []
    token = ""
    while True:
        page = await stub.ListLeases(pb.ListLeasesRequest(page_size=size, page_token=token))
        pages.append([x.ip for x in page.leases])
        token = page.next_page_token
        if not token:
            return pages


async def _listed(stub: Any, count: int, eventually: Any) -> None:
    """Until relay-auth's watch has mirrored `count` leases."""
    async def mirrored() -> bool:
        return sum(len(p) for p in await _walk(stub, 0)) == count
    await eventually(mirrored)


def _ips(count: int) -> list[str]:
    """IPv4 across octet boundaries (10.0.0.9 < 10.0.0.10 < 10.0.1.0) and IPv6."""
    v4 = [str(ipaddress.ip_address(int(ipaddress.ip_address("10.0.0.0")) + 7 * n))
          for n in range(count - count // 4)]
    v6 = [str(ipaddress.ip_address(int(ipaddress.ip_address("2001:db8::")) + 2**70 * n + n))
          for n in range(count // 4)]
    return v4 + v6


async def test_leases_in_pages_every_one_once_in_order(start_relay: Any, js: Any,
                                                       eventually: Any) -> None:
    relay = await start_relay()
    ips = _ips(2000)
    await _put_leases(js, ips)
    await _put_leases(js, ["192.0.2.1", "2001:db8:ffff::1"], ttl=-60)  # expired: not listed
    await _listed(relay.stub, len(ips), eventually)
    pages = await _walk(relay.stub, 100)
    assert [len(p) for p in pages] == [100] * 20
    assert [ip for p in pages for ip in p] == sorted(ips, key=_numeric)
    assert [len(p) for p in await _walk(relay.stub, 0)] == [1000, 1000]
    assert [len(p) for p in await _walk(relay.stub, 5000)] == [1000, 1000]


async def test_grants_and_revokes_between_pages_skip_and_repeat_nothing(
        start_relay: Any, js: Any, eventually: Any, seed_users: Any) -> None:
    await seed_users(js, "alice@example.org")
    relay = await start_relay()
    ips = sorted(_ips(1000), key=_numeric)
    await _put_leases(js, ips)
    await _listed(relay.stub, len(ips), eventually)
    first = await relay.stub.ListLeases(pb.ListLeasesRequest(page_size=100))
    seen = [x.ip for x in first.leases]
    token = first.next_page_token
    for ip in (ips[10], ips[500], seen[-1]):  # behind, ahead, the last one seen
        assert (await relay.stub.RevokeLease(pb.RevokeLeaseRequest(ip=ip))).revoked
    added = ["9.9.9.9", "10.255.0.1", "2001:db8:ffff::1"]  # behind, ahead, ahead
    for ip in added:
        await relay.stub.GrantLease(pb.GrantLeaseRequest(ip=ip, user="alice@example.org"))
    while token:
        page = await relay.stub.ListLeases(pb.ListLeasesRequest(page_size=100,
                                                                page_token=token))
        seen.extend(x.ip for x in page.leases)
        token = page.next_page_token
    assert len(seen) == len(set(seen))
    assert seen == sorted(seen, key=_numeric)
    assert set(seen) == (set(ips) - {ips[500]}) | {"10.255.0.1", "2001:db8:ffff::1"}


@pytest.mark.parametrize("page_size, page_token", [
    (-1, ""), (-(2**31), ""), (0, "not a token"), (0, "!!!!"), (0, "x" * 100_000),
    (0, "ZG9tYWluLmV4YW1wbGUuY29t"),  # a directory token: "domain.example.com"
])
async def test_a_bad_page_size_or_token_is_invalid_argument(
        start_relay: Any, page_size: int, page_token: str) -> None:
    relay = await start_relay()
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await relay.stub.ListLeases(pb.ListLeasesRequest(page_size=page_size,
                                                         page_token=page_token))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_" in (exc.value.details() or "")
