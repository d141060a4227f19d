"""STARTTLS, implicit TLS, submission rules, and the self-signed certificate."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
from ingress_helpers import Client, MakeIngress, committed
from prometheus_client import REGISTRY

from mailyard.smtp_ingress import ehlo
from mailyard.smtp_ingress import replies as R
from mailyard.smtp_ingress.server import Ingress
from mailyard.smtp_ingress.tls import handshake_failure, self_signed

pytestmark = pytest.mark.both_loops


async def test_starttls_discards_pipelined_cleartext(local: Ingress,
                                                     client_tls: ssl.SSLContext) -> None:
    client = await Client.connect(local.ports["smtp"])
    await client.reply()
    await client.cmd("EHLO client.test")
    # A man in the middle appends a command after STARTTLS in the clear.
    await client.send("STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n")
    assert await client.reply() == R.STARTTLS_READY
    await client.writer.start_tls(client_tls, server_hostname="localhost")
    # The injected MAIL did not survive, and HELO state was reset by the handshake.
    assert await client.cmd("MAIL FROM:<a@b.test>") == R.HELO_FIRST
    ehlo = (await client.cmd("EHLO client.test")).split("\n")
    assert "250-STARTTLS" not in ehlo and "250-AUTH PLAIN LOGIN" in ehlo
    assert await client.cmd("MAIL FROM:<a@b.test>") == R.MAIL_OK
    assert await client.cmd("RCPT TO:<alice@example.org>") == R.RCPT_OK
    assert await client.cmd("DATA") == R.GO_AHEAD
    await client.send("Subject: tls\r\n\r\nsecret\r\n.\r\n")
    assert (await client.reply()).startswith("250 ok ")
    from mailyard.core.spool import Spool

    envelope, data = Spool(local.settings.spool_dir).read_sync(committed(local)[0])
    assert envelope.tls.startswith("TLSv1.3 ")
    assert b"with ESMTPS (TLSv1.3 " in data


async def test_submission_requires_tls_then_auth(local: Ingress) -> None:
    client = await Client.connect(local.ports["submission"])
    await client.reply()
    ehlo = await client.cmd("EHLO client.test")
    assert "AUTH" not in ehlo  # no AUTH in the clear
    assert await client.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==") == \
        R.STARTTLS_FIRST
    assert await client.cmd("MAIL FROM:<alice@example.org>") == \
        R.AUTH_REQUIRED


async def test_cleartext_auth_can_be_enabled_per_listener(make_ingress: MakeIngress) -> None:
    ingress = await make_ingress(cleartext_auth="smtp")
    client = await Client.connect(ingress.ports["smtp"])
    await client.reply()
    assert "250-AUTH PLAIN LOGIN" in await client.cmd("EHLO client.test")
    client2 = await Client.connect(ingress.ports["submission"])
    await client2.reply()
    assert "AUTH" not in await client2.cmd("EHLO client.test")


async def test_implicit_tls_listener(local: Ingress, client_tls: ssl.SSLContext) -> None:
    client = await Client.connect(local.ports["smtps"], tls=client_tls)
    assert await client.reply() == R.greeting("mx.test")
    ehlo = (await client.cmd("EHLO client.test")).split("\n")
    assert "250-AUTH PLAIN LOGIN" in ehlo and "250-STARTTLS" not in ehlo
    assert await client.cmd("MAIL FROM:<a@b.test>") == R.AUTH_REQUIRED


async def test_a_returning_client_resumes_its_session(local: Ingress,
                                                     client_tls: ssl.SSLContext) -> None:
    """One session ticket per connection is enough for a sender that comes back."""
    port = local.ports["smtps"]

    def connect(session: ssl.SSLSession | None = None) -> tuple[ssl.SSLSession | None, bool]:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                client_tls.wrap_socket(raw, server_hostname="localhost",
                                       session=session) as tls:
            assert tls.recv(1024).startswith(b"220 ")  # the ticket came before it
            return tls.session, tls.session_reused

    session, first = await asyncio.to_thread(connect)
    _, again = await asyncio.to_thread(connect, session)
    assert session is not None and not first and again


async def test_self_signed_pair_generated_once(tmp_path: Path, make_ingress: MakeIngress,
                                               js: Any) -> None:
    cert, key = self_signed(tmp_path / "tls", "mx.test")
    assert cert.exists() and (key.stat().st_mode & 0o777) == 0o600
    before = cert.read_bytes()
    assert self_signed(tmp_path / "tls", "mx.test")[0].read_bytes() == before
    ingress = await make_ingress(tls_cert="", tls_key="", tls_dir=tmp_path / "gen")
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    client = await Client.connect(ingress.ports["smtps"], tls=context)
    assert (await client.reply()).startswith("220 ")
    assert (tmp_path / "gen" / "smtp-cert.pem").exists()


def test_replicas_starting_together_share_one_self_signed_pair(tmp_path: Path) -> None:
    """Two ingress replicas on one host start at once with the same TLS_DIR: exactly one
    pair is made and both load a matching certificate and key."""
    import concurrent.futures

    from mailyard.smtp_ingress.tls import server_context

    folder = tmp_path / "tls"
    with concurrent.futures.ProcessPoolExecutor(4) as pool:
        pairs = list(pool.map(self_signed, [folder] * 8, ["mx.test"] * 8))
    assert len(set(pairs)) == 1
    assert sorted(p.name for p in folder.iterdir()) == [".lock", "smtp-cert.pem",
                                                        "smtp-key.pem"]
    server_context("", "", folder, "mx.test")  # loads: the key matches the certificate


def _tls_failures(reason: str, listener: str = "smtp") -> float:
    return REGISTRY.get_sample_value("mailyard_smtp_tls_failures_total",
                                     {"listener": listener, "reason": reason}) or 0


async def _starttls_then(local: Ingress, handshake: Any) -> None:
    """Greeting, EHLO, STARTTLS; then `handshake(client)` does the client's side."""
    client = await Client.connect(local.ports["smtp"])
    await client.reply()
    await client.cmd("EHLO client.test")
    assert await client.cmd("STARTTLS") == R.STARTTLS_READY
    await handshake(client)


