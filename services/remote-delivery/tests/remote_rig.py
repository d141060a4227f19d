"""Real parts for remote-delivery tests (imported by conftest and the tests): SMTP servers
that misbehave in the ways remote hosts do, and a worker running in-process against the
test's nats-server. DNS is mailyard.testing's loopback server (the `dns_server` fixture)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import socketserver
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from mailyard.api.mail.v1.delivery_pb2 import CHANNEL_REMOTE, DeliveryJob, DeliveryResult
from mailyard.api.mail.v1.envelope_pb2 import ORIGIN_UNSPECIFIED, Envelope, Origin
from mailyard.core import bus
from mailyard.core.control import ControlView
from mailyard.core.identity import Identity
from mailyard.core.natsserver import free_port
from mailyard.core.spool import Spool
from mailyard.remote_delivery.deliver import Deliverer
from mailyard.remote_delivery.lookup import Lookup
from mailyard.remote_delivery.pool import Pool
from mailyard.remote_delivery.settings import Settings
from mailyard.remote_delivery.worker import Worker
from mailyard.testing import DnsServer

# -- SMTP ------------------------------------------------------------------------------


@dataclass
class Got:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    mail_options: list[str]
    tls: bool
    auth_user: str = ""  # the AUTH login of the session ("" = none)


@dataclass
class Smtp:
    """aiosmtpd on 127.0.0.1 with STARTTLS when given a context, per-recipient refusals,
    an optional gate that holds the final-dot reply, and AUTH (PLAIN, LOGIN) when given
    `users` (login -> password); with a TLS context AUTH is offered only after STARTTLS,
    and MAIL needs a successful AUTH. `pipelining` offers PIPELINING (aiosmtpd reads
    command by command, so pipelined groups simply work)."""

    tls_context: ssl.SSLContext | None = None
    refuse: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    port: int = 0
    messages: list[Got] = field(default_factory=list)
    sessions: int = 0
    in_data: threading.Event = field(default_factory=threading.Event)
    hold_first: bool = False
    active: int = 0
    max_active: int = 0
    users: dict[str, str] | None = None
    auth_attempts: list[tuple[str, str, bool]] = field(default_factory=list)  # mech, user, ok
    pipelining: bool = False
    _controller: Any = None

    def start(self) -> Smtp:
        sink = self

        class Handler:
            async def handle_EHLO(self, server: Any, session: Any, envelope: Any,
                                  hostname: str, responses: list[str]) -> list[str]:
                session.host_name = hostname
                if not any("SIZE" in r for r in responses):
                    responses.insert(-1, "250-SIZE 1000000")
                if sink.pipelining:
                    responses.insert(-1, "250-PIPELINING")
                return responses

            async def handle_MAIL(self, server: Any, session: Any, envelope: Any,
                                  address: str, options: list[str]) -> str:
                envelope.mail_from = address
                envelope.mail_options.extend(options)
                return "250 2.1.0 ok"

            async def handle_RCPT(self, server: Any, session: Any, envelope: Any,
                                  address: str, options: list[str]) -> str:
                if address in sink.refuse:
                    return sink.refuse[address]
                envelope.rcpt_tos.append(address)
                return "250 2.1.5 ok"

            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                sink.active += 1
                sink.max_active = max(sink.max_active, sink.active)
                try:
                    sink.in_data.set()
                    if sink.hold_first:
                        sink.hold_first = False
                        await asyncio.sleep(60)
                    if sink.delay:
                        await asyncio.sleep(sink.delay)
                    login = session.login_data
                    sink.messages.append(Got(
                        envelope.mail_from, list(envelope.rcpt_tos),
                        envelope.original_content or b"", list(envelope.mail_options),
                        session.ssl is not None,
                        login.decode() if isinstance(login, bytes) else ""))
                    return "250 2.0.0 ok queued"
                finally:
                    sink.active -= 1

        self.port = self.port or free_port()
        kwargs: dict[str, Any] = {"enable_SMTPUTF8": True, "decode_data": False}
        if self.tls_context is not None:
            kwargs.update(tls_context=self.tls_context, require_starttls=False)
        if self.users is not None:
            kwargs.update(authenticator=self._authenticate, auth_required=True,
                          auth_require_tls=self.tls_context is not None)
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port,
                                      **kwargs)
        self._controller.start()
        return self

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> AuthResult:
        assert self.users is not None
        login = auth_data.login.decode()
        ok = self.users.get(login) == auth_data.password.decode()
        self.auth_attempts.append((mechanism, login, ok))
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    def stop(self) -> None:
        if self._controller:
            self._controller.stop()


class Greeter:
    """A server that greets with `line` (e.g. a 421) and closes."""

    def __init__(self, line: bytes) -> None:
        self.line = line
        greeter = self

        class H(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.sendall(greeter.line)
                with contextlib.suppress(OSError):
                    self.request.recv(100)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def smtp_servers() -> Iterator[list[Any]]:
    """Collects servers a test starts and stops them afterwards."""
    started: list[Any] = []
    yield started
    for server in started:
        server.stop()


def closed_port() -> int:
    """A loopback port nobody listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


