"""IMAP and POP3 from the images (issue 19's mail-access image, issue 21's Dovecot): the
compose file's dovecot-conf, mail-access (login bridge) and dovecot containers on the
platform the other container tests use; a message delivered by local-delivery is read over
IMAP and POP3 (STARTTLS / STLS, the certificate verified) byte for byte, the login grants a
POP-before-SMTP lease through the bridge's own token, a wrong password gets nothing, and
every Dovecot process runs as 10001."""

from __future__ import annotations

import imaplib
import poplib
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.containers.conftest import INGRESS_PORTS, Platform

IMAP_PORT, POP3_PORT = 2143, 2110  # as docker-compose.yml publishes them on 127.0.0.1
TLS_NAME = "mail.localhost"        # the name the suite's certificate is for
USER, PASSWORD = "reader@imap.test", "pw-reader-in-a-container"


def _until(check: Callable[[], Any], what: str, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except (OSError, imaplib.IMAP4.error, poplib.error_proto, AssertionError):
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout}s")
        time.sleep(1)


class IMAP(imaplib.IMAP4):
    """IMAP to the published port; TLS checks the certificate for TLS_NAME."""

    def __init__(self) -> None:
        super().__init__(TLS_NAME, IMAP_PORT, timeout=30)

    def _create_socket(self, timeout: Any) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout)


class POP3(poplib.POP3):
    def __init__(self) -> None:
        super().__init__(TLS_NAME, POP3_PORT, timeout=30)

    def _create_socket(self, timeout: Any) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout)


@pytest.fixture(scope="module")
def mail(platform: Platform) -> Platform:
    """The mail-access containers brought up one after the other (podman 4.3 ignores the
    compose file's health conditions): the config rendered, the bridge ready, Dovecot."""
    p = platform
    p.run(*p.compose, "up", "-d", "--no-deps", "dovecot-conf", timeout=300)
    (conf,) = p.containers("dovecot-conf")
    _until(lambda: p.podman("inspect", conf, "--format", "{{.State.Status}} {{.State.ExitCode}}"
                            ).stdout.split() == ["exited", "0"], "dovecot-conf's render")
    p.run(*p.compose, "up", "-d", "--no-deps", "mail-access", timeout=300)
    p.wait_healthy(p.containers("mail-access"))
    p.run(*p.compose, "up", "-d", "--no-deps", "dovecot", timeout=300)
    p.wait_healthy(p.containers("dovecot"))
    p.cli("domain", "add", "imap.test")
    p.cli("user", "add", USER, "--password-stdin", stdin=PASSWORD + "\n")
    return p


def _tls(p: Platform) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(p.workdir / "ca.pem"))


def _uids(p: Platform, container: str) -> dict[str, str]:
    """command -> uid of every process in the container (the image has no ps)."""
    script = ('for s in /proc/[0-9]*/status; do c=$(tr "\\0" " " < "${s%status}cmdline"); '
              'echo "$(awk \'/^Uid:/ {print $2}\' "$s") $c"; done')
    out = p.podman("exec", container, "bash", "-c", script).stdout
    return {line.split(" ", 1)[1]: line.split(" ", 1)[0] for line in out.splitlines()
            if " " in line and line.split(" ", 1)[1].strip()}


def test_a_delivered_message_is_read_over_imap_and_pop3_from_the_images(mail: Platform) -> None:
    p = mail
    (dovecot,) = p.containers("dovecot")
    (bridge,) = p.containers("mail-access")
    assert p.podman("exec", bridge, "id", "-u").stdout.strip() == "10001"

    code, reply = p.send(INGRESS_PORTS[0], USER, "read-me-over-imap")
    assert code == 250, reply
    (local,) = p.containers("local-delivery")

    def in_the_mailbox() -> bytes:
        return p.podman("exec", local, "sh", "-c",
                        "cat /var/mail/mailyard/imap.test/reader/Maildir/new/*",
                        check=False).stdout.encode()

    stored = _until(in_the_mailbox, "delivery into the mailbox")

    def pop3_read() -> bytes:
        client = POP3()
        client.stls(_tls(p))
        client.user(USER)
        client.pass_(PASSWORD)
        count, _ = client.stat()
        assert count == 1
        _, lines, _ = client.retr(1)
        client.quit()
        return b"\r\n".join(lines) + b"\r\n"

    # the first login may wait for the bridge's directory view to see the new mailbox
    by_pop3 = _until(pop3_read, "a POP3 login and RETR")
    assert by_pop3.replace(b"\r\n", b"\n") == stored.replace(b"\r\n", b"\n")

    imap = IMAP()
    imap.starttls(_tls(p))
    imap.login(USER, PASSWORD)
    imap.select("INBOX")
    _, data = imap.fetch("1", "(BODY.PEEK[])")
    processes = _uids(p, dovecot)  # while the session's mail process runs
    imap.logout()
    assert any(cmd.startswith("dovecot/imap ") for cmd in processes), processes
    assert set(processes.values()) == {"10001"}, processes
    body = data[0][1] if isinstance(data[0], tuple) else b""
    assert body.replace(b"\r\n", b"\n") == stored.replace(b"\r\n", b"\n")
    assert b"Subject: read-me-over-imap" in body

    # the login went through the bridge to relay-auth with the bridge's token: a lease
    leases = p.cli("lease", "list")
    assert f"user={USER}" in leases and ("source=pop3" in leases or "source=imap" in leases), \
        leases

    wrong = IMAP()
    wrong.starttls(_tls(p))
    with pytest.raises(imaplib.IMAP4.error):
        wrong.login(USER, "not-the-password")
    wrong.shutdown()
