"""Mailbox logins (IMAP / POP3 through the Dovecot bridge) over real gRPC: a correct login
grants the POP-before-SMTP lease with its user and protocol, a failed one grants nothing,
SMTP AUTH grants nothing, and the leases are counted by source."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY

from mailyard.api.relayauth.v1 import relayauth_pb2 as pb


def login(user: str, password: str, ip: str, protocol: str) -> pb.AuthenticateRequest:
    return pb.AuthenticateRequest(mechanism="PLAIN", username=user, password=password,
                                  client_ip=ip, protocol=protocol)


def granted(source: str) -> float:
    return REGISTRY.get_sample_value("mailyard_relay_leases_granted_total",
                                     {"source": source}) or 0.0


async def test_login_grants_a_lease_with_user_and_protocol(start_relay: Any, js: Any,
                                                           seed_mailbox: Any) -> None:
    relay = await start_relay(lease_ttl=600)
    await seed_mailbox(js, "alice@example.org", "s3cret")
    pop3_before, imap_before = granted("pop3"), granted("imap")

    bad = await relay.stub.Authenticate(login("alice@example.org", "wrong", "198.51.100.9",
                                              "pop3"))
    assert bad.result == pb.AUTH_RESULT_BAD_CREDENTIALS and not bad.HasField("lease")
    assert not (await relay.stub.ListLeases(pb.ListLeasesRequest())).leases

    ok = await relay.stub.Authenticate(login("Alice@Example.org", "s3cret", "198.51.100.9",
                                             "pop3"))
    assert ok.result == pb.AUTH_RESULT_OK and ok.user == "alice@example.org"
    assert ok.lease.ip == "198.51.100.9" and ok.lease.source == "pop3"
    assert ok.lease.expires_at.seconds - ok.lease.granted_at.seconds == 600
    listed = (await relay.stub.ListLeases(pb.ListLeasesRequest())).leases
    assert [(x.ip, x.user, x.source) for x in listed] == [
        ("198.51.100.9", "alice@example.org", "pop3")]
    check = await relay.stub.CheckClient(pb.CheckClientRequest(ip="198.51.100.9"))
    assert check.allow_relay and check.lease_user == "alice@example.org"

    again = await relay.stub.Authenticate(login("alice@example.org", "s3cret", "198.51.100.9",
                                                "IMAP"))
    assert again.lease.source == "imap"  # a refresh records the latest login
    assert granted("pop3") == pop3_before + 1 and granted("imap") == imap_before + 1


async def test_smtp_auth_and_manual_grants_keep_their_source(start_relay: Any, js: Any,
                                                             seed_mailbox: Any) -> None:
    relay = await start_relay()
    await seed_mailbox(js, "bob@example.org", "pw")
    manual_before = granted("manual")
    smtp = await relay.stub.Authenticate(login("bob@example.org", "pw", "198.51.100.10", ""))
    assert smtp.result == pb.AUTH_RESULT_OK and not smtp.HasField("lease")
    assert not (await relay.stub.ListLeases(pb.ListLeasesRequest())).leases
    lease = await relay.stub.GrantLease(pb.GrantLeaseRequest(ip="198.51.100.11",
                                                             user="bob@example.org"))
    assert lease.source == "manual" and granted("manual") == manual_before + 1


@pytest.mark.parametrize(("protocol", "ip"), [("nntp", "198.51.100.12"), ("pop3", ""),
                                              ("imap", "not-an-ip")])
async def test_bad_protocol_or_address_is_invalid_argument(start_relay: Any, js: Any,
                                                           seed_mailbox: Any, protocol: str,
                                                           ip: str) -> None:
    relay = await start_relay()
    await seed_mailbox(js, "carol@example.org", "pw")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await relay.stub.Authenticate(login("carol@example.org", "pw", ip, protocol))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert not (await relay.stub.ListLeases(pb.ListLeasesRequest())).leases


async def test_a_link_local_client_is_its_address_without_the_zone(start_relay: Any, js: Any,
                                                                   seed_mailbox: Any) -> None:
    """A client on a link-local IPv6 address is named with its zone by the socket API
    (getpeername: 'fe80::1%eth0'), and smtp-ingress and the bridge pass that on. It is the
    address tcpserver puts in TCPREMOTEIP (the zone names our interface, not the client):
    Authenticate answered UNKNOWN with a traceback (ipaddress cannot write a scoped address
    out in full, the lease and throttle key), CheckClient and GrantLease 'not an IP address'."""
    relay = await start_relay()
    await seed_mailbox(js, "dave@example.org", "pw")
    await relay.stub.ImportRules(pb.ImportRulesRequest(
        text='fe80::7/128:deny\n127.:allow,RELAYCLIENT=""\n:allow\n'))
    smtp = await relay.stub.Authenticate(login("dave@example.org", "pw", "fe80::1%eth0", ""))
    assert (smtp.result, smtp.user) == (pb.AUTH_RESULT_OK, "dave@example.org")
    wrong = await relay.stub.Authenticate(login("dave@example.org", "x", "fe80::1%eth0", ""))
    assert wrong.result == pb.AUTH_RESULT_BAD_CREDENTIALS
    imap = await relay.stub.Authenticate(login("dave@example.org", "pw", "fe80::1%eth0", "imap"))
    assert imap.result == pb.AUTH_RESULT_OK and imap.lease.ip == "fe80::1"
    check = await relay.stub.CheckClient(pb.CheckClientRequest(ip="fe80::1%eth1"))
    assert check.allow_relay and check.lease_user == "dave@example.org"
    denied = await relay.stub.CheckClient(pb.CheckClientRequest(ip="fe80::7%eth0"))
    assert not denied.allow_connect
    assert (await relay.stub.RevokeLease(pb.RevokeLeaseRequest(ip="fe80::1%2"))).revoked
