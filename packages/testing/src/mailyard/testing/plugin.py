"""The pytest plugin (loaded by the root pytest config: `-p mailyard.testing.plugin`) with
the real parts tests run against:

- `nats_server`: a private nats-server with JetStream on a free loopback port, per test.
- `js`: a connected JetStream context on it, mail streams created.
- `spool`: a Spool in the test's tmp dir.
- `smtp_sink`: an aiosmtpd server on 127.0.0.1 that stores what it receives.
- `dns_server`: a DNS server on 127.0.0.1 with an empty zone for the test to fill.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailyard.core import bus
from mailyard.core.natsserver import NatsServer
from mailyard.core.spool import Spool
from mailyard.testing.dnsserver import DnsServer
from mailyard.testing.smtpsink import SmtpSink


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "jetstream")
    server.start(tmp_path / "nats.log")
    yield server
    server.stop()


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[Any]:
    nc = await bus.connect(nats_server.url, "pytest")
    context = nc.jetstream()
    await bus.ensure_mail_streams(context)
    yield context
    await nc.close()


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    s = Spool(tmp_path / "spool")
    s.ensure()
    yield s
    s.close()


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    server = DnsServer().start()
    yield server
    server.stop()
