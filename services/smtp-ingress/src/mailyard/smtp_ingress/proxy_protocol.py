"""The PROXY protocol (HAProxy's spec, versions 1 and 2): the client's real address, sent by a
TCP load balancer in front of smtp-ingress as the first bytes of the connection.

Hostile input by design of the listener: only connections from PROXY_FROM (the proxies'
addresses) are read for a header, and from them a header is required: anything else (no
header, a malformed or truncated one, a v2 header that is not PROXY/LOCAL over TCP) closes the
connection without a reply, as the spec says a receiver must. Connections from elsewhere are
ordinary SMTP clients; a "PROXY ..." line from one is a bad command, never trusted.

parse() takes the bytes read so far and returns a Header and the bytes after it, NEED_MORE,
or raises ProxyError. It never reads more than MAX_HEADER bytes (v1: 107; v2: 16 + 65,535
allowed by the format, capped here at 16 + 536 because SMTP proxies send addresses and a few
TLVs at most).
"""

from __future__ import annotations

import asyncio
import ipaddress
import struct
from dataclasses import dataclass

V1_PREFIX = b"PROXY "
V1_MAX = 107                    # the spec's bound, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_MAX_BODY = 536               # addresses (at most 216 for AF_UNIX) plus a few TLVs
MAX_HEADER = 16 + V2_MAX_BODY
NEED_MORE = None


class ProxyError(ValueError):
    """Not a valid PROXY header: the connection is closed."""


@dataclass(frozen=True)
class Header:
    """The real client (None: LOCAL / UNKNOWN, the proxy's own connection: keep the peer)."""

    client: tuple[str, int] | None


def _v1(line: bytes) -> Header:
    parts = line.split(b" ")
    if parts[0] != b"PROXY" or len(parts) < 2:
        raise ProxyError("not a PROXY v1 line")
    if parts[1] == b"UNKNOWN":
        return Header(None)  # the rest of the line is to be ignored (spec 2.1)
    if len(parts) != 6 or parts[1] not in (b"TCP4", b"TCP6"):
        raise ProxyError("PROXY v1: expected TCP4|TCP6 src dst sport dport")
    family = 4 if parts[1] == b"TCP4" else 6
    try:
        src = ipaddress.ip_address(parts[2].decode("ascii"))
        dst = ipaddress.ip_address(parts[3].decode("ascii"))
    except ValueError:
        raise ProxyError("PROXY v1: bad address") from None
    # ipaddress takes "fe80::1%<any text>" (a zone), which is no client address: its text,
    # line breaks included, became the session's address (Received, DNSBL names)
    if getattr(src, "scope_id", None) is not None or getattr(dst, "scope_id", None) is not None:
        raise ProxyError("PROXY v1: an address with a zone")
    ports = []
    for raw in parts[4:6]:
        # decimal, no sign, no leading zero (spec: "0" only as itself), 0..65535
        if not raw.isdigit() or len(raw) > 5 or (len(raw) > 1 and raw[:1] == b"0"):
            raise ProxyError("PROXY v1: bad port")
        port = int(raw)
        if port > 65535:
            raise ProxyError("PROXY v1: bad port")
        ports.append(port)
    if src.version != family:
        raise ProxyError("PROXY v1: address does not match the protocol")
    # HAProxy on a dual-stack socket sends an IPv4 client as TCP6 ::ffff:a.b.c.d; kept
    # mapped, the DNSBLs were asked its ip6.arpa name (never listed) and greylisting put
    # every such client in one /64. As for v2, the client is its IPv4 address.
    mapped = getattr(src, "ipv4_mapped", None)
    return Header((str(mapped or src), ports[0]))


def _v2(data: bytes) -> tuple[Header, bytes] | None:
    if len(data) < 16:
        return NEED_MORE
    ver_cmd, fam, length = data[12], data[13], struct.unpack("!H", data[14:16])[0]
    if ver_cmd >> 4 != 2:
        raise ProxyError("PROXY v2: bad version")
    if length > V2_MAX_BODY:
        raise ProxyError("PROXY v2: header too long")
    if len(data) < 16 + length:
        return NEED_MORE
    body, rest = data[16:16 + length], data[16 + length:]
    command = ver_cmd & 0x0F
    if command == 0x0:          # LOCAL: the proxy's own health check; keep the peer
        return Header(None), rest
    if command != 0x1:
        raise ProxyError("PROXY v2: unknown command")
    if fam == 0x11:             # TCP over IPv4
        if length < 12:
            raise ProxyError("PROXY v2: short IPv4 addresses")
        src = ipaddress.IPv4Address(body[0:4])
        sport = struct.unpack("!H", body[8:10])[0]
    elif fam == 0x21:           # TCP over IPv6
        if length < 36:
            raise ProxyError("PROXY v2: short IPv6 addresses")
        src6 = ipaddress.IPv6Address(body[0:16])
        sport = struct.unpack("!H", body[32:34])[0]
        mapped = src6.ipv4_mapped
        return Header((str(mapped or src6), sport)), rest
    elif fam == 0x00:           # UNSPEC with PROXY: the spec says treat it like LOCAL
        return Header(None), rest
    else:                       # UDP or UNIX sockets make no sense in front of SMTP
        raise ProxyError("PROXY v2: not a TCP connection")
    return Header((str(src), sport)), rest


def parse(data: bytes) -> tuple[Header, bytes] | None:
    """(header, bytes after it), or NEED_MORE; ProxyError if it cannot be a PROXY header."""
    if data[:12] == V2_SIGNATURE[:len(data[:12])] and data[:1] == b"\r":
        if len(data) < 12:
            return NEED_MORE
        return _v2(data)
    if data[:6] != V1_PREFIX[:len(data[:6])]:
        raise ProxyError("no PROXY header")
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyError("PROXY v1: line too long")
        return NEED_MORE
    return _v1(data[:end]), data[end + 2:]


async def read_header(reader: asyncio.StreamReader, timeout: float) -> tuple[Header, bytes]:
    """Read exactly one header from a proxy's connection (ProxyError, TimeoutError)."""
    data = b""
    async with asyncio.timeout(timeout):
        while True:
            # never past MAX_HEADER; bytes after the header go back to the session
            chunk = await reader.read(MAX_HEADER - len(data))
            if not chunk:
                raise ProxyError("connection closed before the PROXY header")
            data += chunk
            found = parse(data)
            if found is not NEED_MORE:
                return found
            if len(data) >= MAX_HEADER:
                raise ProxyError("PROXY header too long")
