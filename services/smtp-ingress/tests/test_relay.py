"""The relay decision and AUTH against the real relay-auth service."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ssl
from typing import Any

from ingress_helpers import (
    Client,
    MakeIngress,
    committed,
    plain,
    put_control,
    seed_directory,
    seed_user,
    session,
    wait_for,
)

from mailyard.smtp_ingress.server import Ingress

RCPTHOSTS = "553 5.7.1 sorry, that domain isn't in my list of allowed rcpthosts"


async def _ingress(make_ingress: MakeIngress, js: Any, relay_auth: str, rules: str,
                   **kw: Any) -> Ingress:
    await put_control(js, "tcp.smtp", rules)
    await put_control(js, "rcpthosts", "relayed.test\n.sub.test\n")
    await seed_directory(js, "example.org", ["alice@example.org"])
    await seed_user(js, "alice@example.org", "secret")
    ingress = await make_ingress(relay_auth_addr=relay_auth, relay_auth_timeout=2.0, **kw)
    await wait_for(lambda: ingress.directory.accepts("alice@example.org")
                   and ingress.in_rcpthosts("relayed.test"))
    return ingress


async def test_rcpthosts_and_routing_tricks(make_ingress: MakeIngress, js: Any,
                                            relay_auth: str) -> None:
    ingress = await _ingress(make_ingress, js, relay_auth, "127.0.0.1:allow\n")
    client = await session(ingress.ports["smtp"])
    assert await client.cmd("MAIL FROM:<a@b.test>") == "250 2.1.0 ok"
    assert await client.cmd("RCPT TO:<x@elsewhere.test>") == RCPTHOSTS
    assert await client.cmd("RCPT TO:<x@relayed.test>") == "250 2.1.5 ok"
    assert await client.cmd("RCPT TO:<x@a.sub.test>") == "250 2.1.5 ok"
    for trick in ("<@relayed.test:x@elsewhere.test>",   # source route
                  "<x%elsewhere.test@relayed.test>",     # % hack
                  "<elsewhere.test!x@relayed.test>",     # bang path
                  '<"x@elsewhere.test"@relayed.test>',   # quoted local part
                  "<x@[10.0.0.1]>", "<x>"):
        assert await client.cmd(f"RCPT TO:{trick}") == RCPTHOSTS, trick
    assert await client.cmd("RCPT TO:<x%elsewhere.test@example.org>") == \
        "550 5.1.1 sorry, no mailbox here by that name"


async def test_relay_client_and_denied_client(make_ingress: MakeIngress, js: Any,
                                              relay_auth: str) -> None:
    ingress = await _ingress(make_ingress, js, relay_auth, '127.0.0.1:allow,RELAYCLIENT=""\n')
    client = await session(ingress.ports["smtp"])
    assert await client.cmd("MAIL FROM:<a@b.test>") == "250 2.1.0 ok"
    assert await client.cmd("RCPT TO:<x@elsewhere.test>") == "250 2.1.5 ok"
    await put_control(js, "tcp.smtp", "127.0.0.1:deny\n")
    for _ in range(200):  # relay-auth picks the rule up hot; the next connection obeys
        denied = await Client.connect(ingress.ports["smtp"])
        reply = await denied.reply()
        await denied.close()
        if reply.startswith("553"):
            break
    assert reply == "553 5.7.1 sorry, your IP address is not allowed to connect"


async def test_connection_burst_waits_for_relay_auth_slots(make_ingress: MakeIngress, js: Any,
                                                           relay_auth: str) -> None:
    """100 clients at once, 2 relay-auth calls at a time: every one still gets its own
    decision (no fail-closed 451 for a relay client), the rest wait for a slot."""
    ingress = await _ingress(make_ingress, js, relay_auth, '127.0.0.1:allow,RELAYCLIENT=""\n',
                             relay_auth_in_flight=2, max_per_ip=200)

    async def relay_once() -> str:
        client = await session(ingress.ports["smtp"])
        try:
            await client.cmd("MAIL FROM:<a@b.test>")
            return await client.cmd("RCPT TO:<x@elsewhere.test>")
        finally:
            await client.close()

    replies = await asyncio.gather(*(relay_once() for _ in range(100)))
    assert replies == ["250 2.1.5 ok"] * 100


async def test_auth_plain_login_cram_and_failures(make_ingress: MakeIngress, js: Any,
                                                  relay_auth: str,
                                                  client_tls: ssl.SSLContext) -> None:
    ingress = await _ingress(make_ingress, js, relay_auth, "127.0.0.1:allow\n")
    port = ingress.ports["submission"]

    async def tls_session() -> Client:
        client = await session(port)
        await client.starttls(client_tls)
        assert (await client.cmd("EHLO client.test")).startswith("250")
        return client

    client = await tls_session()
    assert await client.cmd(f"AUTH PLAIN {plain('alice@example.org', 'secret')}") == \
        "235 2.7.0 authentication successful"
    assert await client.cmd("MAIL FROM:<alice@example.org>") == "250 2.1.0 ok"
    assert await client.cmd("RCPT TO:<x@elsewhere.test>") == "250 2.1.5 ok"  # relay by AUTH
    assert await client.cmd("DATA") == "354 go ahead"
    await client.send("Subject: authed\r\n\r\nhi\r\n.\r\n")
    assert (await client.reply()).startswith("250 ok ")
    from mailyard.core.spool import Spool

    envelope, data = Spool(ingress.settings.spool_dir).read_sync(committed(ingress)[0])
    assert envelope.auth_user == "alice@example.org"
    assert b"(authenticated user alice@example.org)" in data and b"with ESMTPSA" in data

    client = await tls_session()
    b64 = lambda t: base64.b64encode(t.encode()).decode()  # noqa: E731
    assert await client.cmd("AUTH LOGIN") == "334 VXNlcm5hbWU6"
    assert await client.cmd(b64("alice@example.org")) == "334 UGFzc3dvcmQ6"
    assert await client.cmd(b64("secret")) == "235 2.7.0 authentication successful"

    client = await tls_session()
    challenge = base64.b64decode((await client.cmd("AUTH CRAM-MD5"))[4:])
    digest = hmac.new(b"secret", challenge, hashlib.md5).hexdigest()
    assert await client.cmd(b64(f"alice@example.org {digest}")) == \
        "235 2.7.0 authentication successful"

    client = await tls_session()
    assert await client.cmd("AUTH PLAIN") == "334 "
    assert await client.cmd("*") == "501 5.0.0 AUTH aborted"
    assert await client.cmd("AUTH PLAIN !!notbase64") == "535 5.7.8 authentication failed"
    assert await client.cmd(f"AUTH PLAIN {plain('alice@example.org', 'wrong')}") == \
        "535 5.7.8 authentication failed"
    await client.send(f"AUTH PLAIN {plain('alice@example.org', 'wrong')}\r\n")
    assert await client.reply() == "535 5.7.8 authentication failed"
    assert await client.reply() == "421 4.7.0 too many AUTH failures, closing connection"
    assert await client.eof()


async def test_relay_auth_down_local_mail_still_accepted(local: Ingress) -> None:
    """Nothing listens on RELAY_AUTH_ADDR: never relay, but local mail flows."""
    client = await session(local.ports["smtp"])
    assert await client.cmd("MAIL FROM:<a@b.test>") == "250 2.1.0 ok"
    assert await client.cmd("RCPT TO:<x@elsewhere.test>") == \
        "451 4.3.0 cannot check relaying right now, try again later"
    assert await client.cmd("RCPT TO:<alice@example.org>") == "250 2.1.5 ok"


async def test_auth_with_relay_auth_down_is_temporary(make_ingress: MakeIngress,
                                                      client_tls: ssl.SSLContext) -> None:
    ingress = await make_ingress()
    client = await session(ingress.ports["submission"])
    await client.starttls(client_tls)
    await client.cmd("EHLO client.test")
    assert await client.cmd(f"AUTH PLAIN {plain('a@example.org', 'x')}") == \
        "454 4.7.0 temporary authentication failure, try again later"