async def _wait_for(reason: str, before: float, listener: str = "smtp") -> None:
    for _ in range(200):  # the server's side ends a moment after the client's
        if _tls_failures(reason, listener) > before:
            return
        await asyncio.sleep(0.02)


def _anonymous_only() -> ssl.SSLContext:
    """A TLS 1.2 client context that offers nothing but anonymous suites."""
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.check_hostname, anonymous.verify_mode = False, ssl.CERT_NONE
    anonymous.maximum_version = ssl.TLSVersion.TLSv1_2
    anonymous.set_ciphers("aNULL:@SECLEVEL=0")
    return anonymous


async def test_a_client_offering_no_cipher_we_accept_is_counted_and_logged(
        local: Ingress, caplog: pytest.LogCaptureFixture) -> None:
    """A TLS 1.2 client that offers only anonymous suites (as postal, a benchmark, does):
    the handshake fails on our side with OpenSSL's NO_SHARED_CIPHER. Before, that was a
    silent disconnect; a postmaster now sees it in the log and in the metric."""
    anonymous = _anonymous_only()
    before = _tls_failures("no_shared_cipher")

    async def handshake(client: Client) -> None:
        with pytest.raises((ssl.SSLError, OSError)):
            await client.writer.start_tls(anonymous)

    with caplog.at_level(logging.INFO, logger="mailyard.smtp_ingress.ehlo"):
        await _starttls_then(local, handshake)
        await _wait_for("no_shared_cipher", before)
    assert _tls_failures("no_shared_cipher") == before + 1
    (line,) = [r for r in caplog.records if r.getMessage() == "TLS handshake failed"]
    assert line.reason == "no_shared_cipher"  # type: ignore[attr-defined]
    assert line.listener == "smtp"  # type: ignore[attr-defined]
    assert line.client_ip == "127.0.0.1"  # type: ignore[attr-defined]
    assert "NO_SHARED_CIPHER" in line.detail  # type: ignore[attr-defined]


async def test_a_client_that_speaks_smtp_instead_of_tls_is_counted(local: Ingress) -> None:
    before = _tls_failures("not_tls")

    async def handshake(client: Client) -> None:
        await asyncio.sleep(0.2)  # after the server's switch: earlier input is discarded
        await client.send("EHLO client.test\r\n")
        assert await client.reply() == ""  # closed, no SMTP reply in the clear

    await _starttls_then(local, handshake)
    await _wait_for("not_tls", before)
    assert _tls_failures("not_tls") == before + 1


async def test_a_client_that_hangs_up_in_the_handshake_is_counted_as_closed(
        local: Ingress) -> None:
    before = _tls_failures("closed")

    async def handshake(client: Client) -> None:
        client.writer.close()

    await _starttls_then(local, handshake)
    await _wait_for("closed", before)
    assert _tls_failures("closed") == before + 1


async def test_a_refused_handshake_on_submission_is_counted_under_submission(
        local: Ingress) -> None:
    before, smtp = _tls_failures("no_shared_cipher", "submission"), _tls_failures(
        "no_shared_cipher", "smtp")
    client = await Client.connect(local.ports["submission"])
    await client.reply()
    await client.cmd("EHLO client.test")
    assert await client.cmd("STARTTLS") == R.STARTTLS_READY
    with pytest.raises((ssl.SSLError, OSError)):
        await client.writer.start_tls(_anonymous_only())
    await _wait_for("no_shared_cipher", before, "submission")
    assert _tls_failures("no_shared_cipher", "submission") == before + 1
    assert _tls_failures("no_shared_cipher", "smtp") == smtp


async def test_a_client_that_never_starts_the_handshake_is_counted_as_a_timeout(
        local: Ingress, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the event loop really raises when the handshake takes too long (asyncio and
    uvloop abort the connection with a ConnectionAbortedError, not a TimeoutError)."""
    monkeypatch.setattr(ehlo, "HANDSHAKE_TIMEOUT", 0.3)
    before = _tls_failures("timeout")

    async def handshake(client: Client) -> None:
        assert await client.reply(timeout=10) == ""  # silent: the server gives up and closes

    await _starttls_then(local, handshake)
    await _wait_for("timeout", before)
    assert _tls_failures("timeout") == before + 1


@pytest.mark.parametrize(("exc", "reason"), [
    (TimeoutError(), "timeout"),
    (ConnectionAbortedError("SSL handshake is taking longer than 30.0 seconds: aborting the "
                            "connection"), "timeout"),
    (ConnectionAbortedError(), "closed"),
    (ConnectionResetError(), "closed"),
    (ssl.SSLEOFError(), "closed"),
    (ValueError("odd"), "other"),
])
def test_handshake_failures_without_an_openssl_reason(exc: BaseException, reason: str) -> None:
    assert handshake_failure(exc) == reason
