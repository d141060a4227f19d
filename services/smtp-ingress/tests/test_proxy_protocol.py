"""PROXY protocol v1/v2 on a listener that enables it: the parser against hostile input
(hypothesis), and the real ingress: a proxy's header makes relay rules and the Received line
see the real client; a proxy without a header is cut off unanswered; anyone else is an
ordinary client whose "PROXY" line is a bad command."""

from __future__ import annotations

import asyncio
import ipaddress
import struct
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from ingress_helpers import (
    Client,
    MakeIngress,
    committed,
    put_control,
    seed_directory,
    wait_for,
)

from mailyard.core.spool import Spool
from mailyard.smtp_ingress import replies as R
from mailyard.smtp_ingress.proxy_protocol import (
    MAX_HEADER,
    NEED_MORE,
    V2_SIGNATURE,
    Header,
    ProxyError,
    parse,
)
from mailyard.smtp_ingress.server import Ingress
from mailyard.testing import DnsServer

ports = st.integers(min_value=0, max_value=65535)
v4 = st.ip_addresses(v=4)
v6 = st.ip_addresses(v=6)


def v1(src: Any, dst: Any, sport: int, dport: int) -> bytes:
    family = "TCP4" if src.version == 4 else "TCP6"
    return f"PROXY {family} {src} {dst} {sport} {dport}\r\n".encode()


def v2(src: Any, dst: Any, sport: int, dport: int, tlv: bytes = b"", command: int = 1) -> bytes:
    if src.version == 4:
        body, family = src.packed + dst.packed + struct.pack("!HH", sport, dport), 0x11
    else:
        body, family = src.packed + dst.packed + struct.pack("!HH", sport, dport), 0x21
    body += tlv
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


def expected(src: Any) -> str:
    mapped = getattr(src, "ipv4_mapped", None)
    return str(mapped or src)


@given(st.one_of(st.tuples(v4, v4), st.tuples(v6, v6)), ports, ports, st.binary(max_size=64))
def test_v1_round_trip_keeps_what_follows(addrs: Any, sport: int, dport: int,
                                          after: bytes) -> None:
    src, dst = addrs
    header, rest = parse(v1(src, dst, sport, dport) + after)  # type: ignore[misc]
    assert header == Header((expected(src), sport)) and rest == after


@given(v4, ports)
def test_v1_and_v2_give_an_ipv4_client_behind_a_dual_stack_proxy_as_ipv4(src: Any,
                                                                        sport: int) -> None:
    # HAProxy bound to :: (v4v6) sends an IPv4 client as TCP6 ::ffff:a.b.c.d
    mapped = ipaddress.ip_address(f"::ffff:{src}")
    for header in (v1(mapped, ipaddress.ip_address("::1"), sport, 25),
                   v2(mapped, ipaddress.ip_address("::1"), sport, 25)):
        assert parse(header) == (Header((str(src), sport)), b"")


@given(st.one_of(st.tuples(v4, v4), st.tuples(v6, v6)), ports, ports,
       st.binary(max_size=40), st.binary(max_size=64))
def test_v2_round_trip_with_tlvs(addrs: Any, sport: int, dport: int, tlv: bytes,
                                 after: bytes) -> None:
    src, dst = addrs
    header, rest = parse(v2(src, dst, sport, dport, tlv) + after)  # type: ignore[misc]
    assert header == Header((expected(src), sport)) and rest == after


@given(st.one_of(st.tuples(v4, v4), st.tuples(v6, v6)), ports, ports, st.data())
def test_every_truncation_waits_for_more(addrs: Any, sport: int, dport: int, data: Any) -> None:
    src, dst = addrs
    whole = data.draw(st.sampled_from([v1(src, dst, sport, dport), v2(src, dst, sport, dport)]))
    cut = data.draw(st.integers(min_value=0, max_value=len(whole) - 1))
    assert parse(whole[:cut]) is NEED_MORE


@given(st.binary(max_size=MAX_HEADER + 50))
def test_any_bytes_are_a_header_more_or_a_refusal(data: bytes) -> None:
    try:
        found = parse(data)
    except ProxyError:
        return
    if found is NEED_MORE:
        assert len(data) < MAX_HEADER
        return
    header, rest = found
    assert len(data) - len(rest) <= MAX_HEADER
    if header.client is not None:
        address = ipaddress.ip_address(header.client[0])
        assert str(address) == header.client[0] and "%" not in header.client[0]
        assert 0 <= header.client[1] <= 65535


