"""The per-destination limit across replicas: the resizable limiter, membership in KV
`remote_members` on a real nats-server, and two remote-delivery processes sharing one
slow MX."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from nats.js.errors import NoKeysError
from remote_rig import Smtp, results
from test_remote_process import replica

from mailyard.api.mail.v1.delivery_pb2 import CHANNEL_REMOTE, OUTCOME_DELIVERED, DeliveryJob
from mailyard.api.mail.v1.envelope_pb2 import Envelope
from mailyard.core import bus
from mailyard.core.natsserver import NatsServer
from mailyard.core.spool import Spool
from mailyard.remote_delivery.membership import Membership, member_key
from mailyard.remote_delivery.pool import Limiter, Pool, allowance
from mailyard.testing import DnsServer


async def settle() -> None:
    """Let every ready task run (the limiter hands slots over synchronously)."""
    for _ in range(10):
        await asyncio.sleep(0)


# -- the limiter -----------------------------------------------------------------------


async def test_limiter_shrinks_without_touching_holders_and_grows_live() -> None:
    limiter = Limiter(3)
    for _ in range(3):
        await limiter.acquire()
    limiter.limit = 1  # shrink: the three holders keep their slots
    assert (limiter.held, limiter.limit) == (3, 1)
    waiter = asyncio.create_task(limiter.acquire())
    await settle()
    assert not waiter.done()  # 3 held >= 1 allowed
    limiter.release()
    limiter.release()
    await settle()
    assert not waiter.done() and limiter.held == 1  # still at the new limit
    limiter.release()
    await settle()
    assert waiter.done() and limiter.held == 1  # under it: the waiter got the slot

    more = [asyncio.create_task(limiter.acquire()) for _ in range(3)]
    await settle()
    assert not any(t.done() for t in more) and limiter.waiting == 3
    limiter.limit = 3  # grow: two waiters in at once, the third still waits
    await settle()
    assert [t.done() for t in more] == [True, True, False]
    assert limiter.held == 3
    limiter.limit = 4
    await settle()
    assert all(t.done() for t in more) and limiter.held == 4


async def test_limiter_cancelled_waiter_leaves_no_slot_taken() -> None:
    limiter = Limiter(1)
    await limiter.acquire()
    gone = asyncio.create_task(limiter.acquire())
    kept = asyncio.create_task(limiter.acquire())
    await settle()
    gone.cancel()
    await settle()
    limiter.release()
    await settle()
    assert kept.done() and not kept.cancelled() and limiter.held == 1
    limiter.release()
    assert limiter.idle


async def test_pool_resizes_destinations_in_use_and_forgets_idle_ones() -> None:
    pool = Pool(4, idle_timeout=0, max_uses=1)
    assert pool.allowance == 4
    async with pool.slot("127.0.0.1", 25):
        pool.set_members(3)
        assert pool.allowance == 2 and pool.limiter("127.0.0.1", 25).limit == 2
        pool.set_members(5)
        assert pool.allowance == 1 and pool.limiter("127.0.0.1", 25).limit == 1
    assert ("127.0.0.1", 25) not in pool._slots  # nothing kept for an unused destination
    assert [allowance(10, n) for n in (1, 2, 3, 4, 10, 20)] == [10, 5, 4, 3, 1, 1]


def test_member_key_is_kv_safe_and_per_process() -> None:
    a, b = member_key("mx-1.example.com"), member_key("mx-1.example.com")
    assert a != b and a.startswith("mx-1_example_com.")
    assert member_key("").startswith("replica.")


# -- membership on a real nats-server --------------------------------------------------


@pytest.fixture
async def connections(nats_server: NatsServer) -> AsyncIterator[list[Any]]:
    """Separate NATS connections, one per member, like separate replicas."""
    opened: list[Any] = []

    async def make() -> Any:
        nc = await bus.connect(nats_server.url, f"member-{len(opened)}")
        opened.append(nc)
        return nc.jetstream()

    yield [make]
    for nc in opened:
        with contextlib.suppress(Exception):
            await nc.close()


async def test_two_members_split_a_limit_of_four(connections: list[Any]) -> None:
    [make] = connections
    pool_a, pool_b = Pool(4, 0, 1), Pool(4, 0, 1)
    a = Membership(await make(), "a", ttl=30, on_change=pool_a.set_members)
    b = Membership(await make(), "b", ttl=30, on_change=pool_b.set_members)
    await a.start()
    await b.start()
    try:
        assert await a.beat()  # a's next heartbeat sees b
        assert (a.members, b.members) == (2, 2)
        assert (pool_a.allowance, pool_b.allowance) == (2, 2)
        # a's share is 2: a third transaction to the same MX waits
        held = [pool_a.slot("127.0.0.1", 25) for _ in range(2)]
        for cm in held:
            await cm.__aenter__()
        third = asyncio.create_task(pool_a.limiter("127.0.0.1", 25).acquire())
        await settle()
        assert not third.done()
        await b.stop()  # a clean stop deletes b's key
        assert await a.beat() and a.members == 2  # a lower count is applied when seen twice
        assert await a.beat()
        assert a.members == 1 and pool_a.allowance == 4
        await settle()
        assert third.done()  # let in by the grown limit, the two holders untouched
        assert pool_a.limiter("127.0.0.1", 25).held == 3
        for cm in held:
            await cm.__aexit__(None, None, None)
    finally:
        await a.stop()
        await b.stop()


async def test_member_that_stops_heartbeating_expires(connections: list[Any]) -> None:
    [make] = connections
    a = Membership(await make(), "a", ttl=2)
    b = Membership(await make(), "b", ttl=2)
    assert await b.beat()  # one heartbeat, then silence (a crashed replica)
    assert await a.beat() and a.members == 2
    late = Membership(a.js, "late", ttl=30)  # a longer MEMBER_TTL than the bucket's
    assert await late.beat() and late.interval == pytest.approx(2 / 3)
    await late.stop()
    for _ in range(300):  # the outcome, however long the expiry takes (up to 30 s)
        await asyncio.sleep(0.1)
        assert await a.beat()
        if a.members == 1:
            break
    assert a.members == 1


async def test_a_late_heartbeat_does_not_hand_its_share_away(
        connections: list[Any]) -> None:
    """A live replica's key lapses for a moment (its put came late on an overloaded host):
    the other must not take its share at once, or one MX sees more sessions than its
    limit (3 against 2, seen under load). Only a count seen lower twice is applied."""
    [make] = connections
    a = Membership(await make(), "a", ttl=30)
    b = Membership(await make(), "b", ttl=30)
    assert await b.beat() and await a.beat() and a.members == 2
    assert b._kv is not None
    await b._kv.delete(b.key)  # b's key gone for a moment
    assert await a.beat() and a.members == 2
    assert await b.beat()  # b's late heartbeat
    assert await a.beat() and a.members == 2
    await b._kv.delete(b.key)  # now b is gone for good
    assert await a.beat() and a.members == 2
    assert await a.beat() and a.members == 1


async def test_a_listing_without_our_own_key_is_taken_again(
        connections: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """nats-py's keys() can end before its first entry when the consumer-info reply
    overtakes the deliveries (seen under load: a count of 1 with two members). Such a
    listing lacks the key we just put, so it is not believed."""
    [make] = connections
    a = Membership(await make(), "a", ttl=30)
    b = Membership(await make(), "b", ttl=30)
    assert await b.beat() and await a.beat() and a.members == 2
    assert a._kv is not None
    kv = a._kv
    real_keys, listings = kv.keys, []

    async def ended_early() -> list[str]:
        listings.append(1)
        if len(listings) == 1:
            raise NoKeysError  # what keys() raises when its watcher ends at once
        return await real_keys()

    monkeypatch.setattr(kv, "keys", ended_early)
    assert await a.beat() and a.members == 2 and len(listings) == 2
    assert await a.beat() and a.members == 2  # a one-off count of 1 would show here


async def test_kv_unreachable_keeps_the_last_count(connections: list[Any],
                                                   nats_server: NatsServer,
                                                   tmp_path: Path) -> None:
    [make] = connections
    a = Membership(await make(), "a", ttl=30, timeout=1)
    b = Membership(await make(), "b", ttl=30, timeout=1)
    assert await b.beat() and await a.beat() and a.members == 2
    nats_server.stop()
    assert not await a.beat()
    assert a.members == 2  # the last known count, not 1 (which would double the share)
    fresh = Membership(a.js, "c", ttl=30, timeout=1)
    assert not await fresh.beat()
    assert fresh.members == 1  # never reached KV: alone, the full limit
    nats_server.start(tmp_path / "nats-again.log")  # same port: the clients reconnect
    for _ in range(100):
        if await fresh.beat():
            break
    assert fresh.members == 3  # a, b and itself


# -- two processes, one slow MX --------------------------------------------------------


def destination_limit(port: int | None) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("mailyard_remote_destination_limit "):
                return float(line.split()[1])
    return None


async def test_two_replicas_never_exceed_the_limit_at_one_mx(  # type: ignore[no-untyped-def]
        js: Any, nats_server: NatsServer, spool: Spool, dns_server: DnsServer, smtp_servers,
        tmp_path: Path) -> None:
    server = Smtp(delay=0.3).start()  # each transaction holds the final dot 0.3 s
    smtp_servers.append(server)
    kv = await bus.ensure_kv(js, bus.KV_CONTROL)
    await kv.put("smtproutes", f"slow.test:127.0.0.1:{server.port}".encode())
    # Two jobs at once per replica and 2 per destination: without the split the MX would
    # see 4 sessions at once; with it each replica takes 1.
    settings = {"per_destination_limit": "2", "max_in_flight": "2", "member_ttl": "3",
                "idle_timeout": "0"}
    procs = [replica(name, nats_server, spool, dns_server, tmp_path, **settings)
             for name in ("r1", "r2")]
    try:
        for proc in procs:
            await asyncio.to_thread(proc.start)
        for _ in range(300):  # both have seen each other (heartbeat every second)
            limits = [await asyncio.to_thread(destination_limit, p.http_port) for p in procs]
            if limits == [1.0, 1.0]:
                break
            await asyncio.sleep(0.1)
        assert limits == [1.0, 1.0], [p.logs() for p in procs]
        jobs = 10
        for i in range(jobs):
            qid = f"01SPLITTEST{i:015d}"
            stored = await spool.commit(Envelope(queue_id=qid, sender="a@ours.test",
                                                 recipients=[f"u{i}@slow.test"]),
                                        b"Subject: split\r\n\r\nbody\r\n")
            job = DeliveryJob(job_id=f"{qid}.1", queue_id=qid, channel=CHANNEL_REMOTE,
                              sender="a@ours.test", recipients=[f"u{i}@slow.test"],
                              domain="slow.test", spool_path=stored.spool_path,
                              sha256=stored.sha256, size=stored.size, attempt=1)
            await bus.publish(js, bus.JOB_SUBJECT["remote"], job, msg_id=job.job_id)
        out = await results(js, jobs, timeout=60)
        assert len(out) == jobs, [p.logs() for p in procs]
        assert all(r.results[0].outcome == OUTCOME_DELIVERED for r in out)
        assert {r.worker for r in out} == {"r1", "r2"}  # both replicas delivered
        assert len(server.messages) == jobs
        assert 1 <= server.max_active <= 2
        members = await js.key_value(bus.KV_REMOTE_MEMBERS)
        assert len(await members.keys()) == 2
        for proc in procs:
            assert await asyncio.to_thread(proc.stop) == 0
        with pytest.raises(NoKeysError):  # a clean stop removes the replica's key
            await members.keys()
    finally:
        for proc in procs:
            await asyncio.to_thread(proc.stop)
