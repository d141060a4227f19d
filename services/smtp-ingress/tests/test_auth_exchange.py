"""AUTH's exchange and its place in the session, against RFC 4954 and RFC 4616, over real
SMTP with the real relay-auth: PLAIN acts for nobody but the user who logged in (no proxy
authorization), "=" is an empty initial response, AUTH comes after EHLO (again after
STARTTLS), and the Received: line names the protocol as RFC 3848 and RFC 6531 do."""

from __future__ import annotations

import base64
import ssl
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
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
from prometheus_client import REGISTRY

from mailyard.core.spool import Spool
from mailyard.smtp_ingress import replies as R
from mailyard.smtp_ingress.auth import plain_credentials
from mailyard.smtp_ingress.server import Ingress


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def _ingress(make_ingress: MakeIngress, js: Any, relay_auth: str,
                   **kw: Any) -> Ingress:
    await put_control(js, "tcp.smtp", "127.0.0.1:allow\n")
    await seed_directory(js, "example.org", ["alice@example.org", "bob@example.org"])
    await seed_user(js, "alice@example.org", "secret")
    ingress = await make_ingress(relay_auth_addr=relay_auth, relay_auth_timeout=2.0, **kw)
    await wait_for(lambda: ingress.directory.accepts("alice@example.org"))
    return ingress


async def _tls_session(port: int, context: ssl.SSLContext) -> Client:
    client = await session(port)
    await client.starttls(context)
    assert (await client.cmd("EHLO client.test")).startswith("250")
    return client


async def test_plain_acts_for_nobody_but_the_user(make_ingress: MakeIngress, js: Any,
                                                 relay_auth: str,
                                                 client_tls: ssl.SSLContext) -> None:
    """RFC 4616: an authzid the authcid may not act for fails the exchange. Alice's right
    password with authzid bob@example.org was a 235, the session Alice's."""
    ingress = await _ingress(make_ingress, js, relay_auth)
    port = ingress.ports["submission"]
    client = await _tls_session(port, client_tls)
    as_bob = b64("bob@example.org\0alice@example.org\0secret")
    assert await client.cmd(f"AUTH PLAIN {as_bob}") == R.AUTH_FAILED
    assert await client.cmd("AUTH PLAIN") == R.auth_challenge("")
    assert await client.cmd(as_bob) == R.AUTH_FAILED
    assert await client.cmd("MAIL FROM:<bob@example.org>") == R.AUTH_REQUIRED
    # the authcid itself as authzid, and none at all, are the user's own login
    own = b64("alice@example.org\0alice@example.org\0secret")
    assert await client.cmd(f"AUTH PLAIN {own}") == R.AUTH_OK
    client = await _tls_session(port, client_tls)
    assert await client.cmd(f"AUTH PLAIN {plain('alice@example.org', 'secret')}") == \
        R.AUTH_OK


async def test_an_initial_response_of_equals_is_empty(make_ingress: MakeIngress, js: Any,
                                                     relay_auth: str,
                                                     client_tls: ssl.SSLContext) -> None:
    """RFC 4954 4: "=" is the initial response of zero length. PLAIN took it for no
    initial response and sent a 334, which the client (waiting for 235 or 535) never
    answers: both sides waited until IDLE_TIMEOUT."""
    ingress = await _ingress(make_ingress, js, relay_auth)
    client = await _tls_session(ingress.ports["submission"], client_tls)
    assert await client.cmd("AUTH PLAIN =") == R.AUTH_FAILED
    assert await client.cmd("AUTH LOGIN =") == R.AUTH_FAILED
    assert await client.cmd(f"AUTH PLAIN {plain('alice@example.org', 'secret')}") == \
        R.AUTH_OK


async def test_a_bad_line_in_the_exchange_gets_one_reply(make_ingress: MakeIngress, js: Any,
                                                        relay_auth: str,
                                                        client_tls: ssl.SSLContext) -> None:
    """An answer to a 334 that is no line we read (past MAX_AUTH_LINE, a NUL, a bare LF)
    gets the reply any such line gets, which ends the exchange: it got a second one as well,
    '421 4.7.0 bad AUTH exchange', which the client read as the reply to its next command,
    and lost the connection. The line is consumed whole, so the session goes on."""
    ingress = await _ingress(make_ingress, js, relay_auth)
    client = await _tls_session(ingress.ports["submission"], client_tls)
    assert await client.cmd("AUTH PLAIN") == R.auth_challenge("")
    assert await client.cmd("A" * (ingress.settings.max_auth_line + 1)) == R.LINE_TOO_LONG
    assert await client.cmd("NOOP") == R.OK
    assert await client.cmd("AUTH LOGIN") == R.auth_challenge("VXNlcm5hbWU6")
    assert await client.cmd(b64("alice@example.org")) == R.auth_challenge("UGFzc3dvcmQ6")
    assert await client.cmd("c2Vj\0cmV0") == R.NUL_IN_COMMAND
    assert await client.cmd(f"AUTH PLAIN {plain('alice@example.org', 'secret')}") == \
        R.AUTH_OK


