"""POP-before-SMTP leases over real gRPC: grant, refresh, expiry, revoke, restart, replicas."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from mailyard.api.relayauth.v1 import relayauth_pb2 as pb
from mailyard.api.relayauth.v1 import relayauth_pb2_grpc as rpc
from mailyard.core import bus
from mailyard.core.natsserver import NatsServer
from mailyard.core.tcprules import parse_ip
from mailyard.relay_auth.leases import lease_key

pytestmark = pytest.mark.usefixtures("lease_users")  # the mailboxes grants name


def grant(ip: str, user: str = "alice@example.org", ttl: float | None = None
          ) -> pb.GrantLeaseRequest:
    req = pb.GrantLeaseRequest(ip=ip, user=user)
    if ttl is not None:
        req.ttl.CopyFrom(Duration(seconds=int(ttl), nanos=round((ttl % 1) * 1e9)))
    return req


async def test_grant_makes_a_relay_client_and_revoke_ends_it(start_relay: Any) -> None:
    relay = await start_relay()
    stub = relay.stub
    before = await stub.CheckClient(pb.CheckClientRequest(ip="198.51.100.7"))
    assert before.allow_connect and not before.allow_relay
    assert before.decided_by == pb.DECIDER_RULE and before.rule == ""

    lease = await stub.GrantLease(grant("198.51.100.7"))
    assert lease.user == "alice@example.org"
    assert lease.expires_at.seconds - lease.granted_at.seconds == 10800  # 3 hours default

    after = await stub.CheckClient(pb.CheckClientRequest(ip="198.51.100.7"))
    assert after.allow_relay and after.dnsbl_exempt
    assert after.decided_by == pb.DECIDER_LEASE and after.lease_user == "alice@example.org"
    other = await stub.CheckClient(pb.CheckClientRequest(ip="198.51.100.8"))
    assert not other.allow_relay

    listed = await stub.ListLeases(pb.ListLeasesRequest())
    assert [x.ip for x in listed.leases] == ["198.51.100.7"]

    assert (await stub.RevokeLease(pb.RevokeLeaseRequest(ip="198.51.100.7"))).revoked
    assert not (await stub.RevokeLease(pb.RevokeLeaseRequest(ip="198.51.100.7"))).revoked
    gone = await stub.CheckClient(pb.CheckClientRequest(ip="198.51.100.7"))
    assert not gone.allow_relay and gone.decided_by == pb.DECIDER_RULE


async def test_ipv6_lease_and_bad_addresses(start_relay: Any) -> None:
    relay = await start_relay()
    await relay.stub.GrantLease(grant("2001:DB8::1"))
    check = await relay.stub.CheckClient(pb.CheckClientRequest(ip="2001:db8:0::1"))
    assert check.allow_relay and check.decided_by == pb.DECIDER_LEASE
    listed = await relay.stub.ListLeases(pb.ListLeasesRequest())
    assert [x.ip for x in listed.leases] == ["2001:db8::1"]
    for bad in (pb.GrantLeaseRequest(ip="nope", user="a@b.c"),
                pb.GrantLeaseRequest(ip="1.2.3.4", user=""),
                # past timedelta's range, past Timestamp's (year 9999), past HTTP's 366 days
                grant("1.2.3.4", ttl=10**15), grant("1.2.3.4", ttl=315_576_000_000),
                grant("1.2.3.4", ttl=367 * 86400), grant("1.2.3.4", ttl=-1)):
        try:
            await relay.stub.GrantLease(bad)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (bad, exc.details())
        else:
            raise AssertionError(f"accepted a bad lease: {bad}")
    # refusals quoting 20,000 characters still arrive whole (gRPC drops details past 16 KiB)
    long = "7" * 20_000
    for call, code in ((relay.stub.GrantLease(grant(long)), grpc.StatusCode.INVALID_ARGUMENT),
                       (relay.stub.GrantLease(grant("1.2.3.4", user=long + "@b.c")),
                        grpc.StatusCode.NOT_FOUND),
                       (relay.stub.CheckClient(pb.CheckClientRequest(ip=long)),
                        grpc.StatusCode.INVALID_ARGUMENT),
                       (relay.stub.ImportRules(pb.ImportRulesRequest(text=f"{long}:allow\n")),
                        grpc.StatusCode.INVALID_ARGUMENT)):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        assert refused.value.code() == code, refused.value.details()


async def test_lease_expires_without_cron_and_is_purged(start_relay: Any, js: Any,
                                                        eventually: Any) -> None:
    relay = await start_relay(lease_purge_interval=0.2)
    await relay.stub.GrantLease(grant("203.0.113.5", ttl=0.3))

    async def expired() -> bool:
        check = await relay.stub.CheckClient(pb.CheckClientRequest(ip="203.0.113.5"))
        return not check.allow_relay

    await eventually(expired)
    assert not (await relay.stub.ListLeases(pb.ListLeasesRequest())).leases
    kv = await js.key_value(bus.KV_LEASES)
    key = lease_key(parse_ip("203.0.113.5"))

    async def purged() -> bool:
        try:
            await kv.get(key)
        except Exception:
            return True
        return False

    await eventually(purged)


async def test_a_lease_overwritten_with_what_is_no_lease_grants_nothing(
        start_relay: Any, js: Any, eventually: Any) -> None:
    """The bucket is open to every client of the bus with JetStream rights: a value that is
    no Lease was logged 'ignored' while the lease it replaced went on relaying on every
    replica that had seen it (until its own expiry, days for a manual grant), and on none
    that started after."""
    relay = await start_relay()
    await relay.stub.GrantLease(grant("203.0.113.20"))
    kv = await js.key_value(bus.KV_LEASES)
    await kv.put(lease_key(parse_ip("203.0.113.20")), b"not a lease")

    async def ended() -> bool:
        check = await relay.stub.CheckClient(pb.CheckClientRequest(ip="203.0.113.20"))
        return not check.allow_relay and check.decided_by == pb.DECIDER_RULE

    await eventually(ended)
    assert not (await relay.stub.ListLeases(pb.ListLeasesRequest())).leases


async def test_a_new_grant_refreshes(start_relay: Any, js: Any) -> None:
    relay = await start_relay()
    first = await relay.stub.GrantLease(grant("203.0.113.9", ttl=60))
    second = await relay.stub.GrantLease(grant("203.0.113.9", user="bob@example.org",
                                               ttl=7200))
    assert second.expires_at.seconds > first.expires_at.seconds
    listed = (await relay.stub.ListLeases(pb.ListLeasesRequest())).leases
    assert len(listed) == 1 and listed[0].user == "bob@example.org"
    assert listed[0].expires_at == second.expires_at
    kv = await js.key_value(bus.KV_LEASES)
    assert await kv.keys() == [lease_key(parse_ip("203.0.113.9"))]


async def test_leases_survive_a_restart_and_are_shared_by_replicas(
        nats_server: NatsServer, relay_process: Any, eventually: Any) -> None:
    one, addr_one = relay_process(nats_server.url)
    two, addr_two = relay_process(nats_server.url)
    one.start()
    two.start()
    async with grpc.aio.insecure_channel(addr_one) as ch1, \
            grpc.aio.insecure_channel(addr_two) as ch2:
        stub1, stub2 = rpc.RelayAuthStub(ch1), rpc.RelayAuthStub(ch2)
        await stub1.GrantLease(grant("192.0.2.44", user="carol@example.org"))

        async def seen_by_two() -> pb.CheckClientResponse | None:
            check = await stub2.CheckClient(pb.CheckClientRequest(ip="192.0.2.44"))
            return check if check.allow_relay else None

        check = await eventually(seen_by_two)
        assert check.lease_user == "carol@example.org"
        # revoke on the other replica: both stop relaying for it
        assert (await stub2.RevokeLease(pb.RevokeLeaseRequest(ip="192.0.2.44"))).revoked

        async def revoked_on_one() -> bool:
            return not (await stub1.CheckClient(pb.CheckClientRequest(ip="192.0.2.44"))
                        ).allow_relay

        await eventually(revoked_on_one)
        await stub1.GrantLease(grant("192.0.2.45", user="dave@example.org"))

    one.stop()
    two.stop()
    one.start()
    async with grpc.aio.insecure_channel(addr_one) as ch1:
        stub1 = rpc.RelayAuthStub(ch1)
        check = await stub1.CheckClient(pb.CheckClientRequest(ip="192.0.2.45"))
        assert check.allow_relay and check.lease_user == "dave@example.org"
        assert not (await stub1.CheckClient(pb.CheckClientRequest(ip="192.0.2.44"))).allow_relay


async def test_a_lease_names_an_existing_mailbox(start_relay: Any, js: Any,
                                                seed_users: Any) -> None:
    """`lease grant --user` of a mailbox that does not exist is refused (NOT_FOUND) and
    grants nothing; one added a moment ago is found even before the view has it."""
    relay = await start_relay()
    for user in ("ghost@example.org", "alice", "ALICE@example.org.invalid"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await relay.stub.GrantLease(grant("192.0.2.60", user=user))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert f"no mailbox {user}" in (err.value.details() or "")
    assert not (await relay.stub.ListLeases(pb.ListLeasesRequest())).leases
    assert not (await relay.stub.CheckClient(pb.CheckClientRequest(ip="192.0.2.60"))
                ).allow_relay
    # any case of an existing mailbox is that mailbox
    lease = await relay.stub.GrantLease(grant("192.0.2.61", user="Alice@Example.ORG"))
    assert lease.source == "manual"
    # a mailbox written a moment ago (the view may not have it yet: the bucket is asked)
    await seed_users(js, "new@example.org")
    assert (await relay.stub.GrantLease(grant("192.0.2.62", user="new@example.org"))).user == \
        "new@example.org"


async def test_imported_open_smtp_leases_name_no_mailbox(start_relay: Any) -> None:
    relay = await start_relay()
    req = grant("192.0.2.63", user="open-smtp")
    req.imported = True
    lease = await relay.stub.GrantLease(req)
    assert (lease.user, lease.source) == ("open-smtp", "import")
    assert (await relay.stub.CheckClient(pb.CheckClientRequest(ip="192.0.2.63"))).allow_relay


async def test_writes_without_nats_are_unavailable(start_relay: Any, nats_server: NatsServer,
                                                   tmp_path: Any) -> None:
    """The bus gone: UNAVAILABLE (retryable; the CLI says the service is unavailable), not
    UNKNOWN with a traceback; the hot path (CheckClient, from memory) still answers."""
    relay = await start_relay()
    nats_server.stop()
    try:
        for call in (relay.stub.GrantLease(grant("192.0.2.9"), timeout=30),
                     relay.stub.ImportRules(pb.ImportRulesRequest(text="127.:allow\n"),
                                            timeout=30),
                     relay.stub.CramChallenge(pb.CramChallengeRequest(hostname="mx"),
                                              timeout=30)):
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await call
            assert exc.value.code() == grpc.StatusCode.UNAVAILABLE, exc.value.details()
        assert (await relay.stub.CheckClient(pb.CheckClientRequest(ip="127.0.0.1"))).allow_relay
    finally:
        nats_server.start(tmp_path / "nats2.log")  # back, same port and store
