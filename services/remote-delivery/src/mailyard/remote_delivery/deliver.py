"""One delivery job over SMTP (qmail-remote): route, connect, EHLO, STARTTLS, AUTH,
MAIL, RCPT per recipient, DATA; a result for every recipient.

Hops are tried in order (every address of every MX) while nobody has taken responsibility:
a refused connection, a timeout, a non-2xx greeting or a TLS policy that cannot be met moves
on to the next. Once a server answered MAIL, its replies are final for this attempt:
2xx delivered, 4xx deferred, 5xx failed; one refused recipient does not fail the others.

aiosmtplib holds the session (connect, EHLO, STARTTLS, AUTH, RSET, QUIT); the transaction
itself (MAIL, RCPT..., DATA in one write when the server offers PIPELINING) is
transaction.py; what follows the 354 (CRLF everywhere, lines folded, dots stuffed) is
made once per job by wire.py, and for the mail the platform wrote itself (bounces,
vacation replies) by signing.py, which DKIM-signs it first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import time
from dataclasses import dataclass

import aiosmtplib
from aiosmtplib.email import parse_address
from aiosmtplib.protocol import COMMAND_INJECTION_REGEX
from aiosmtplib.response import SMTPResponse

from mailyard.api.mail.v1.delivery_pb2 import (
    OUTCOME_DEFERRED,
    OUTCOME_DELIVERED,
    OUTCOME_FAILED,
    DeliveryJob,
    Outcome,
    RecipientResult,
)
from mailyard.api.mail.v1.envelope_pb2 import ORIGIN_UNSPECIFIED, Lines, Origin
from mailyard.core import smtproutes as routes
from mailyard.core.control import ControlView
from mailyard.remote_delivery import (
    metrics,
    smtp_protocol,  # noqa: F401 (aiosmtplib reads a reply once)
    transaction,
)
from mailyard.remote_delivery.lookup import Hop, Lookup, Plan
from mailyard.remote_delivery.pool import Connection, DestKey, Pool, quit_quietly
from mailyard.remote_delivery.settings import Settings
from mailyard.remote_delivery.signing import SIGNED_ORIGINS, EgressSigner
from mailyard.remote_delivery.wire import Wire, wire

log = logging.getLogger(__name__)

NO_CONNECTION = "Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)"
CONNECTION_DIED = "Connected to {host} but connection died. (#4.4.2)"
TOO_SLOW = "Connected to {host} but it took the message slower than {rate:.0f} bytes/s. (#4.4.2)"
GREETING_FAILED = "Connected to {host} but greeting failed. Remote host said: {reply}"
TLS_REQUIRED = "Connected to {host} but STARTTLS {why}; the route requires TLS. (#4.7.5)"
AUTH_FAILED = "Connected to {host} but authentication failed. Remote host said: {reply}"
# After the reply code where a whole reply line is given ("550 5.7.1 ..."): a refused MAIL
# and our own failures ("553 5.6.7 ...") lost their code to 5.0.0 in the bounce's Status.
_ENHANCED = re.compile(r"^(?:[245]\d\d[ -])?([245]\.\d{1,3}\.\d{1,3})\b")
_QMAIL_CODE = re.compile(r"\(#([245]\.\d{1,3}\.\d{1,3})\)")
_DEFAULT_CODE = {int(OUTCOME_DELIVERED): "2.0.0", int(OUTCOME_DEFERRED): "4.0.0"}
# An address that needs no parsing to be quoted on a MAIL/RCPT line; anything else goes
# through aiosmtplib's own (email.utils) parsing.
_PLAIN_ADDRESS = re.compile(r'[^\x00-\x20\x7f<>()\[\]\\,;:"@]+@[^\x00-\x20\x7f<>()\[\]\\,;:"@]+\Z')
# A Content-Type whose body holds header fields of its own (\s: the value may be folded)
_MIME_CONTAINER = re.compile(rb"(?im)^content-type:\s*(?:multipart|message)/")
PLAN_CACHE_SIZE = 10_000   # (domain, route) plans kept; the oldest goes first


def enhanced_code(code: int, text: str) -> str:
    found = _ENHANCED.match(text) or _QMAIL_CODE.search(text)
    return found.group(1) if found else _DEFAULT_CODE.get(int(outcome_of(code)), "5.0.0")


def outcome_of(code: int) -> Outcome.ValueType:
    """2xx delivered, 5xx failed; 4xx deferred, and so is a code no server should send
    here (a 354 to MAIL, a 1xx, a 9xx): nobody refused, so nothing bounces."""
    if 200 <= code < 300:
        return OUTCOME_DELIVERED
    return OUTCOME_FAILED if 500 <= code < 600 else OUTCOME_DEFERRED


def result(recipient: str, outcome: Outcome.ValueType, reply: str, code: str = "", host: str = "",
           ) -> RecipientResult:
    if not code:
        found = _QMAIL_CODE.search(reply) or _ENHANCED.match(reply)
        code = found.group(1) if found else _DEFAULT_CODE.get(int(outcome), "5.0.0")
    return RecipientResult(recipient=recipient, outcome=outcome, reply=reply,
                           enhanced_code=code, remote_host=host)


def all_recipients(job: DeliveryJob, outcome: Outcome.ValueType, reply: str, host: str = "",
                   reason: str = "") -> list[RecipientResult]:
    if outcome == OUTCOME_DEFERRED and reason:
        for _ in job.recipients:
            metrics.deferral(reason)
    return [result(r, outcome, reply, host=host) for r in job.recipients]


def _needs_smtputf8(job: DeliveryJob, data: bytes) -> bool:
    """Does SMTPUTF8 mail hold UTF-8 where a server without SMTPUTF8 may not get it (RFC
    6531 section 3.2: an address, or a header field at any level of the MIME structure)?
    Some clients ask for SMTPUTF8 on every message; one that needs it nowhere goes without
    the parameter. An 8-bit body of one part is text (8BITMIME); a multipart or message/*
    body with 8-bit octets may hold a part's or an enclosed message's header in UTF-8,
    which is not looked for: it keeps needing SMTPUTF8. Asked only of SMTPUTF8 mail to such
    a server, so other mail pays nothing."""
    if not (job.sender.isascii() and all(r.isascii() for r in job.recipients)):
        return True
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 else data[:end]
    if not head.isascii():
        return True
    return not data.isascii() and _MIME_CONTAINER.search(head) is not None


def reply_text(reply: aiosmtplib.SMTPResponseException | SMTPResponse) -> str:
    """The remote's reply on one line. Bytes that are not UTF-8 (many servers answer in
    Latin-1) become "?" as in qmail-remote and Postfix: the results are protobuf strings,
    which refuse them."""
    text = f"{reply.code} {' '.join(reply.message.split())}"
    return text.encode("utf-8", "replace").decode("utf-8")


@dataclass
class TryNext(Exception):
    """This host did not take responsibility; try the next one."""

    reply: str
    reason: str            # a metrics.DEFERRAL_REASONS value
    connected: bool = False


class Deliverer:
    def __init__(self, settings: Settings, control: ControlView, lookup: Lookup,
                 pool: Pool) -> None:
        self.settings = settings
        self.control = control
        self.lookup = lookup
        self.identity = lookup.identity
        self.pool = pool
        self._opportunistic = ssl.create_default_context()
        self._opportunistic.check_hostname = False
        self._opportunistic.verify_mode = ssl.CERT_NONE  # "may"/"must": encrypt, don't judge
        self._verifying = ssl.create_default_context()
        if settings.tls_ca_file:
            self._verifying.load_verify_locations(cafile=str(settings.tls_ca_file))
        self._routes_raw: bytes | None = None
        self._routes: dict[str, routes.Route] = {}
        self._plans: dict[tuple[str, routes.Route | None], Plan] = {}
        self.signer = EgressSigner(settings.dkim_dir) if settings.dkim_dir else None

    @property
    def helo_name(self) -> str:
        """HELO setting if given, else control/me (hot)."""
        return self.settings.helo or self.identity.me

    def routes(self) -> dict[str, routes.Route]:
        """smtproutes as this very moment's control file says (qmail rereads it on every
        delivery); parsed again only when the KV watch brought a new value."""
        raw = self.control.data.get("smtproutes")
        if raw is not self._routes_raw:
            self._routes = routes.parse(raw.decode() if raw is not None else "")
            self._routes_raw = raw
            self._plans.clear()  # a changed route applies to the very next delivery
        return self._routes

    async def plan(self, domain: str) -> Plan:
        """Where mail for a domain goes now. A plan that worked is reused until its DNS
        answers expire (their TTL; never, for an address in smtproutes) or smtproutes
        changes, so a steady stream to one destination resolves nothing per message."""
        route = routes.choose(self.routes(), domain)
        key = (domain, route)
        cached = self._plans.get(key)
        if cached is not None:
            if cached.expires > time.time():
                return cached.reshuffled()
            del self._plans[key]
        plan = await self.lookup.plan(domain, route)
        if plan.ok and plan.expires > time.time():
            if len(self._plans) >= PLAN_CACHE_SIZE:
                del self._plans[next(iter(self._plans))]
            self._plans[key] = plan
        return plan

    async def deliver(self, job: DeliveryJob, data: bytes, lines: Lines | None = None,
                      origin: Origin.ValueType = ORIGIN_UNSPECIFIED) -> list[RecipientResult]:
        """Deliver the spooled message `data`; `lines`, `origin`: its envelope's, if set
        (mail the platform wrote itself is DKIM-signed on the way out: signing.py)."""
        plan = await self.plan(job.domain)
        if not plan.ok:
            if plan.permanent:
                return all_recipients(job, OUTCOME_FAILED, plan.error)
            return all_recipients(job, OUTCOME_DEFERRED, plan.error, reason="dns")
        last = TryNext(NO_CONNECTION, "connect")
        if origin in SIGNED_ORIGINS and self.signer is not None:
            message = self.signer.wire(data, job.queue_id, origin)
        else:
            message = wire(data, lines)
        for hop in plan.hops:
            for address in hop.addresses:
                try:
                    return await self._on(hop, address, plan, job, message)
                except TryNext as failure:
                    log.info("next hop", extra={"queue_id": job.queue_id, "host": hop.host,
                                                "address": address, "why": failure.reply})
                    if failure.connected or not last.connected:
                        last = failure
        return all_recipients(job, OUTCOME_DEFERRED, last.reply, reason=last.reason)

    # -- one destination ---------------------------------------------------------------

    def _policy(self, plan: Plan) -> str:
        if plan.route is not None and plan.route.tls:
            return plan.route.tls
        return self.settings.tls_policy

    async def _on(self, hop: Hop, address: str, plan: Plan, job: DeliveryJob,
                  message: Wire) -> list[RecipientResult]:
        policy = self._policy(plan)
        user = plan.route.auth_user if plan.route else ""
        key: DestKey = (address, hop.port, policy, user, hop.host)
        async with self.pool.slot(address, hop.port):
            conn = self.pool.take(key)
            if conn is not None:
                try:
                    return await self._transaction(conn, job, message)
                except _Stale:
                    await quit_quietly(conn)  # the server dropped the idle session
            try:
                conn = await self._open(hop, address, key, policy, plan)
            except TryNext as first:
                if first.reason != "tls" or policy != "may":
                    raise
                # "may": a broken handshake is no reason to hold mail; go again in clear.
                conn = await self._open(hop, address, key, "none", plan)
            return await self._transaction(conn, job, message)

    async def _open(self, hop: Hop, address: str, key: DestKey, policy: str,
                    plan: Plan) -> Connection:
        s = self.settings
        smtp = aiosmtplib.SMTP(hostname=address, port=hop.port, timeout=s.command_timeout,
                               local_hostname=self.helo_name, start_tls=False,
                               validate_certs=False)
        try:
            await smtp.connect(timeout=s.connect_timeout)
        except aiosmtplib.SMTPConnectResponseError as exc:
            metrics.CONNECTIONS.labels("failed").inc()
            raise TryNext(GREETING_FAILED.format(host=address, reply=reply_text(exc)),
                          "greeting", connected=True) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            metrics.CONNECTIONS.labels("failed").inc()
            raise TryNext(NO_CONNECTION, "connect") from exc
        metrics.CONNECTIONS.labels("opened").inc()
        conn = Connection(smtp, key, hop.host)
        try:
            await self._hello(conn)
            if policy != "none":
                await self._starttls(conn, policy, hop.host, address)
            else:
                metrics.TLS.labels("disabled").inc()
            if plan.route is not None and plan.route.auth_user:
                await self._auth(conn, plan, address)
        except TryNext:
            await quit_quietly(conn)
            raise
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            await quit_quietly(conn)
            raise TryNext(CONNECTION_DIED.format(host=address), "lost", connected=True) from exc
        return conn

    async def _hello(self, conn: Connection) -> None:
        try:
            await conn.smtp.ehlo()
        except aiosmtplib.SMTPHeloError as exc:
            if exc.code == 421:
                raise TryNext(GREETING_FAILED.format(host=conn.host, reply=reply_text(exc)),
                              "greeting", connected=True) from None
            try:
                await conn.smtp.helo()
            except aiosmtplib.SMTPHeloError as again:
                raise TryNext(GREETING_FAILED.format(host=conn.host, reply=reply_text(again)),
                              "greeting", connected=True) from None

    async def _starttls(self, conn: Connection, policy: str, name: str, address: str) -> None:
        required = policy in ("must", "verify")
        if not conn.smtp.supports_extension("starttls"):
            metrics.TLS.labels("not_offered").inc()
            if required:
                raise TryNext(TLS_REQUIRED.format(host=address, why="is not offered"), "tls",
                              connected=True)
            return
        context = self._verifying if policy == "verify" else self._opportunistic
        try:
            await conn.smtp.starttls(server_hostname=name, tls_context=context)
        except (aiosmtplib.SMTPException, ssl.SSLError, OSError, TimeoutError) as exc:
            metrics.TLS.labels("failed").inc()
            why = f"failed ({' '.join(str(exc).split())[:200]})"
            raise TryNext(TLS_REQUIRED.format(host=address, why=why), "tls",
                          connected=True) from None
        metrics.TLS.labels("established").inc()
        conn.tls = True
        await self._hello(conn)  # RFC 3207: forget what was said before TLS

    async def _auth(self, conn: Connection, plan: Plan, address: str) -> None:
        assert plan.route is not None
        if not conn.tls and not address.startswith(("127.", "::1")):
            raise TryNext(AUTH_FAILED.format(host=address, reply="(not sent without TLS)"),
                          "auth", connected=True)
        try:
            await conn.smtp.login(plan.route.auth_user, plan.route.password())
        except aiosmtplib.SMTPResponseException as exc:
            raise TryNext(AUTH_FAILED.format(host=address, reply=reply_text(exc)), "auth",
                          connected=True) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise TryNext(AUTH_FAILED.format(host=address, reply=str(exc)), "auth",
                          connected=True) from None

    # -- the transaction ---------------------------------------------------------------

    async def _transaction(self, conn: Connection, job: DeliveryJob,
                           message: Wire) -> list[RecipientResult]:
        smtp, host = conn.smtp, conn.host
        fresh = conn.uses == 0
        options = b""
        size_limit = smtp.esmtp_extensions.get("size", "")
        # A plain number, else no limit (Postfix: "bad EHLO SIZE limit"): int() refuses a
        # superscript, which isdigit() takes, and 4,300 digits; 19 and more are no limit.
        if (size_limit.isascii() and size_limit.isdigit() and len(size_limit) < 19
                and 0 < int(size_limit) < message.size):
            self.pool.give_back(conn)
            return all_recipients(job, OUTCOME_FAILED, f"552 5.3.4 Message is {message.size} "
                                  f"bytes; {host} takes at most {size_limit}.", host=host)
        if smtp.supports_extension("size"):
            options += b" SIZE=%d" % message.size
        if job.body_8bit and smtp.supports_extension("8bitmime"):
            options += b" BODY=8BITMIME"  # without it we still send (qmail does too)
        encoding = "ascii"
        if job.smtputf8 and smtp.supports_extension("smtputf8"):
            options += b" SMTPUTF8"
            encoding = "utf-8"
        elif job.smtputf8 and _needs_smtputf8(job, message.data):
            self.pool.give_back(conn)
            return all_recipients(job, OUTCOME_FAILED, f"553 5.6.7 {host} does not "
                                  "support SMTPUTF8, needed for this message.", host=host)
        results: dict[str, RecipientResult] = {}
        try:
            mail = b"MAIL FROM:" + _path(job.sender, encoding) + options + b"\r\n"
        except ValueError:
            self.pool.give_back(conn)  # not sendable at all: the worker defers it (internal)
            raise
        sent: list[str] = []
        lines: list[bytes] = []
        for rcpt in job.recipients:
            try:
                lines.append(b"RCPT TO:" + _path(rcpt, encoding) + b"\r\n")
                sent.append(rcpt)
            except ValueError:
                results[rcpt] = result(rcpt, OUTCOME_FAILED,
                                       "553 5.1.3 address not usable in SMTP", host=host)
        if not sent:
            self.pool.give_back(conn)
            return self._ordered(job, results, host, "recipient")
        replies = await transaction.run(smtp, mail, lines, message.data,
                                        pipelining=smtp.supports_extension("pipelining"),
                                        timeout=self.settings.command_timeout,
                                        min_rate=self.settings.min_data_rate)
        if not smtp.is_connected:
            conn.broken = True  # closed already (lost, or out of step): the pool drops it

        def died(recipients: list[str], why: str = CONNECTION_DIED.format(host=host),
                 ) -> dict[str, RecipientResult]:
            return {r: result(r, OUTCOME_DEFERRED, why, "4.4.2", host) for r in recipients}

        if replies.mail is None:  # the connection was gone before MAIL was answered
            self.pool.give_back(conn)
            if not fresh:
                raise _Stale  # an idle session the server closed: open a new one
            return self._ordered(job, results | died(sent), host, "lost")
        if not transaction.accepted(replies.mail):
            await self._reset(conn, replies.mail.code)
            return all_recipients(job, outcome_of(replies.mail.code), reply_text(replies.mail),
                                  host, reason="sender")
        accepted: list[str] = []
        for rcpt, reply in zip(sent, replies.rcpts, strict=False):  # shorter when lost
            if transaction.accepted(reply):
                accepted.append(rcpt)
            else:
                results[rcpt] = _result(rcpt, reply, host)
        results.update(died(sent[len(replies.rcpts):]))  # never answered
        if not accepted:
            await self._reset(conn, 0)
            return self._ordered(job, results, host, "lost" if replies.lost else "recipient")
        if replies.sent_message:
            if replies.final is None:
                self.pool.give_back(conn)
                if replies.too_slow:
                    log.warning("next hop took the message too slowly", extra={
                        "queue_id": job.queue_id, "host": host, "size": message.size,
                        "min_data_rate": self.settings.min_data_rate})
                    why = TOO_SLOW.format(host=host, rate=self.settings.min_data_rate)
                    return self._ordered(job, results | died(accepted, why), host, "lost")
                return self._ordered(job, results | died(accepted), host, "lost")
            final = replies.final
        elif replies.data is not None and replies.data.code >= 400:
            final = replies.data  # DATA refused: the accepted recipients share its reply
        else:  # DATA unanswered, or the server is closing (421 to a RCPT)
            self.pool.give_back(conn)
            return self._ordered(job, results | died(accepted), host, "lost")
        for rcpt in accepted:
            results[rcpt] = _result(rcpt, final, host)
        if transaction.accepted(final):
            self.pool.give_back(conn)
            return self._ordered(job, results, host, "recipient")
        await self._reset(conn, final.code)
        return self._ordered(job, results, host, "data")

    async def _reset(self, conn: Connection, code: int) -> None:
        """After a refused transaction: RSET and keep the session, unless it is closing."""
        if code == 421 or not conn.alive:
            conn.broken = True
        else:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.smtp.rset(), self.settings.connect_timeout)
                self.pool.give_back(conn)
                return
            conn.broken = True
        self.pool.give_back(conn)

    @staticmethod
    def _ordered(job: DeliveryJob, results: dict[str, RecipientResult], host: str,
                 reason: str) -> list[RecipientResult]:
        out = []
        for rcpt in job.recipients:
            res = results.get(rcpt) or result(rcpt, OUTCOME_DEFERRED, NO_CONNECTION, host=host)
            if res.outcome == OUTCOME_DEFERRED:
                metrics.deferral(reason)
            out.append(res)
        return out


class _Stale(Exception):
    pass


def _path(address: str, encoding: str) -> bytes:
    """<address> for MAIL/RCPT, checked as aiosmtplib's mail()/rcpt() check it; ValueError
    if it cannot go on a command line. An address that needs no parsing skips the
    email.utils parsing (the envelope was checked at the SMTP edge)."""
    if not address or _PLAIN_ADDRESS.match(address):
        return b"<" + address.encode(encoding) + b">"
    path = b"<" + parse_address(address).encode(encoding) + b">"  # ValueError: would inject
    if COMMAND_INJECTION_REGEX.search(path):
        raise ValueError("control character in an address")
    return path


def _result(recipient: str, reply: SMTPResponse, host: str) -> RecipientResult:
    return result(recipient, outcome_of(reply.code), reply_text(reply),
                  enhanced_code(reply.code, reply.message), host)
