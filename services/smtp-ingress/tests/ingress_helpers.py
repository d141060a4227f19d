"""Helpers and fixtures for smtp-ingress tests: an in-process ingress on loopback ports,
the real relay-auth, a raw SMTP client (exact replies), trustme certs (DNS: mailyard.testing's
loopback server, the `dns_server` fixture)."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from mailyard.api.directory.v1 import directory_pb2 as dpb
from mailyard.api.mail.v1.envelope_pb2 import Envelope
from mailyard.core import bus
from mailyard.core.directory import domain_key, record_key
from mailyard.core.natsserver import NatsServer, free_port
from mailyard.core.spool import Spool
from mailyard.smtp_ingress import replies
from mailyard.smtp_ingress.data_decoder import line_facts
from mailyard.smtp_ingress.server import Ingress
from mailyard.smtp_ingress.settings import Settings
from mailyard.testing import grpc_service


class Client:
    """A raw SMTP client: what we send is exactly what the server gets."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, tls: ssl.SSLContext | None = None) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls,
                                                       server_hostname="localhost" if tls
                                                       else None)
        return cls(reader, writer)

    async def send(self, data: bytes | str) -> None:
        self.writer.write(data.encode() if isinstance(data, str) else data)
        await self.writer.drain()

    async def reply(self, timeout: float = 10) -> str:
        """One whole (possibly multi-line) reply, lines joined by \\n, or "" at EOF."""
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), timeout)
            if not line:
                return "\n".join(lines)
            text = line.decode().rstrip("\r\n")
            lines.append(text)
            if len(text) < 4 or text[3] != "-":
                return "\n".join(lines)

    async def cmd(self, line: str) -> str:
        await self.send(line + "\r\n")
        return await self.reply()

    async def starttls(self, context: ssl.SSLContext) -> None:
        assert (await self.cmd("STARTTLS")).startswith("220")
        await self.writer.start_tls(context, server_hostname="localhost")

    async def eof(self, timeout: float = 10) -> bool:
        return await asyncio.wait_for(self.reader.read(), timeout) == b""

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except Exception:
            pass


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(ca: trustme.CA, tmp_path: Path) -> tuple[str, str]:
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(cert_path), append=True)
    cert.private_key_pem.write_to_path(str(key_path))
    return str(cert_path), str(key_path)


@pytest.fixture
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def ingress_settings(tmp_path: Path, nats_url: str, tls_files: tuple[str, str],
                     **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(
        nats_url=nats_url, spool_dir=tmp_path / "spool", smtp_port=free_port(),
        submission_port=free_port(), smtps_port=free_port(), tls_cert=tls_files[0],
        tls_key=tls_files[1], relay_auth_addr=f"127.0.0.1:{free_port()}",
        relay_auth_timeout=0.5, reverse_dns=False, me="mx.test", publish_timeout=5.0,
        error_sleep_time=0,  # a second per reply past SOFT_ERROR_LIMIT: test_error_limits
        sender_auth=False,  # SPF/DKIM/DMARC lookups: test_sender_auth turns them on
        spool_reserve=8)  # a cost, not a behaviour: test_spool_reserve has the default's
    values.update(overrides)
    return Settings(**values)


MakeIngress = Callable[..., Awaitable[Ingress]]


@pytest.fixture
async def make_ingress(tmp_path: Path, nats_server: NatsServer, js: Any,
                       tls_files: tuple[str, str]) -> AsyncIterator[MakeIngress]:
    made: list[Ingress] = []

    async def make(**overrides: Any) -> Ingress:
        ingress = Ingress(ingress_settings(tmp_path, nats_server.url, tls_files, **overrides))
        await ingress.start()
        for _ in range(200):
            if ingress.ready():
                break
            await asyncio.sleep(0.05)
        made.append(ingress)
        return ingress

    yield make
    for ingress in made:
        await ingress.stop(grace=2)


@pytest.fixture
async def ingress(make_ingress: MakeIngress) -> Ingress:
    return await make_ingress()


async def seed_directory(js: Any, domain: str, mailboxes: list[str]) -> None:
    kv = await bus.ensure_kv(js, bus.KV_DIRECTORY)
    await kv.put(domain_key(domain), dpb.Domain(name=domain).SerializeToString())
    for address in mailboxes:
        await kv.put(record_key("mailbox", address),
                     dpb.Mailbox(address=address).SerializeToString())


async def put_control(js: Any, name: str, text: str) -> None:
    kv = await bus.ensure_kv(js, bus.KV_CONTROL)
    await kv.put(name, text.encode())


async def wait_for(predicate: Callable[[], bool], timeout: float = 10) -> None:
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


def committed(ingress: Ingress) -> list[str]:
    return list(Spool(ingress.settings.spool_dir).iter_committed())


async def todo_count(js: Any) -> int:
    return int((await js.stream_info(bus.TODO_STREAM)).state.messages)


@pytest.fixture
async def local(js: Any, ingress: Ingress) -> Ingress:
    """The ingress with example.org local (alice, bob) and the views updated."""
    await seed_directory(js, "example.org", ["alice@example.org", "bob@example.org"])
    await wait_for(lambda: ingress.directory.accepts("bob@example.org"))
    return ingress


async def session(port: int, helo: str = "EHLO client.test") -> Client:
    client = await Client.connect(port)
    assert (await client.reply()).startswith("220 ")
    assert (await client.cmd(helo)).startswith("250")
    return client


async def submission_login(ingress: Ingress, context: ssl.SSLContext, user: str,
                           password: str) -> Client:
    """A session on the submission port, after STARTTLS and a successful AUTH PLAIN."""
    client = await session(ingress.ports["submission"])
    await client.starttls(context)
    assert (await client.cmd("EHLO client.test")).startswith("250")
    assert await client.cmd(f"AUTH PLAIN {plain(user, password)}") == replies.AUTH_OK
    return client


# -- relay-auth as a real child process ----------------------------------------------------

@pytest.fixture
def relay_auth(nats_server: NatsServer, tmp_path: Path) -> Iterator[str]:
    """The real relay-auth service; yields its gRPC address."""
    proc, address = grpc_service("mailyard.relay_auth", "RELAYAUTH", nats_server.url,
                                 tmp_path / "logs")
    proc.start()
    yield address
    proc.stop()


async def seed_user(js: Any, address: str, password: str) -> None:
    from argon2 import PasswordHasher

    hasher = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
    kv = await bus.ensure_kv(js, bus.KV_DIRECTORY)
    await kv.put(record_key("mailbox", address), dpb.Mailbox(
        address=address, password_hash=hasher.hash(password),
        cram_md5_secret=password.encode().hex()).SerializeToString())


def lines_hold(envelope: Envelope, data: bytes) -> tuple[int, bool]:
    """Asserts that the Lines facts ingress spooled hold for the spooled bytes (what lets
    remote-delivery skip its passes over them); returns the facts of the bytes. `longest`
    may be too high (an edited header section lost its longest line), never too low."""
    facts = line_facts(data)
    assert facts is not None, "ingress spooled a bare CR or LF"
    assert envelope.HasField("lines")
    assert envelope.lines.longest >= facts[0]
    assert envelope.lines.leading_dot or not facts[1]
    return facts
