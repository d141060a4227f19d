"""AUTH PLAIN, LOGIN and (when the operator enables it: AUTH_CRAM_MD5) CRAM-MD5, checked by
relay-auth (vchkpw's job).

Every failure gets an answer (535 5.7.8; aiosmtpd stays silent on some), the third failure
on a connection closes it (421), and relay-auth counts failures per IP for every replica.
relay-auth unreachable or throttling is a temporary 454, never a success. Client input is
bounded (MAX_AUTH_LINE) and no exception text reaches the client.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING

from mailyard.api.relayauth.v1 import relayauth_pb2 as ra
from mailyard.smtp_ingress import replies
from mailyard.smtp_ingress.ehlo import auth_offered
from mailyard.smtp_ingress.errors import Close
from mailyard.smtp_ingress.metrics import AUTH_ATTEMPTS

if TYPE_CHECKING:
    from mailyard.smtp_ingress.session import Session


class _Abort(Exception):
    """The client answered "*" (RFC 4954: cancel the exchange), or a line that is no
    answer (`replied`: text_line has told it why, and that reply ends the exchange)."""

    def __init__(self, replied: bool = False) -> None:
        super().__init__()
        self.replied = replied


async def auth(s: Session, arg: str) -> bool:
    mech, _, initial = arg.strip().partition(" ")
    mech = mech.upper()
    if not s.esmtp:  # an EHLO extension (RFC 4954 3): so again after STARTTLS's reset
        s.reject(replies.AUTH_EHLO_FIRST, "sequence")
        return True
    if s.auth_user:
        s.reject(replies.AUTH_ALREADY, "sequence")
        return True
    if s.tx is not None:
        s.reject(replies.AUTH_IN_TRANSACTION, "sequence")
        return True
    if not auth_offered(s):
        s.reject(replies.STARTTLS_FIRST, "tls_required")
        return True
    if mech not in s.settings.auth_mechanisms():
        s.reject(replies.AUTH_MECHANISM, "auth")
        return True
    if s.client is not None and s.client.auth_throttled:
        AUTH_ATTEMPTS.labels(mech, "throttled").inc()
        s.reject(replies.AUTH_THROTTLED, "auth_throttled")
        return True
    try:
        result = await _exchange(s, mech, initial.strip())
    except _Abort as abort:
        AUTH_ATTEMPTS.labels(mech, "aborted").inc()
        if not abort.replied:  # one reply per line: a second was read as the next one's
            s.reject(replies.AUTH_ABORTED, "auth")
        return True
    if result is None:
        AUTH_ATTEMPTS.labels(mech, "unavailable").inc()
        s.reject(replies.AUTH_UNAVAILABLE, "auth_unavailable")
    elif result.result == ra.AUTH_RESULT_OK and result.user:
        AUTH_ATTEMPTS.labels(mech, "ok").inc()
        s.auth_user = result.user
        s.reply(replies.AUTH_OK)
    elif result.result == ra.AUTH_RESULT_THROTTLED:
        AUTH_ATTEMPTS.labels(mech, "throttled").inc()
        s.reject(replies.AUTH_THROTTLED, "auth_throttled")
    elif result.result == ra.AUTH_RESULT_MECHANISM_UNAVAILABLE:
        # CRAM-MD5 for a mailbox without a CRAM secret: the password was never checked, so
        # this is no failed password (no count, no 535); the client can use PLAIN or LOGIN.
        AUTH_ATTEMPTS.labels(mech, "mechanism_unavailable").inc()
        s.reject(replies.AUTH_MECHANISM_UNAVAILABLE, "auth")
    else:
        AUTH_ATTEMPTS.labels(mech, "failed").inc()
        s.auth_failures += 1
        if s.auth_failures >= s.settings.max_auth_failures:
            s.reject(replies.AUTH_FAILED, "auth_failed")
            raise Close(replies.AUTH_TOO_MANY_FAILURES, "too_many_auth_failures")
        s.reject(replies.AUTH_FAILED, "auth_failed")
    return True


async def _answer(s: Session, challenge: str) -> str:
    """Send a 334 challenge and read the client's line; "" when it cannot be decoded."""
    s.reply(replies.auth_challenge(challenge))
    text = await s.text_line(s.settings.max_auth_line)
    if text is None:  # consumed whole and answered: the session goes on in step
        raise _Abort(replied=True)
    if text.strip() == "*":
        raise _Abort
    return text.strip()


def _octets(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _b64(text: str) -> str | None:
    try:
        data = _octets(text)
        return data.decode("utf-8") if data is not None else None
    except ValueError:
        return None


def _password(data: bytes) -> str:
    """A password as sent: UTF-8, or, from a client that sends ISO-8859-1 (qmail's users'
    old clients), the octets kept losslessly as surrogates (password_hashes.octets gives
    them back). Only a crypt(3) hash of the same octets can match such a password."""
    return data.decode("utf-8", "surrogateescape")


def plain_credentials(raw: str) -> tuple[str, str] | None:
    """RFC 4616's message, base64 of [authzid] NUL authcid NUL passwd, as (authcid,
    passwd); None when it is no such message, or when it asks to act for an authzid other
    than the authcid: we offer no proxy authorization, and the client must not be told it
    acts for someone while it is logged in as itself (RFC 4616 2: the exchange fails).
    The names must be UTF-8; the password is what _password makes of its octets."""
    decoded = _octets(raw)
    parts = decoded.split(b"\0") if decoded is not None else []
    if len(parts) != 3:
        return None
    try:
        authzid, authcid = parts[0].decode("utf-8"), parts[1].decode("utf-8")
    except ValueError:
        return None
    if not authcid or authzid not in ("", authcid):
        return None
    return authcid, _password(parts[2])


def _enc(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def _exchange(s: Session, mech: str, initial: str) -> ra.AuthenticateResponse | None:
    """Run one mechanism; None = relay-auth unavailable; a response otherwise (a decoding
    failure is reported as bad credentials)."""
    bad = ra.AuthenticateResponse(result=ra.AUTH_RESULT_BAD_CREDENTIALS)
    relay = s.app.relay
    if mech == "PLAIN":
        # "=" is an initial response of zero length (RFC 4954 4), not the lack of one:
        # no PLAIN message, 535 (a 334 for it was a challenge the client never answers)
        credentials = plain_credentials(initial or await _answer(s, ""))
        if credentials is None:
            return bad
        return await relay.authenticate("PLAIN", *credentials, s.ip)
    if mech == "LOGIN":
        user = _b64(initial) if initial else _b64(await _answer(s, _enc("Username:")))
        if not user:
            return bad
        data = _octets(await _answer(s, _enc("Password:")))
        if data is None:
            return bad
        return await relay.authenticate("LOGIN", user, _password(data), s.ip)
    # CRAM-MD5: relay-auth makes the challenge (it keeps the secret side of the exchange)
    challenge = await relay.cram_challenge(s.ip, s.app.me())
    if challenge is None:
        return None
    reply = _b64(await _answer(s, _enc(challenge.challenge)))
    user, _, digest = (reply or "").rpartition(" ")
    if not user or not digest:
        return bad
    return await relay.cram_verify(challenge.challenge_id, user, digest, s.ip)
