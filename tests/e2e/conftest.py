"""The whole platform over real sockets: nats-server, every service as a process, SMTP in,
Maildir or a loopback SMTP sink out. One platform per test module (it takes seconds to
start); tests that kill a service start it again."""

from __future__ import annotations

import mailbox
import shutil
import smtplib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailyard.cli.platform import Platform, free_ports
from mailyard.testing import DnsServer, SmtpSink
from mailyard.testing.cli import run_mailyard

E2E_ME = "mx.e2e.test"  # `mailyard up --me`: written to control/me once the directory answers


class Mailyard:
    def __init__(self, platform: Platform, sink: SmtpSink) -> None:
        self.platform = platform
        self.sink = sink

    def cli(self, *args: str, stdin: str = "", check: bool = True) -> str:
        return run_mailyard(self.platform.cli_env(), *args, stdin=stdin, check=check)

    def smtp(self, source: str = "127.0.0.1") -> smtplib.SMTP:
        client = smtplib.SMTP("127.0.0.1", self.platform.ports.smtp, timeout=15,
                              source_address=(source, 0))
        client.ehlo("client.test")
        return client

    def maildir(self, address: str) -> mailbox.Maildir:
        local, domain = address.split("@")
        return mailbox.Maildir(self.platform.mail_dir / domain / local / "Maildir",
                               factory=None, create=False)

    def count(self, address: str) -> int:
        """Messages in a mailbox (0 before its first delivery creates the Maildir)."""
        try:
            return len(self.maildir(address))
        except mailbox.NoSuchMailboxError:
            return 0

    def wait_maildir(self, address: str, count: int, timeout: float = 30) -> list[bytes]:
        deadline = time.monotonic() + timeout
        local, domain = address.split("@")
        folder = self.platform.mail_dir / domain / local
        while time.monotonic() < deadline:
            if (folder / "Maildir" / "new").exists():
                box = self.maildir(address)
                if len(box) >= count:
                    return [box.get_bytes(key) for key in sorted(box.keys())]
            time.sleep(0.1)
        raise AssertionError(f"{count} message(s) not delivered to {address} in {timeout}s")

    def wait_cli(self, text: str, *args: str, timeout: float = 30) -> str:
        """Run `mailyard ARGS` until its output has `text` (the queue learns of a message
        a moment after the 250)."""
        deadline = time.monotonic() + timeout
        out = ""
        while time.monotonic() < deadline:
            out = self.cli(*args)
            if text in out:
                return out
            time.sleep(0.2)
        raise AssertionError(f"{text!r} not in `mailyard {' '.join(args)}` after {timeout}s:"
                             f"\n{out}")

    def queue_empty(self, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        out = ""
        while time.monotonic() < deadline:
            out = self.cli("queue", "stat")
            if "messages in queue: 0" in out:
                return out
            time.sleep(0.2)
        raise AssertionError(f"queue not empty after {timeout}s:\n{out}")


@pytest.fixture(scope="module")
def mailyard(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
             ) -> Iterator[Mailyard]:
    # Dovecot only for modules that say DOVECOT = True (it adds seconds to the start); its
    # unprivileged processes must reach the data dir, which pytest's 0700 tree forbids.
    dovecot = bool(getattr(request.module, "DOVECOT", False))
    if dovecot:
        data = Path(tempfile.mkdtemp(prefix="mailyard-e2e-"))
        data.chmod(0o711)
    else:
        data = tmp_path_factory.mktemp("mailyard")
    sink = SmtpSink().start()
    # A killed queue's in-flight work comes back after the leader lock expires and the
    # consumers' ack_wait passes (15 s / 30 s by default); shorter here so tests stay quick.
    # Two ingress processes share the SMTP ports (SO_REUSEPORT), as `mailyard up
    # --ingress-replicas 2` runs them, so every test also crosses that path.
    # The platform's lookups (PTR, SPF, DMARC, MX) stay on this machine: an empty zone
    # answers NXDOMAIN to everything, instead of the system resolver.
    dns_server = DnsServer().start()
    platform = Platform(data, ports=free_ports(), ingress_replicas=2, me=E2E_ME,
                        dovecot=dovecot, env={"queue": {"LEADER_TTL": "4",
                                                        "CONSUME_ACK_WAIT": "8"},
                                              "smtp-ingress": {"DNS_SERVERS": dns_server.address},
                                              "remote-delivery": {
                                                  "DNS_SERVER": dns_server.address}})
    try:
        platform.start()
    except BaseException:
        sink.stop()
        for log in sorted((data / "log").glob("*.log")):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
        if dovecot:
            shutil.rmtree(data, ignore_errors=True)
        raise
    yield Mailyard(platform, sink)
    platform.stop()
    sink.stop()
    dns_server.stop()
    if dovecot:
        shutil.rmtree(data, ignore_errors=True)