@given(st.sampled_from([
    b"PROXY TCP4 1.2.3.4 5.6.7.8 080 25\r\n",          # leading zero
    b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 25\r\n",        # out of range
    b"PROXY TCP4 ::1 ::1 1 2\r\n",                     # family mismatch
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",               # missing field
    b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",            # two spaces
    b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
    b"EHLO client.test\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2" + b" " * 100 + b"\r\n",
    # a zone: Python's ipaddress takes any text after "%", which then went into the session's
    # address: Received lines (a line break and a field of the proxy's choosing), DNSBL and
    # greylisting (a ValueError at RCPT)
    b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
    b"PROXY TCP6 fe80::1%a\nX-Injected:\x00yes ::1 1 2\r\n",
    b"PROXY TCP6 ::1 fe80::1%eth0 1 2\r\n",
]))
def test_malformed_v1_is_refused(line: bytes) -> None:
    try:
        parse(line)
    except ProxyError:
        return
    raise AssertionError(f"accepted {line!r}")


def test_v2_local_unknown_and_non_tcp() -> None:
    local = V2_SIGNATURE + b"\x20\x00\x00\x00"
    assert parse(local) == (Header(None), b"")
    assert parse(b"PROXY UNKNOWN whatever\r\nEHLO") == (Header(None), b"EHLO")
    udp = V2_SIGNATURE + b"\x21\x12\x00\x0c" + b"\x00" * 12
    for bad in (udp, V2_SIGNATURE + b"\x11\x11\x00\x00",       # version 1 in a v2 header
                V2_SIGNATURE + b"\x21\x11\xff\xff"):           # longer than we accept
        try:
            parse(bad)
        except ProxyError:
            continue
        raise AssertionError(f"accepted {bad!r}")


# -- the real ingress ----------------------------------------------------------------------

async def _proxied(make_ingress: MakeIngress, js: Any, relay_auth: str) -> Ingress:
    # only the proxy's own address (127.0.0.1) may relay; proxied clients are who they are
    await put_control(js, "tcp.smtp", '127.0.0.1:allow,RELAYCLIENT=""\n:allow\n')
    await seed_directory(js, "example.org", ["alice@example.org"])
    ingress = await make_ingress(relay_auth_addr=relay_auth, relay_auth_timeout=2.0,
                                 proxy_protocol="smtp", proxy_from="127.0.0.1/32")
    await wait_for(lambda: ingress.directory.accepts("alice@example.org"))
    return ingress


async def _connect(port: int, source: str = "127.0.0.1") -> Client:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    return Client(reader, writer)


async def test_proxy_header_gives_relay_rules_and_received_the_real_client(
        make_ingress: MakeIngress, js: Any, relay_auth: str) -> None:
    ingress = await _proxied(make_ingress, js, relay_auth)
    port = ingress.ports["smtp"]
    client = await _connect(port)
    await client.send(v1(ipaddress.ip_address("192.0.2.7"), ipaddress.ip_address("127.0.0.1"),
                         40000, 25))
    assert (await client.reply()).startswith("220 ")
    assert (await client.cmd("EHLO client.test")).startswith("250")
    assert await client.cmd("MAIL FROM:<a@client.test>") == R.MAIL_OK
    assert await client.cmd("RCPT TO:<x@elsewhere.test>") == R.RCPTHOSTS  # not 127.0.0.1
    assert await client.cmd("RCPT TO:<alice@example.org>") == R.RCPT_OK
    assert await client.cmd("DATA") == R.GO_AHEAD
    assert (await client.cmd("Subject: via a proxy\r\n\r\nhi\r\n.")).startswith("250 ")
    await client.close()
    [path] = committed(ingress)
    env, data = await Spool(ingress.settings.spool_dir).read(path)
    assert env.client_ip == "192.0.2.7"
    assert b"(192.0.2.7)" in data.split(b"\r\n\r\n", 1)[0]

    # v2 (binary) for a client that may relay: the proxy's rule applies to it, not to all
    client = await _connect(port)
    await client.send(v2(ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("127.0.0.1"),
                         40001, 25))
    assert (await client.reply()).startswith("220 ")
    assert (await client.cmd("EHLO client.test")).startswith("250")
    assert await client.cmd("MAIL FROM:<a@client.test>") == R.MAIL_OK
    assert await client.cmd("RCPT TO:<x@elsewhere.test>") == R.RCPT_OK
    await client.close()


