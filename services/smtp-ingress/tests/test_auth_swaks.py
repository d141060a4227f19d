"""SMTP AUTH end to end with real SMTP clients: swaks (the Debian package CI installs) and
Python's smtplib, against a real smtp-ingress, the real relay-auth service (child process)
and a real nats-server. Every mechanism (PLAIN, LOGIN, CRAM-MD5) over STARTTLS on the
submission listener and over the implicit-TLS listener; a good password relays and the
message is spooled and published, a wrong one gets 535 5.7.8 and nothing is spooled."""

from __future__ import annotations

import asyncio
import shutil
import smtplib
import ssl
from typing import Any

import pytest
from ingress_helpers import (
    MakeIngress,
    committed,
    put_control,
    seed_directory,
    seed_user,
    todo_count,
    wait_for,
)

from mailyard.core.spool import Spool
from mailyard.smtp_ingress.server import Ingress

MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")
SWAKS = shutil.which("swaks")
needs_swaks = pytest.mark.skipif(SWAKS is None, reason="swaks is not installed "
                                 "(apt-get install swaks; CI installs it)")


async def _ingress(make_ingress: MakeIngress, js: Any, relay_auth: str) -> Ingress:
    # 127.0.0.1 may connect but not relay: only a successful AUTH lets elsewhere.test through.
    await put_control(js, "tcp.smtp", "127.0.0.1:allow\n")
    await seed_directory(js, "example.org", ["alice@example.org"])
    await seed_user(js, "alice@example.org", "s3cret pass")  # CRAM-MD5 secret included
    ingress = await make_ingress(relay_auth_addr=relay_auth, relay_auth_timeout=2.0,
                                 auth_cram_md5=True)  # CRAM-MD5 offered: the operator's choice
    await wait_for(lambda: ingress.directory.accepts("alice@example.org"))
    return ingress


async def swaks(port: int, mechanism: str, password: str, *, implicit_tls: bool,
                subject: str) -> tuple[int, str]:
    """Run swaks against 127.0.0.1; returns (exit code, transcript)."""
    assert SWAKS is not None
    argv = [SWAKS, "--server", "127.0.0.1", "--port", str(port),
            "--tls-on-connect" if implicit_tls else "--tls",
            "--ehlo", "client.test", "--timeout", "20",
            "--auth", mechanism, "--auth-user", "alice@example.org",
            "--auth-password", password,
            "--from", "alice@example.org", "--to", "bob@elsewhere.test",
            "--header", f"Subject: {subject}", "--body", "sent by swaks"]
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


def _spooled_by_subject(ingress: Ingress) -> dict[str, tuple[Any, bytes]]:
    spool = Spool(ingress.settings.spool_dir)
    found = {}
    for queue_id in committed(ingress):
        envelope, data = spool.read_sync(queue_id)
        for line in data.split(b"\r\n"):
            if line.startswith(b"Subject: "):
                found[line[9:].decode()] = (envelope, data)
    return found


@needs_swaks
@pytest.mark.parametrize("listener", ["submission", "smtps"])
async def test_swaks_every_mechanism_relays(make_ingress: MakeIngress, js: Any,
                                            relay_auth: str, listener: str) -> None:
    ingress = await _ingress(make_ingress, js, relay_auth)
    port = ingress.ports[listener]
    for mechanism in MECHANISMS:
        code, transcript = await swaks(port, mechanism, "s3cret pass",
                                       implicit_tls=listener == "smtps",
                                       subject=f"swaks {mechanism}")
        assert code == 0, transcript
        assert f"~> AUTH {mechanism}" in transcript, transcript  # the mechanism asked for
        assert "<~  235 2.7.0 authentication successful" in transcript, transcript
        assert "<~  250 2.1.5 ok" in transcript, transcript  # relayed because of AUTH
        assert "<~  250 ok " in transcript, transcript
    spooled = _spooled_by_subject(ingress)
    assert sorted(spooled) == sorted(f"swaks {m}" for m in MECHANISMS)
    for envelope, data in spooled.values():
        assert envelope.auth_user == "alice@example.org"
        assert list(envelope.recipients) == ["bob@elsewhere.test"]
        assert envelope.tls.startswith("TLSv1.")
        assert b"(authenticated user alice@example.org)" in data
        assert b"with ESMTPSA" in data
    assert await todo_count(js) == len(MECHANISMS)  # each one published to the queue


@needs_swaks
async def test_swaks_wrong_password_is_535_and_nothing_spooled(make_ingress: MakeIngress,
                                                               js: Any,
                                                               relay_auth: str) -> None:
    ingress = await _ingress(make_ingress, js, relay_auth)
    for mechanism in MECHANISMS:
        code, transcript = await swaks(ingress.ports["submission"], mechanism, "wrong",
                                       implicit_tls=False, subject=f"bad {mechanism}")
        assert code == 28, transcript  # swaks: error in AUTH transaction
        assert f"~> AUTH {mechanism}" in transcript, transcript
        assert "<~* 535 5.7.8 authentication failed" in transcript, transcript
        assert "MAIL FROM" not in transcript, transcript
    assert committed(ingress) == []
    assert await todo_count(js) == 0


# -- the same with smtplib ----------------------------------------------------------------

def _smtplib_send(port: int, mechanism: str, password: str, context: ssl.SSLContext,
                  *, implicit_tls: bool) -> tuple[int, bytes]:
    """Log in with exactly this mechanism, send one message; returns the AUTH reply."""
    smtp: smtplib.SMTP
    if implicit_tls:
        smtp = smtplib.SMTP_SSL("127.0.0.1", port, context=context, timeout=20)
    else:
        smtp = smtplib.SMTP("127.0.0.1", port, timeout=20)
    with smtp:
        if not implicit_tls:
            smtp.starttls(context=context)
        smtp.ehlo("client.test")
        smtp.user, smtp.password = "alice@example.org", password
        method: Any = getattr(smtp, "auth_" + mechanism.lower().replace("-", "_"))
        try:
            reply = smtp.auth(mechanism, method, initial_response_ok=mechanism == "PLAIN")
        except smtplib.SMTPAuthenticationError as exc:
            error = exc.smtp_error
            return exc.smtp_code, error.encode() if isinstance(error, str) else error
        smtp.sendmail("alice@example.org", ["bob@elsewhere.test"],
                      f"Subject: smtplib {mechanism}\r\n\r\nsent by smtplib\r\n")
        return reply


@pytest.mark.parametrize("listener", ["submission", "smtps"])
async def test_smtplib_every_mechanism(make_ingress: MakeIngress, js: Any, relay_auth: str,
                                       client_tls: ssl.SSLContext, listener: str) -> None:
    ingress = await _ingress(make_ingress, js, relay_auth)
    port = ingress.ports[listener]
    for mechanism in MECHANISMS:
        code, text = await asyncio.to_thread(_smtplib_send, port, mechanism, "wrong",
                                             client_tls, implicit_tls=listener == "smtps")
        assert (code, text) == (535, b"5.7.8 authentication failed"), mechanism
    assert committed(ingress) == []
    for mechanism in MECHANISMS:
        code, text = await asyncio.to_thread(_smtplib_send, port, mechanism, "s3cret pass",
                                             client_tls, implicit_tls=listener == "smtps")
        assert (code, text) == (235, b"2.7.0 authentication successful"), mechanism
    spooled = _spooled_by_subject(ingress)
    assert sorted(spooled) == sorted(f"smtplib {m}" for m in MECHANISMS)
    assert all(envelope.auth_user == "alice@example.org" for envelope, _ in spooled.values())
    assert await todo_count(js) == len(MECHANISMS)
