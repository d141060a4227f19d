"""The whole platform with a real Dovecot (one per module): `Platform` as `mailyard up` runs
it, with a trustme certificate for SMTP and Dovecot, and IMAP / POP3 / SMTP clients that can
connect from another loopback address (127.0.0.2 is not a relay client by the tcp.smtp
these tests import). Skips without Dovecot locally; fails under CI=true."""

from __future__ import annotations

import imaplib
import os
import poplib
import shutil
import smtplib
import socket
import ssl
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from mailyard.api.relayauth.v1 import relayauth_pb2 as ra
from mailyard.api.relayauth.v1 import relayauth_pb2_grpc as ra_rpc
from mailyard.cli.platform import Platform, free_ports
from mailyard.core import auth
from mailyard.mail_access import dovecot_conf
from mailyard.testing.cli import run_mailyard

RULES = '127.0.0.1:allow,RELAYCLIENT=""\n:allow\n'  # 127.0.0.2 may connect, not relay
OUTSIDER = "127.0.0.2"
LEASE_TTL = 12  # seconds: the expiry is waited for, not assumed; long enough for a loaded CI


def need_dovecot() -> None:
    if dovecot_conf.dovecot_binary() is None:
        message = "Dovecot is not installed (apt-get install dovecot-imapd dovecot-pop3d)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs it: a missing binary is a broken CI
        pytest.skip(message)


def _source(host: str, port: int, timeout: float | None, source: str) -> socket.socket:
    return socket.create_connection((host, port), timeout, source_address=(source, 0))


class POP3(poplib.POP3):
    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.source = source
        super().__init__("127.0.0.1", port, timeout=15)

    def _create_socket(self, timeout: Any) -> socket.socket:
        return _source(self.host, self.port, timeout, self.source)


class POP3S(poplib.POP3_SSL):
    def __init__(self, port: int, context: ssl.SSLContext, source: str = "127.0.0.1") -> None:
        self.source = source
        super().__init__("127.0.0.1", port, timeout=15, context=context)

    def _create_socket(self, timeout: Any) -> socket.socket:
        sock = _source(self.host, self.port, timeout, self.source)
        return self.context.wrap_socket(sock, server_hostname=self.host)


class IMAP(imaplib.IMAP4):
    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.source = source
        super().__init__("127.0.0.1", port, timeout=15)

    def _create_socket(self, timeout: Any) -> socket.socket:
        return _source(self.host, self.port, timeout, self.source)


class IMAPS(imaplib.IMAP4_SSL):
    def __init__(self, port: int, context: ssl.SSLContext, source: str = "127.0.0.1") -> None:
        self.source = source
        super().__init__("127.0.0.1", port, ssl_context=context, timeout=15)

    def _create_socket(self, timeout: Any) -> socket.socket:
        sock = _source(self.host, self.port, timeout, self.source)
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


class Box:
    """The running platform and clients for it."""

    def __init__(self, platform: Platform, client_tls: ssl.SSLContext) -> None:
        self.platform = platform
        self.tls = client_tls
        self.ports = platform.ports

    def cli(self, *args: str, stdin: str = "", check: bool = True) -> str:
        return run_mailyard(self.platform.cli_env(), *args, stdin=stdin, check=check)

    def add_user(self, address: str, password: str, *extra: str) -> None:
        self.cli("user", "add", address, "--password-stdin", *extra, stdin=password + "\n")

    # -- clients (STARTTLS / STLS unless told otherwise) ---------------------------------

    def pop3(self, user: str, password: str, source: str = OUTSIDER) -> POP3:
        client = POP3(self.ports.pop3, source)
        client.stls(self.tls)
        client.user(user)
        client.pass_(password)
        return client

    def imap(self, user: str, password: str, source: str = OUTSIDER) -> IMAP:
        client = IMAP(self.ports.imap, source)
        client.starttls(self.tls)
        client.login(user, password)
        return client

    def smtp(self, source: str = "127.0.0.1") -> smtplib.SMTP:
        client = smtplib.SMTP("127.0.0.1", self.ports.smtp, timeout=15,
                              source_address=(source, 0))
        client.ehlo("client.test")
        return client

    def relay_reply(self, source: str = OUTSIDER) -> int:
        """RCPT code for a remote domain from `source` (553 = no relaying)."""
        with self.smtp(source) as client:
            client.mail("someone@client.test")
            code, _ = client.rcpt("friend@elsewhere.example")
            client.rset()
        return code

    def send(self, to: str, data: bytes) -> None:
        with self.smtp() as client:
            options = ["BODY=8BITMIME"] + ([] if to.isascii() else ["SMTPUTF8"])
            client.sendmail("sender@client.test", [to], data, mail_options=options)

    # -- what is on disk ------------------------------------------------------------------

    def maildir(self, address: str) -> Path:
        local, domain = address.split("@")
        return self.platform.mail_dir / domain / local / "Maildir"

    def stored(self, address: str, count: int, timeout: float = 30) -> dict[str, bytes]:
        """Wait for `count` messages in new/ + cur/; {base name: bytes}."""
        deadline = time.monotonic() + timeout
        found: dict[str, bytes] = {}
        while time.monotonic() < deadline:
            found = {}
            for sub in ("new", "cur"):
                folder = self.maildir(address) / sub
                if folder.is_dir():
                    for entry in folder.iterdir():
                        found[entry.name.split(":")[0]] = entry.read_bytes()
            if len(found) >= count:
                return found
            time.sleep(0.1)
        raise AssertionError(f"{count} message(s) not in {address}'s maildir: {len(found)}")

    def metric(self, port: int, name: str, **labels: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            head, _, value = line.rpartition(" ")
            if head == (f"{name}{{{want}}}" if want else name):
                return float(value)
        return 0.0

    def set_rules(self, text: str) -> None:
        token = auth.read_token(self.platform.tokens_file, "admin")
        with auth.channel(f"127.0.0.1:{self.ports.relayauth_grpc}", token) as channel:
            ra_rpc.RelayAuthStub(channel).ImportRules(ra.ImportRulesRequest(text=text))


@pytest.fixture(scope="module")
def box() -> Iterator[Box]:
    need_dovecot()
    if os.geteuid() != 0:
        pytest.skip("these tests run Dovecot's mail processes as another user (need root)")
    # Not under pytest's 0700 temp root: the mail user must be able to reach the maildirs.
    data = Path(tempfile.mkdtemp(prefix="mailyard-dovecot-"))
    data.chmod(0o711)
    ca = trustme.CA()
    pair = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = data / "tls-cert.pem", data / "tls-key.pem"
    pair.cert_chain_pems[0].write_to_path(str(cert))
    pair.private_key_pem.write_to_path(str(key))
    key.chmod(0o600)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    platform = Platform(data / "var", ports=free_ports(), tls=(cert, key), env={
        "relay-auth": {"LEASE_TTL": str(LEASE_TTL)}})
    try:
        platform.start()
    except BaseException:
        for log in sorted((data / "var" / "log").glob("*.log")):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
        shutil.rmtree(data, ignore_errors=True)
        raise
    box = Box(platform, client_tls)
    box.set_rules(RULES)
    box.cli("domain", "add", "example.test")
    yield box
    platform.stop()
    shutil.rmtree(data, ignore_errors=True)
