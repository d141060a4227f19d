"""Connection phase (tcpserver's rules, rblsmtpd's lookup), HELO/EHLO and STARTTLS."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from mailyard.smtp_ingress import replies
from mailyard.smtp_ingress.errors import Close, Disconnect, IdleTimeout
from mailyard.smtp_ingress.metrics import TLS_FAILURES
from mailyard.smtp_ingress.tls import HANDSHAKE_TIMEOUT, handshake_failure

if TYPE_CHECKING:
    from mailyard.smtp_ingress.session import Session

log = logging.getLogger(__name__)
_HOSTNAME = re.compile(r"[\x21-\x7e\u0080-\U0010ffff]{1,255}")


async def greet(s: Session) -> bool:
    """tcpserver + rblsmtpd: ask relay-auth about the client once, start the DNSBL lookups
    in the background (their answers are needed only at RCPT), greet. On the MX listener,
    with GREET_PAUSE set, wait that long before the 220 (postscreen's greet wait): an SMTP
    client waits for the greeting (RFC 5321 3.1), a spam engine that talks first is told
    554 5.5.0 and closed. Relay clients are not made to wait."""
    s.client = await s.app.relay.check_client(s.ip)
    if s.client is not None and not s.client.allow_connect:
        raise Close(replies.CLIENT_DENIED, "client_denied")
    if not (s.client is not None and s.client.allow_relay):  # relay clients are exempt
        if not s.app.limits.admit(s.ip):
            raise Close(replies.TOO_MANY_CONNECTIONS, "too_many_connections")
        s.admitted = True
    s.dnsbl = s.app.dnsbl.start(s)
    pause = s.settings.greet_pause
    if pause and s.listener.name == "smtp" and not (s.client and s.client.allow_relay):
        try:
            await s.fill(pause)
        except IdleTimeout:
            pass  # silent for the whole pause: a well-behaved client
        else:
            raise Close(replies.PREGREET, "pregreet")
    s.reply(replies.greeting(s.app.me()))
    return True


def _helo_name(s: Session, arg: str, verb: str) -> str | None:
    name = arg.strip()
    if not _HOSTNAME.fullmatch(name):
        s.reject(replies.helo_syntax(verb), "syntax")
        return None
    if s.ptr is None and s.settings.reverse_dns:
        # the reverse name is for the Received: line; asked once the client has spoken
        # SMTP, so connections that only sit idle cost no DNS query (or its memory)
        s.ptr = s.app.dnsbl.start_ptr(s.ip)
    return name


async def helo(s: Session, arg: str) -> bool:
    name = _helo_name(s, arg, "HELO")
    if name is not None:
        s.helo, s.esmtp, s.tx = name, False, None
        s.reply(replies.helo_ok(s.app.me()))
    return True


def auth_offered(s: Session) -> bool:
    return bool(s.tls) or s.settings.cleartext_auth_on(s.listener.name)


async def ehlo(s: Session, arg: str) -> bool:
    name = _helo_name(s, arg, "EHLO")
    if name is None:
        return True
    s.helo, s.esmtp, s.tx = name, True, None
    lines = ["PIPELINING", "8BITMIME", f"SIZE {s.app.databytes()}"]
    if not s.tls and s.app.tls_context is not None:
        lines.append("STARTTLS")
    if auth_offered(s) and not s.auth_user:
        lines.append("AUTH " + " ".join(s.settings.auth_mechanisms()))
    lines += ["ENHANCEDSTATUSCODES", "SMTPUTF8"]
    s.reply(replies.ehlo(s.app.me(), lines))
    return True


async def starttls(s: Session, arg: str) -> bool:
    if s.tls or s.app.tls_context is None:
        s.reject(replies.STARTTLS_UNAVAILABLE, "tls")
        return True
    if arg.strip():
        s.reject(replies.STARTTLS_SYNTAX, "syntax")
        return True
    s.reply(replies.STARTTLS_READY)
    await s.flush()
    s.discard_input()
    try:
        await s.writer.start_tls(s.app.tls_context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
    except Exception as exc:  # failed handshake: the connection is unusable
        # Postfix logs "SSL_accept error" with OpenSSL's reason: a sender whose TLS we
        # refuse may go on in the clear or not at all, so it is counted and said.
        why = handshake_failure(exc)
        TLS_FAILURES.labels(s.listener.name, why).inc()
        log.info("TLS handshake failed", extra={"client_ip": s.ip, "listener": s.listener.name,
                                                "reason": why, "detail": str(exc)[:200]})
        raise Disconnect from exc
    s.reset_after_tls()  # RFC 3207: forget everything learnt before TLS
    return True
