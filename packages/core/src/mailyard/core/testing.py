"""pytest plugin with the real parts tests run against (loaded by the root pytest config).

- `nats_server`: a private nats-server with JetStream on a free loopback port, per test.
- `js`: a connected JetStream context on it, mail streams created.
- `spool`: a Spool in the test's tmp dir.
- `smtp_sink`: an aiosmtpd server on 127.0.0.1 that stores what it receives.
- `ServiceProcess`: one Mailyard service as a real child process.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mailyard.core import bus
from mailyard.core.natsserver import NatsServer, free_port, wait_port
from mailyard.core.spool import Spool

__all__ = ["NatsServer", "ServiceProcess", "SmtpSink", "free_port", "wait_port"]


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


# -- an SMTP sink ------------------------------------------------------------------------

@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    peer: str = ""


@dataclass
class SmtpSink:
    """aiosmtpd on 127.0.0.1 storing every message. `refuse` maps a recipient to a reply
    ("550 5.1.1 no such user"); `delay` sleeps before answering the final dot."""

    host: str = "127.0.0.1"
    port: int = 0
    messages: list[Received] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    _controller: Any = None

    def start(self) -> SmtpSink:
        from aiosmtpd.controller import Controller

        sink = self

        class Handler:
            async def handle_RCPT(self, server: Any, session: Any, envelope: Any,
                                  address: str, options: list[str]) -> str:
                if address in sink.refuse:
                    return sink.refuse[address]
                envelope.rcpt_tos.append(address)
                return "250 2.1.5 ok"

            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                if sink.delay:
                    await asyncio.sleep(sink.delay)
                sink.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                              envelope.original_content or b"",
                                              str(session.peer[0])))
                return "250 2.0.0 ok sink"

        self.port = self.port or free_port(self.host)
        self._controller = Controller(Handler(), hostname=self.host, port=self.port,
                                      enable_SMTPUTF8=True, decode_data=False)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller:
            self._controller.stop()

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.messages


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


# -- services as child processes ---------------------------------------------------------

class ServiceProcess:
    """`python -m mailyard.<module>` with the given environment, logs in a file."""

    def __init__(self, module: str, env: dict[str, str], log_dir: Path,
                 http_port: int | None = None) -> None:
        self.module = module
        self.env = {**os.environ, **env}
        self.log_path = log_dir / f"{module.rsplit('.', 1)[-1]}-{time.time_ns()}.log"
        self.http_port = http_port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: float = 30.0) -> ServiceProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", self.module], env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT)
        if self.http_port:
            try:
                self.wait_ready(wait)
            except BaseException:
                self.kill()  # the caller never gets a handle to stop it: leave nothing running
                raise
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.http_port}/readyz"
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"{self.module} exited {self.proc.returncode}:\n{self.logs()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (OSError, http.client.HTTPException):  # not up yet (or not ours)
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.module} not ready after {timeout}s:\n{self.logs()}")

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def kill(self) -> None:
        """kill -9: the crash every durability promise is about."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None
