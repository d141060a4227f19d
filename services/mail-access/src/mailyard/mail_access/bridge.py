"""What the bridge answers to Dovecot's passdb and userdb lookups.

passdb key `shared/passdb/<service>/<client ip>/<login>/<password>` (auth-dict.conf.ext;
Dovecot's auth_username_chars keep "/" out of the login, so everything after the fourth
"/" is the password): relay-auth's Authenticate with protocol = service, the same check,
hashes and failure throttling as SMTP AUTH; a success grants the client's
POP-before-SMTP lease in the same call. Answers: found `{"nopassword": "y", "user":
<canonical>}` (Dovecot trusts the check), not found for a wrong password or unknown user, a
temporary failure (Dovecot's "Temporary authentication failure", see _temporary_failure) when
throttled or relay-auth is away.

userdb key `shared/userdb/<user>`: the mailbox's maildir and quota from the directory
(watched, so a change counts at the next login): home, mail=maildir:<path>, quota_rule.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from mailyard.api.relayauth.v1 import relayauth_pb2 as ra
from mailyard.core.directory import DirectoryView, canonical
from mailyard.mail_access import dictproto, metrics

if TYPE_CHECKING:
    from mailyard.api.relayauth.v1.relayauth_pb2_grpc import RelayAuthAsyncStub

log = logging.getLogger(__name__)

PASSDB = "shared/passdb/"
USERDB = "shared/userdb/"
LOGIN_PROTOCOLS = ("imap", "pop3")
_RESULT = {ra.AUTH_RESULT_OK: "ok", ra.AUTH_RESULT_BAD_CREDENTIALS: "bad_credentials",
           ra.AUTH_RESULT_THROTTLED: "throttled",
           ra.AUTH_RESULT_MECHANISM_UNAVAILABLE: "bad_credentials"}


def maildir_of(root: Path, address: str, relative: str) -> Path | None:
    """The mailbox's maildir as local-delivery writes it, or None when the directory's
    path would leave the mail root or cannot be a Dovecot mail location (":" separates
    location options)."""
    local, _, domain = address.rpartition("@")
    relative = relative or f"{domain}/{local}/Maildir"
    root = root.resolve()
    path = (root / relative).resolve()
    if root not in path.parents or ":" in str(path):
        return None
    return path


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _temporary_failure(reason: str) -> bytes:
    """Dovecot's "Temporary authentication failure", without the password in its log.

    The dict's "failed" answer means the same, but Dovecot logs the whole key of a failed
    lookup at Error level, and a passdb key holds the password (seen: every attempt of a
    throttled client, and every user's right password while relay-auth was away). A found
    answer Dovecot cannot take as fields (a nested object) is an internal passdb failure as
    well; Dovecot logs it as "Nested objects not supported", without the key. Why is in the
    bridge's log (and in the answer, for auth_debug)."""
    return dictproto.found(json.dumps({"temporary_failure": {"reason": reason}}))


class Bridge:
    def __init__(self, directory: DirectoryView, stub: RelayAuthAsyncStub, mail_dir: Path,
                 timeout: float, token: str | None = None) -> None:
        self.directory = directory
        self.stub = stub
        self.root = Path(mail_dir).resolve()
        self.timeout = timeout
        self.metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._logins = {(p, r): metrics.LOGINS.labels(p, r)
                        for p in metrics.PROTOCOLS for r in metrics.RESULTS}

    async def answer(self, key: str) -> bytes:
        if key.startswith(PASSDB):
            return await self.passdb(key[len(PASSDB):])
        if key.startswith(USERDB):
            return self.userdb(key[len(USERDB):])
        log.warning("unknown dict key refused")  # never log the key: it may hold a password
        return dictproto.NOT_FOUND

    async def passdb(self, rest: str) -> bytes:
        parts = rest.split("/", 3)
        if len(parts) != 4:
            return dictproto.NOT_FOUND
        service, ip, login, password = parts
        protocol = service.lower() if service.lower() in LOGIN_PROTOCOLS else "other"
        if protocol == "other":
            # Only IMAP and POP3 logins are ours to check (and to grant leases for).
            self._logins[protocol, "bad_credentials"].inc()
            return dictproto.NOT_FOUND
        if not _utf8(login):
            # Not UTF-8 (dictproto keeps such bytes as surrogates): no mailbox has that name,
            # so a failed login as with Dovecot's own passdbs. Answering "failed" (or closing
            # the socket) made it a temporary failure, and Dovecot logged the key, password
            # included.
            self._logins[protocol, "bad_credentials"].inc()
            return dictproto.NOT_FOUND
        request = ra.AuthenticateRequest(mechanism="PLAIN", username=login, client_ip=ip,
                                         protocol=protocol)
        if _utf8(password):
            request.password = password
        else:
            # An ISO-8859-1 password from an old client: its octets, as Dovecot's own crypt
            # passdbs would check them (only a crypt(3) hash of those octets matches).
            request.password_octets = password.encode("utf-8", "surrogateescape")
        started = time.perf_counter()
        try:
            reply = await self.stub.Authenticate(request, timeout=self.timeout,
                                                 metadata=self.metadata)
        except grpc.aio.AioRpcError as exc:
            self._logins[protocol, "unavailable"].inc()
            log.warning("relay-auth did not check a %s login: %s %s", protocol,
                        exc.code().name, exc.details())
            return _temporary_failure("authentication service unavailable")
        finally:
            metrics.LOGIN_SECONDS.observe(time.perf_counter() - started)
        result = _RESULT.get(reply.result, "bad_credentials")
        self._logins[protocol, result].inc()
        if result == "ok":
            log.info("login", extra={"protocol": protocol, "user": reply.user, "ip": ip})
            return dictproto.found(json.dumps({"nopassword": "y", "user": reply.user}))
        if result == "throttled":
            return _temporary_failure("too many failed logins, try again later")
        return dictproto.NOT_FOUND

    def userdb(self, user: str) -> bytes:
        try:
            address = canonical(user)
            mailbox = self.directory.login_mailbox(address) if address else None
        except Exception:  # no directory key can be made of it (not UTF-8, ...)
            address, mailbox = "", None
        path = maildir_of(self.root, mailbox.address, mailbox.maildir) if mailbox else None
        if mailbox is None or path is None:
            if mailbox is not None:
                log.error("mailbox path unusable for Dovecot", extra={"user": address})
            metrics.USERDB_LOOKUPS.labels("not_found").inc()
            return dictproto.NOT_FOUND
        fields = {"home": str(path.parent if path.name == "Maildir" else path),
                  "mail": f"maildir:{path}"}
        limits = []
        if mailbox.quota_bytes:
            limits.append(f"bytes={mailbox.quota_bytes}")
        if mailbox.quota_messages:
            limits.append(f"messages={mailbox.quota_messages}")
        if limits:
            fields["quota_rule"] = "*:" + ":".join(limits)
        metrics.USERDB_LOOKUPS.labels("found").inc()
        return dictproto.found(json.dumps(fields))