def server_tls(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


# -- the service, in process -----------------------------------------------------------


@dataclass
class Rig:
    js: Any
    spool: Spool
    control: ControlView
    settings: Settings
    deliverer: Deliverer
    pool: Pool
    kv: Any

    async def routes(self, text: str) -> None:
        await self.kv.put("smtproutes", text.encode())
        for _ in range(200):
            if self.control.text("smtproutes") == text:
                return
            await asyncio.sleep(0.01)

    async def message(self, data: bytes, recipients: list[str], sender: str = "a@ours.test",
                      origin: Origin.ValueType = ORIGIN_UNSPECIFIED, **job: Any) -> DeliveryJob:
        qid = f"01TEST{len(data):06d}{abs(hash((data, origin))) % 10**10:010d}"[:26]
        stored = await self.spool.commit(Envelope(queue_id=qid, sender=sender,
                                                  recipients=recipients, origin=origin), data)
        domain = recipients[0].rpartition("@")[2]
        return DeliveryJob(job_id=f"{qid}.1", queue_id=qid, channel=CHANNEL_REMOTE,
                           sender=sender, recipients=recipients, domain=domain,
                           spool_path=stored.spool_path, sha256=stored.sha256,
                           size=stored.size, attempt=1, **job)


def make_settings(dns: DnsServer, spool: Spool, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "dns_server": dns.address, "spool_dir": spool.root, "me": "mx.ours.test",
        "connect_timeout": 5.0, "command_timeout": 10.0, "dns_timeout": 3.0,
        "tls_policy": "may", "http_port": 0, "grpc_port": 0, "instance": "test"}
    values.update(extra)
    return Settings.load(**values)


@pytest.fixture
async def rig(js: Any, spool: Spool, dns_server: DnsServer,
              request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    marker = request.node.get_closest_marker("settings")
    extra = dict(marker.kwargs) if marker else {}
    settings = make_settings(dns_server, spool, **extra)
    control = ControlView()
    await control.start(js)
    kv = await bus.ensure_kv(js, bus.KV_CONTROL)
    pool = Pool(settings.per_destination_limit, settings.idle_timeout,
                settings.max_messages_per_connection)
    deliverer = Deliverer(settings, control, Lookup(settings, Identity(control, settings.me)), pool)
    yield Rig(js, spool, control, settings, deliverer, pool, kv)
    await pool.close()
    await control.stop()


@pytest.fixture
async def worker(rig: Rig) -> AsyncIterator[Worker]:
    w = Worker(rig.settings, rig.js, rig.control, rig.spool, rig.deliverer)
    await w.start()
    yield w
    await w.stop(grace=5)


async def results(js: Any, count: int, timeout: float = 20.0) -> list[DeliveryResult]:
    """Read DeliveryResults the way the queue does: from the results stream."""
    sub = await js.pull_subscribe(bus.RESULT_SUBJECT.format(channel="remote"),
                                  durable="test-results", stream=bus.RESULTS_STREAM)
    out: list[DeliveryResult] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(out) < count and loop.time() < deadline:
        try:
            msgs = await sub.fetch(batch=count - len(out), timeout=1)
        except TimeoutError:
            continue
        for msg in msgs:
            out.append(bus.decode(DeliveryResult, msg.data))
            await msg.ack()
    await sub.unsubscribe()
    return out


__all__ = ["Path"]
