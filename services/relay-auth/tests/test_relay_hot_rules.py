"""tcp.smtp changes apply to the next CheckClient, without a restart."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY

from mailyard.api.relayauth.v1 import relayauth_pb2 as pb
from mailyard.core import bus
from mailyard.core.control import version_of
from mailyard.relay_auth.settings import DEFAULT_RULES


async def check(relay: Any, ip: str) -> pb.CheckClientResponse:
    return await relay.stub.CheckClient(pb.CheckClientRequest(ip=ip))


async def test_defaults_when_control_has_no_tcp_smtp(start_relay: Any) -> None:
    relay = await start_relay()
    shown = await relay.stub.ShowRules(pb.ShowRulesRequest())
    assert shown.text == DEFAULT_RULES and shown.version == version_of(DEFAULT_RULES)
    assert [(r.pattern, r.allow, dict(r.env)) for r in shown.rules] == [
        ("127.", True, {"RELAYCLIENT": ""}), ("", True, {})]
    loop = await check(relay, "127.0.0.1")
    assert loop.allow_relay and loop.dnsbl_exempt and loop.rule == "127."
    assert loop.rule_version == shown.version
    stranger = await check(relay, "192.0.2.1")
    assert stranger.allow_connect and not stranger.allow_relay and not stranger.dnsbl_exempt


async def test_import_applies_at_once_and_is_shown(start_relay: Any, js: Any) -> None:
    relay = await start_relay()
    text = ('127.:allow,RELAYCLIENT=""\n192.0.2.:allow,RELAYCLIENT=""\n'
            '198.51.100.:deny\n203.0.113.:allow,RBLSMTPD=""\n'
            '203.0.114.:allow,RBLSMTPD="-you are listed"\n:allow\n')
    imported = await relay.stub.ImportRules(pb.ImportRulesRequest(text=text))
    assert imported.version == version_of(text) and len(imported.rules) == 6
    kv = await js.key_value(bus.KV_CONTROL)
    assert (await kv.get("tcp.smtp")).value == text.encode()

    relay_client = await check(relay, "192.0.2.9")
    assert relay_client.allow_relay and relay_client.rule == "192.0.2."
    assert relay_client.rule_version == imported.version
    denied = await check(relay, "198.51.100.1")
    assert not denied.allow_connect and not denied.allow_relay
    exempt = await check(relay, "203.0.113.1")
    assert exempt.dnsbl_exempt and not exempt.allow_relay and exempt.env["RBLSMTPD"] == ""
    listed = await check(relay, "203.0.114.1")
    assert not listed.dnsbl_exempt and listed.env["RBLSMTPD"] == "-you are listed"
    assert (await relay.stub.ShowRules(pb.ShowRulesRequest())).text == text


async def test_a_write_by_the_control_service_is_picked_up(start_relay: Any, js: Any,
                                                          eventually: Any) -> None:
    relay = await start_relay()
    kv = await bus.ensure_kv(js, bus.KV_CONTROL)
    await kv.put("tcp.smtp", b"192.0.2.7:deny\n:allow\n")

    async def denied() -> bool:
        return not (await check(relay, "192.0.2.7")).allow_connect

    await eventually(denied)
    # A bad file written past ImportRules keeps the last good rules.
    good = (await relay.stub.ShowRules(pb.ShowRulesRequest())).version
    await kv.put("tcp.smtp", b"this is not tcprules\n")
    await kv.put("dnsbl", b"zen.spamhaus.org\n")  # a later change proves the bad one was seen

    async def seen() -> bool:  # watch events arrive in order: dnsbl seen => bad text seen
        return REGISTRY.get_sample_value("mailyard_control_file_info", {
            "file": "dnsbl", "version": version_of("zen.spamhaus.org\n")}) == 1

    await eventually(seen)
    assert (await check(relay, "192.0.2.7")).rule_version == good
    assert not (await check(relay, "192.0.2.7")).allow_connect
    # Removing the file brings back the defaults (never an open relay).
    await kv.delete("tcp.smtp")

    async def defaults() -> bool:
        return (await check(relay, "192.0.2.7")).rule_version == version_of(DEFAULT_RULES)

    await eventually(defaults)


async def test_deny_rule_beats_a_lease(start_relay: Any, lease_users: Any) -> None:
    relay = await start_relay()
    await relay.stub.ImportRules(pb.ImportRulesRequest(text="192.0.2.:deny\n:allow\n"))
    await relay.stub.GrantLease(pb.GrantLeaseRequest(ip="192.0.2.3", user="a@example.org"))
    result = await check(relay, "192.0.2.3")
    assert not result.allow_connect and not result.allow_relay


async def test_a_lease_is_exempt_from_its_range_s_rblsmtpd_text(start_relay: Any,
                                                                 lease_users: Any) -> None:
    """A lease is vpopmail's open-smtp line for the address, 'IP:allow,RELAYCLIENT="",
    RBLSMTPD=""': more specific than a range's rule, so a range blocked with an RBLSMTPD
    text (dial-up and dynamic ranges, the customers POP-before-SMTP is for) does not block
    a client that logged in. The range's text stayed in env with the lease's relay, and
    smtp-ingress answered every RCPT of that customer with it."""
    relay = await start_relay()
    await relay.stub.ImportRules(pb.ImportRulesRequest(
        text='192.0.2.:allow,RBLSMTPD="-dynamic address, use your provider\'s relay"\n'
             '127.:allow,RELAYCLIENT=""\n:allow\n'))
    blocked = await check(relay, "192.0.2.3")
    assert blocked.env["RBLSMTPD"].startswith("-dynamic") and not blocked.dnsbl_exempt
    await relay.stub.GrantLease(pb.GrantLeaseRequest(ip="192.0.2.3", user="a@example.org"))
    leased = await check(relay, "192.0.2.3")
    assert leased.allow_relay and leased.decided_by == pb.DECIDER_LEASE
    assert dict(leased.env) == {"RELAYCLIENT": "", "RBLSMTPD": ""} and leased.dnsbl_exempt
    assert (await check(relay, "192.0.2.4")).env["RBLSMTPD"].startswith("-dynamic")


@pytest.mark.parametrize("text", [
    "1.2.3:allow\n", ':allow,RELAYCLIENT=""\n',
    # the catch-all spelt as networks: every IPv4 or every IPv6 address relays just the same
    # (these were imported as written)
    '127.:allow,RELAYCLIENT=""\n0.0.0.0/0:allow,RELAYCLIENT=""\n',
    '::/0:allow,RELAYCLIENT=""\n:allow\n',
    '0-127.:allow,RELAYCLIENT=""\n128.0.0.0/1:allow,RELAYCLIENT="",RBLSMTPD=""\n'])
async def test_import_refuses_bad_text_and_open_relays(start_relay: Any, text: str) -> None:
    relay = await start_relay()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await relay.stub.ImportRules(pb.ImportRulesRequest(text=text))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (await relay.stub.ShowRules(pb.ShowRulesRequest())).text == DEFAULT_RULES


async def test_import_larger_than_a_bus_record_is_refused(start_relay: Any) -> None:
    """nats-server takes at most max_payload (1 MiB by default) in one message: a longer
    tcp.smtp (a big blocklist) is refused by size, and the rules in force stay."""
    relay = await start_relay()
    before = await relay.stub.ShowRules(pb.ShowRulesRequest())
    text = "".join(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}:deny\n"
                   for n in range(80_000)) + "127.:allow,RELAYCLIENT=\"\"\n:allow\n"
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await relay.stub.ImportRules(pb.ImportRulesRequest(text=text))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.value.details()
    assert "max_payload" in (exc.value.details() or "")
    assert (await relay.stub.ShowRules(pb.ShowRulesRequest())).version == before.version
