"""Smaller asyncio TLS buffers still carry any amount of data, records larger than a read
included, both ways."""

from __future__ import annotations

import asyncio
import ssl
from asyncio import sslproto

import pytest
import trustme

from mailyard.core import tls_buffers


async def test_a_megabyte_each_way_through_lean_buffers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sslproto.SSLProtocol, "max_size", 256 * 1024)
    tls_buffers.lean()
    assert sslproto.SSLProtocol.max_size == tls_buffers.MAX_SIZE
    tls_buffers.lean()  # again: no change, never larger
    assert sslproto.SSLProtocol.max_size == tls_buffers.MAX_SIZE

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    payload = bytes(range(256)) * 4096 + b"end"  # 1 MiB and a bit

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.readexactly(len(payload))
        writer.write(data[::-1])
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx,
                                                   server_hostname="localhost")
    writer.write(payload)
    await writer.drain()
    assert await reader.readexactly(len(payload)) == payload[::-1]
    writer.close()
    server.close()
    await server.wait_closed()