async def test_an_ipv4_client_sent_as_tcp6_is_checked_as_itself(
        make_ingress: MakeIngress, js: Any, relay_auth: str, dns_server: DnsServer) -> None:
    """PROXY v1 `TCP6 ::ffff:192.0.2.7`: the DNSBL, greylisting, SPF and Received see
    192.0.2.7, as for v2 and for the same client sent as TCP4."""
    await put_control(js, "dnsbl", "bl.test\n")
    dns_server.add("7.2.0.192.bl.test", "A", "127.0.0.2")
    dns_server.add("7.2.0.192.bl.test", "TXT", '"Listed, see https://bl.test/192.0.2.7"')
    await put_control(js, "tcp.smtp", ":allow\n")
    await seed_directory(js, "example.org", ["alice@example.org"])
    ingress = await make_ingress(relay_auth_addr=relay_auth, relay_auth_timeout=2.0,
                                 proxy_protocol="smtp", proxy_from="127.0.0.1/32",
                                 dns_servers=f"127.0.0.1:{dns_server.port}", dnsbl_timeout=2.0)
    await wait_for(lambda: ingress.directory.accepts("alice@example.org")
                   and ingress.control.lines("dnsbl") != [])
    client = await _connect(ingress.ports["smtp"])
    await client.send(b"PROXY TCP6 ::ffff:192.0.2.7 ::1 40000 25\r\n")
    assert (await client.reply()).startswith("220 ")
    assert (await client.cmd("EHLO client.test")).startswith("250")
    assert await client.cmd("MAIL FROM:<a@client.test>") == R.MAIL_OK
    assert await client.cmd("RCPT TO:<alice@example.org>") == \
        R.dnsbl("Listed, see https://bl.test/192.0.2.7", permanent=False)
    await client.close()


async def test_a_proxy_without_a_header_is_cut_off_and_others_cannot_send_one(
        make_ingress: MakeIngress, js: Any, relay_auth: str) -> None:
    ingress = await _proxied(make_ingress, js, relay_auth)
    port = ingress.ports["smtp"]
    client = await _connect(port)
    await client.send("EHLO client.test\r\n")  # from the proxy's address, no header
    assert await client.reply() == ""           # closed, unanswered
    await client.close()

    client = await _connect(port, source="127.0.0.2")  # not a proxy: an ordinary client
    assert (await client.reply()).startswith("220 ")
    reply = await client.cmd("PROXY TCP4 127.0.0.1 127.0.0.1 1 25")
    assert reply[:1] == "5", reply
    assert (await client.cmd("EHLO client.test")).startswith("250")
    assert await client.cmd("MAIL FROM:<a@client.test>") == R.MAIL_OK
    assert await client.cmd("RCPT TO:<x@elsewhere.test>") == R.RCPTHOSTS  # still 127.0.0.2
    await client.close()


def test_settings_refuse_a_proxy_listener_anyone_could_use(monkeypatch: Any) -> None:
    from mailyard.core.errors import SettingsError
    from mailyard.smtp_ingress.settings import Settings

    monkeypatch.setenv("MAILYARD_INGRESS_PROXY_PROTOCOL", "smtp")
    for proxy_from, why in (("", "needs PROXY_FROM"), ("10.0.0.300", "PROXY_FROM")):
        monkeypatch.setenv("MAILYARD_INGRESS_PROXY_FROM", proxy_from)
        try:
            Settings.load()
        except SettingsError as exc:
            assert why in str(exc)
            continue
        raise AssertionError(f"PROXY_FROM={proxy_from!r} accepted")
    monkeypatch.setenv("MAILYARD_INGRESS_PROXY_PROTOCOL", "smtps")
    monkeypatch.setenv("MAILYARD_INGRESS_PROXY_FROM", "10.0.0.0/8")
    try:
        Settings.load()
    except SettingsError as exc:
        assert "only smtp and submission" in str(exc)
    else:
        raise AssertionError("PROXY on smtps accepted")