def _rejections(reason: str) -> float:
    return REGISTRY.get_sample_value("mailyard_smtp_rejections_total",
                                     {"reason": reason}) or 0.0


async def test_the_session_cut_for_auth_failures_is_counted_apart(
        make_ingress: MakeIngress, js: Any, relay_auth: str,
        client_tls: ssl.SSLContext) -> None:
    """MAX_AUTH_FAILURES wrong passwords: that many auth_failed rejections and one
    too_many_auth_failures, the cut, as too_many_errors counts HARD_ERROR_LIMIT's. The cut
    was counted auth_failed too, so three wrong passwords counted four."""
    ingress = await _ingress(make_ingress, js, relay_auth)
    failed, cut = _rejections("auth_failed"), _rejections("too_many_auth_failures")
    client = await _tls_session(ingress.ports["submission"], client_tls)
    wrong = f"AUTH PLAIN {plain('alice@example.org', 'wrong')}"
    for _ in range(ingress.settings.max_auth_failures - 1):
        assert await client.cmd(wrong) == R.AUTH_FAILED
    await client.send(wrong + "\r\n")
    assert await client.reply() == R.AUTH_FAILED
    assert await client.reply() == R.AUTH_TOO_MANY_FAILURES
    assert await client.eof()
    assert _rejections("auth_failed") == failed + ingress.settings.max_auth_failures
    assert _rejections("too_many_auth_failures") == cut + 1


async def test_auth_comes_after_ehlo(make_ingress: MakeIngress, js: Any, relay_auth: str,
                                     client_tls: ssl.SSLContext) -> None:
    """AUTH is an EHLO extension (RFC 4954 3): before EHLO, after HELO, and after STARTTLS
    until the client says EHLO again (RFC 3207 4.2: all it knew is forgotten) it is 503.
    Each of these logged in before."""
    ingress = await _ingress(make_ingress, js, relay_auth, cleartext_auth="smtp")
    login = f"AUTH PLAIN {plain('alice@example.org', 'secret')}"
    client = await Client.connect(ingress.ports["smtp"])
    assert (await client.reply()).startswith("220 ")
    assert await client.cmd(login) == R.AUTH_EHLO_FIRST
    assert await client.cmd("HELO client.test") == R.helo_ok("mx.test")
    assert await client.cmd(login) == R.AUTH_EHLO_FIRST
    assert (await client.cmd("EHLO client.test")).startswith("250")
    assert await client.cmd("MAIL FROM:<a@b.test>") == R.MAIL_OK
    assert await client.cmd(login) == R.AUTH_IN_TRANSACTION
    assert await client.cmd("RSET") == R.FLUSHED
    assert await client.cmd(login) == R.AUTH_OK
    assert await client.cmd(login) == R.AUTH_ALREADY

    client = await session(ingress.ports["submission"])
    await client.starttls(client_tls)
    assert await client.cmd(login) == R.AUTH_EHLO_FIRST
    assert (await client.cmd("EHLO client.test")).startswith("250")
    assert await client.cmd("MAIL FROM:<alice@example.org>") == R.AUTH_REQUIRED
    assert await client.cmd(login) == R.AUTH_OK
    assert await client.cmd("MAIL FROM:<alice@example.org>") == R.MAIL_OK
    assert await client.cmd(login) == R.AUTH_ALREADY


async def _send_utf8(client: Client, recipient: str) -> None:
    assert await client.cmd("MAIL FROM:<j\u00f6rg@example.org> SMTPUTF8") == R.MAIL_OK
    assert await client.cmd(f"RCPT TO:<{recipient}>") == R.RCPT_OK
    assert await client.cmd("DATA") == R.GO_AHEAD
    await client.send(f"Subject: {recipient}\r\n\r\nx\r\n.\r\n")
    assert (await client.reply()).startswith("250 ok ")


