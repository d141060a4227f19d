"""Issue 14 item 4: CRAM-MD5 was offered to every client, but it works only for mailboxes
given a CRAM secret: a client choosing it for any other mailbox was refused the correct
password and charged a failure. Now it is offered only when the operator enables it
(AUTH_CRAM_MD5), and a CRAM attempt for a mailbox without a secret is answered 534 without
counting as a failed password."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ssl
from typing import Any

from ingress_helpers import Client, MakeIngress, plain, put_control, seed_directory, session

from mailyard.api.directory.v1 import directory_pb2 as dpb
from mailyard.core import bus
from mailyard.core.directory import record_key
from mailyard.smtp_ingress import replies as R

PASSWORD = "no cram secret here"  # noqa: S105


async def _seed(js: Any) -> None:
    from argon2 import PasswordHasher

    await put_control(js, "tcp.smtp", "127.0.0.1:allow\n")
    await seed_directory(js, "example.org", [])
    kv = await bus.ensure_kv(js, bus.KV_DIRECTORY)
    stored = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    await kv.put(record_key("mailbox", "ann@example.org"), dpb.Mailbox(
        address="ann@example.org", password_hash=stored).SerializeToString())  # no CRAM


async def _tls(port: int, context: ssl.SSLContext) -> tuple[Client, str]:
    client = await session(port)
    await client.starttls(context)
    return client, await client.cmd("EHLO client.test")


async def test_cram_md5_is_not_offered_by_default(make_ingress: MakeIngress, js: Any,
                                                  relay_auth: str,
                                                  client_tls: ssl.SSLContext) -> None:
    await _seed(js)
    ingress = await make_ingress(relay_auth_addr=relay_auth, relay_auth_timeout=2.0)
    client, ehlo = await _tls(ingress.ports["submission"], client_tls)
    assert "250-AUTH PLAIN LOGIN" in ehlo.split("\n") and "CRAM-MD5" not in ehlo
    assert await client.cmd("AUTH CRAM-MD5") == R.AUTH_MECHANISM
    assert await client.cmd(f"AUTH PLAIN {plain('ann@example.org', PASSWORD)}") == R.AUTH_OK


async def test_cram_for_a_mailbox_without_secret_is_no_failure(
        make_ingress: MakeIngress, js: Any, relay_auth: str,
        client_tls: ssl.SSLContext) -> None:
    await _seed(js)
    ingress = await make_ingress(relay_auth_addr=relay_auth, relay_auth_timeout=2.0,
                                 auth_cram_md5=True)
    client, ehlo = await _tls(ingress.ports["submission"], client_tls)
    assert "250-AUTH PLAIN LOGIN CRAM-MD5" in ehlo.split("\n")
    # more CRAM attempts than max_auth_failures (3): none counts, the session stays open
    for _ in range(4):
        challenge = base64.b64decode((await client.cmd("AUTH CRAM-MD5"))[4:])
        digest = hmac.new(PASSWORD.encode(), challenge, hashlib.md5).hexdigest()
        answer = base64.b64encode(f"ann@example.org {digest}".encode()).decode()
        assert await client.cmd(answer) == R.AUTH_MECHANISM_UNAVAILABLE
    assert await client.cmd(f"AUTH PLAIN {plain('ann@example.org', PASSWORD)}") == R.AUTH_OK


async def test_cram_answers_an_unknown_user_as_a_mailbox_without_secret(
        make_ingress: MakeIngress, js: Any, relay_auth: str,
        client_tls: ssl.SSLContext) -> None:
    """A mailbox without a secret got 534 and a name that is no mailbox 535: one CRAM
    attempt, with no password and no failure counted, told whether any name exists. Now
    the answer depends only on whether the name has CRAM-MD5 (opt-in), not on whether it
    exists."""
    await _seed(js)
    ingress = await make_ingress(relay_auth_addr=relay_auth, relay_auth_timeout=2.0,
                                 auth_cram_md5=True)
    client, _ehlo = await _tls(ingress.ports["submission"], client_tls)
    for user in ("ann@example.org", "nobody@example.org", "ann@example.org"):
        challenge = base64.b64decode((await client.cmd("AUTH CRAM-MD5"))[4:])
        digest = hmac.new(b"a guess", challenge, hashlib.md5).hexdigest()
        answer = base64.b64encode(f"{user} {digest}".encode()).decode()
        assert await client.cmd(answer) == R.AUTH_MECHANISM_UNAVAILABLE, user