async def test_received_names_the_protocol_as_rfc_6531_does(
        make_ingress: MakeIngress, js: Any, relay_auth: str,
        client_tls: ssl.SSLContext) -> None:
    """With SMTPUTF8 the names are UTF8SMTP, UTF8SMTPS, UTF8SMTPA and UTF8SMTPSA (RFC 6531
    3.7.3, Postfix and Gmail write them): ours said UTF8ESMTPSA, which no registry knows
    and no reader of Received: lines (SpamAssassin's trusted-relay logic) takes for an
    authenticated submission."""
    ingress = await _ingress(make_ingress, js, relay_auth)
    client = await session(ingress.ports["smtp"])
    await _send_utf8(client, "bob@example.org")
    client = await _tls_session(ingress.ports["submission"], client_tls)
    assert await client.cmd(f"AUTH PLAIN {plain('alice@example.org', 'secret')}") == \
        R.AUTH_OK
    await _send_utf8(client, "x@elsewhere.test")
    spool = Spool(ingress.settings.spool_dir)
    withs = {}
    for queue_id in committed(ingress):
        _, data = spool.read_sync(queue_id)
        head = data.split(b"\r\n\r\n")[0].decode()
        withs[head.split("Subject: ")[1]] = head.split(" with ")[1].split()[0]
    assert withs == {"bob@example.org": "UTF8SMTP", "x@elsewhere.test": "UTF8SMTPSA"}


async def test_an_8bit_password_reaches_the_crypt_hash_of_its_octets(
        make_ingress: MakeIngress, js: Any, relay_auth: str,
        client_tls: ssl.SSLContext) -> None:
    """A client that sends its password in ISO-8859-1 ("p\xe4sswort") logged in on the old
    qmail host, whose crypt(3) read bytes: PLAIN and LOGIN carry the octets to relay-auth,
    and an imported hash of them matches; the UTF-8 form of the same text does not (the old
    hash never matched it either), and the user name must still be UTF-8."""
    from mailyard.api.directory.v1 import directory_pb2 as dpb
    from mailyard.core import bus, libcrypt
    from mailyard.core.directory import record_key

    ingress = await _ingress(make_ingress, js, relay_auth)
    latin1 = "p\u00e4sswort".encode("latin-1")
    kv = await bus.ensure_kv(js, bus.KV_DIRECTORY)
    await kv.put(record_key("mailbox", "bob@example.org"), dpb.Mailbox(
        address="bob@example.org",
        password_hash=libcrypt.crypt(latin1, "$1$vpop$") or "").SerializeToString())
    port = ingress.ports["submission"]

    def enc(data: bytes) -> str:
        return base64.b64encode(data).decode()

    as_latin1 = enc(b"\0bob@example.org\0" + latin1)
    as_utf8 = plain("bob@example.org", "p\u00e4sswort")
    name_latin1 = enc(b"\0b\xf6b@example.org\0" + latin1)
    client = await _tls_session(port, client_tls)
    assert await client.cmd(f"AUTH PLAIN {as_latin1}") == R.AUTH_OK
    client = await _tls_session(port, client_tls)
    assert await client.cmd(f"AUTH LOGIN {enc(b'bob@example.org')}") == \
        R.auth_challenge(b64("Password:"))
    assert await client.cmd(enc(latin1)) == R.AUTH_OK
    client = await _tls_session(port, client_tls)
    assert await client.cmd(f"AUTH PLAIN {as_utf8}") == R.AUTH_FAILED
    assert await client.cmd(f"AUTH PLAIN {name_latin1}") == R.AUTH_FAILED


_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
                max_size=20)


@settings(max_examples=300, deadline=None)
@given(authzid=_TEXT, authcid=_TEXT, password=_TEXT)
def test_plain_credentials_are_the_users_own(authzid: str, authcid: str,
                                             password: str) -> None:
    raw = b64(f"{authzid}\0{authcid}\0{password}")
    own = bool(authcid) and authzid in ("", authcid)
    assert plain_credentials(raw) == ((authcid, password) if own else None)


@settings(max_examples=300, deadline=None)
@given(raw=st.one_of(st.text(max_size=60), st.binary(max_size=60).map(
    lambda b: base64.b64encode(b).decode()), st.text(st.sampled_from("AB=+/ \t\0"),
                                                      max_size=30)))
def test_any_response_is_credentials_or_none(raw: str) -> None:
    """Whatever a client sends (no NULs around the authcid, extra NULs, padding or
    whitespace inside the base64, bytes that are no UTF-8): a pair or None, no exception."""
    found = plain_credentials(raw)
    if found is not None:
        assert found[0] and "\0" not in found[0] + found[1]


@settings(max_examples=300, deadline=500)
@given(password=st.binary(max_size=40).filter(lambda b: b"\0" not in b))
def test_a_password_comes_through_as_the_octets_sent(password: bytes) -> None:
    """Whatever octets a password is (UTF-8, ISO-8859-1, anything): relay-auth checks those
    octets, no more, no fewer (password_hashes.octets of what PLAIN hands on)."""
    from mailyard.core.password_hashes import octets

    found = plain_credentials(base64.b64encode(b"\0joe@example.org\0" + password).decode())
    assert found is not None and found[0] == "joe@example.org"
    assert octets(found[1]) == password
