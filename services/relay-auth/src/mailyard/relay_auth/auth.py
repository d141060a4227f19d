"""SMTP AUTH (vchkpw's job): PLAIN and LOGIN against the directory's password hashes, and
CRAM-MD5 with single-use challenges.

Passwords are Mailbox.password_hash: the platform's argon2id, or a hash imported as it was
(crypt(3) DES/$1$/$5$/$6$/bcrypt, argon2i; mailyard.core.password_hashes). Checks run in
the bounded PasswordPool, so the event loop keeps answering CheckClient and memory stays
bounded however many logins arrive. A login that matched a hash other than the platform's
current argon2id has it replaced through the directory (upgrade.HashUpgrader).

No user enumeration by the work a wrong login costs: an unknown user (or a mailbox without
a password) is checked against a dummy hash with the platform's parameters, through the
same shared checks as a known user (a burst of one guess costs one check either way; it
filled the pool only for names that do not exist), and a wrong password against any other
hash (DES answers in microseconds, an unreadable hash at once) also pays that dummy check,
so it costs at least what an unknown user costs. What remains is the legacy hash's own
cost: a millisecond or two for MD5/SHA-crypt, more only for an expensive bcrypt or argon2
hash brought from elsewhere. A right password is not padded (only its owner sees it).

CRAM-MD5 needs the password itself as the HMAC key, so it only works for mailboxes that opted
in: Mailbox.cram_md5_secret holds the hex of the password's UTF-8 bytes (see the README for
the trade-off). Any other name, a mailbox or not, is answered MECHANISM_UNAVAILABLE. A
challenge lives in the KV bucket "cram_challenges" (short TTL) and is deleted by the first
CramVerify that names it, on any replica: a replayed answer fails.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from mailyard.api.relayauth.v1 import relayauth_pb2 as pb
from mailyard.core import bus, password_hashes
from mailyard.core.control import DEFAULT_DOMAIN_FILE, ControlView
from mailyard.core.directory import DirectoryView, canonical
from mailyard.core.tcprules import IPAddress, parse_ip
from mailyard.relay_auth import metrics
from mailyard.relay_auth.login_cache import LoginCache
from mailyard.relay_auth.pool import PasswordPool
from mailyard.relay_auth.throttle import Throttle
from mailyard.relay_auth.upgrade import HashUpgrader

log = logging.getLogger(__name__)

OK = pb.AUTH_RESULT_OK
BAD = pb.AUTH_RESULT_BAD_CREDENTIALS
THROTTLED = pb.AUTH_RESULT_THROTTLED
UNAVAILABLE = pb.AUTH_RESULT_MECHANISM_UNAVAILABLE
_RESULT_LABEL: dict[int, str] = {OK: "ok", BAD: "bad_credentials", THROTTLED: "throttled",
                 UNAVAILABLE: "mechanism_unavailable"}
PASSWORD_MECHANISMS = ("PLAIN", "LOGIN")
CRAM = "CRAM-MD5"


def _ip_or_none(text: str) -> IPAddress | None:
    try:
        return parse_ip(text) if text else None
    except ValueError:
        return None


def _canonical(username: str) -> str:
    try:
        return canonical(username) if username.strip() else ""
    except Exception:
        return ""


def _counted_verify(stored: str, password: str) -> bool:
    """password_hashes.verify, counted by scheme (in the pool's thread)."""
    try:
        kind = password_hashes.scheme(stored)
    except password_hashes.HashError:
        kind = "invalid"
    metrics.AUTH_HASH_CHECKS.labels(kind).inc()
    return password_hashes.verify(stored, password)


class Authenticator:
    def __init__(self, directory: DirectoryView, throttle: Throttle, cram_ttl: float,
                 pool: PasswordPool, upgrader: HashUpgrader | None,
                 cache: LoginCache | None = None, separators: str = "%/",
                 control: ControlView | None = None, cram_max: int | None = None) -> None:
        self.directory = directory
        self.cram_max = cram_max
        self.separators = separators
        self.control = control
        self.throttle = throttle
        self.cram_ttl = cram_ttl
        self.pool = pool
        self.upgrader = upgrader
        self.cache = cache if cache is not None else LoginCache(0, 0)
        self._dummy_hash = password_hashes.hash_password(secrets.token_hex(16))
        self.cram_kv: KeyValue | None = None

    async def start(self, js: JetStreamContext) -> None:
        self.cram_kv = await bus.ensure_kv(js, bus.KV_CRAM, ttl=self.cram_ttl,
                                           max_keys=self.cram_max)

    def login(self, username: str) -> str:
        """The canonical user a login names: the directory's form of `username`, or, for a
        name without "@", vpopmail's other forms of it ("joe%example.com").

        Only the part after the last separator can be the domain, and only a hosted one:
        the directory takes "%" in local parts, and no domain name holds one, so "a%b" stays
        the name it is unless "b" is a domain here ("a%b%example.com" is a%b@example.com;
        "a%b@example.com", with "@", is never rewritten, so every mailbox keeps one login
        that means only it). Any other name without "@" is in control/defaultdomain, when
        set (vpopmail's DEFAULT_DOMAIN: on a one-domain host users log in as "joe"). The
        work is done only for names without "@"."""
        user = _canonical(username)
        if not user or "@" in user:
            return user
        for separator in self.separators:
            local, found, domain = user.rpartition(separator)
            if found and local and domain and self._hosted(domain):
                return _canonical(f"{local}@{domain}")
        default = self.control.lines(DEFAULT_DOMAIN_FILE) if self.control is not None else []
        return _canonical(f"{user}@{default[0]}") if default else user

    def _hosted(self, domain: str) -> bool:
        try:
            return self.directory.is_local_domain(domain)
        except Exception:  # no domain name ("a%.", "x%\u0000"): not one of ours
            return False

    def _done(self, mechanism: str, result: int, user: str = "") -> tuple[int, str]:
        metrics.AUTH.labels(mechanism, _RESULT_LABEL[result]).inc()
        if result == THROTTLED:
            metrics.AUTH_THROTTLED.inc()
        return result, user if result == OK else ""

    async def _fail(self, mechanism: str, ip: IPAddress | None, user: str) -> tuple[int, str]:
        try:
            await self.throttle.record_failure(ip, user)
        except Exception as exc:  # counting is best effort; the answer is still "no"
            log.warning("auth failure not recorded: %s", exc)
        return self._done(mechanism, BAD)

    # -- PLAIN / LOGIN ---------------------------------------------------------------------

    async def password(self, mechanism: str, username: str, password: str,
                       client_ip: str) -> tuple[int, str]:
        """(AuthResult, canonical user) for PLAIN or LOGIN; pool.Busy when the password
        pool is full (the caller answers with a temporary failure)."""
        mechanism = mechanism.upper()
        if mechanism not in PASSWORD_MECHANISMS:
            return self._done("other", UNAVAILABLE)
        ip, user = _ip_or_none(client_ip), self.login(username)
        if self.throttle.throttled(ip, user):
            return self._done(mechanism, THROTTLED)
        await self.throttle.slow_down(ip, user)
        mailbox = self.directory.login_mailbox(user) if user else None
        phc = mailbox.password_hash if mailbox is not None and mailbox.password_hash else ""
        if not phc:  # no such mailbox: a random password's hash, which nothing matches
            phc = self._dummy_hash
        else:
            # joe@alias.test logs in as joe@real.test: the mailbox's own address from here on
            # (the lease, Dovecot's user, the hash upgrade, the failure count), so guessing
            # through each alias domain in turn meets the mailbox's one limit
            if mailbox is not None and (real := _canonical(mailbox.address)) not in ("", user):
                user = real
                if self.throttle.throttled(ip, user):
                    return self._done(mechanism, THROTTLED)
            try:
                password_hashes.scheme(phc)
            except password_hashes.HashError as exc:
                # verify() fails closed; without this the postmaster saw wrong passwords only
                log.warning("password hash of %s cannot be checked, login refused: %s",
                            user, exc)
        ok, remembered = await self.cache.verify(
            user, phc, password, lambda: self.pool.run(self._check, phc, password))
        if not ok:
            return await self._fail(mechanism, ip, user)
        if not remembered and self.upgrader is not None and password_hashes.needs_upgrade(phc):
            self.upgrader.schedule(user, phc, password)
        return self._done(mechanism, OK, user)

    def _check(self, stored: str, password: str) -> bool:
        """In the pool: does `password` match `stored`? A miss against a hash that is not
        the platform's also runs the dummy check (see the module's docstring)."""
        if _counted_verify(stored, password):
            return True
        if not password_hashes.is_platform(stored):
            _counted_verify(self._dummy_hash, password)
        return False

    # -- CRAM-MD5 --------------------------------------------------------------------------

    async def cram_challenge(self, client_ip: str, hostname: str) -> tuple[str, str]:
        """A fresh challenge "<random.timestamp@hostname>" and the id to answer it with."""
        assert self.cram_kv is not None
        challenge_id = secrets.token_hex(16)
        challenge = f"<{secrets.randbelow(10**12)}.{int(time.time())}@{hostname or 'localhost'}>"
        record = {"challenge": challenge, "ip": client_ip, "at": time.time()}
        await self.cram_kv.put(challenge_id, json.dumps(record).encode())
        return challenge_id, challenge

    async def _take_challenge(self, challenge_id: str) -> dict[str, object] | None:
        """Fetch and delete (with its revision: exactly one caller wins)."""
        assert self.cram_kv is not None
        if not challenge_id or not all(c in "0123456789abcdef" for c in challenge_id):
            return None
        try:
            entry = await self.cram_kv.get(challenge_id)
        except KeyNotFoundError:
            return None
        try:
            await self.cram_kv.delete(challenge_id, last=entry.revision)
        except Exception:  # consumed concurrently by another attempt
            return None
        try:
            record: dict[str, object] = json.loads(entry.value or b"")
        except ValueError:
            return None
        if time.time() - float(str(record.get("at", 0))) > self.cram_ttl:
            return None
        return record

    async def cram_verify(self, challenge_id: str, username: str, digest: str,
                          client_ip: str) -> tuple[int, str]:
        ip, user = _ip_or_none(client_ip), self.login(username)
        if self.throttle.throttled(ip, user):
            return self._done(CRAM, THROTTLED)
        await self.throttle.slow_down(ip, user)
        record = await self._take_challenge(challenge_id)
        if record is None:
            return await self._fail(CRAM, ip, user)
        mailbox = self.directory.login_mailbox(user) if user else None
        if mailbox is None or not mailbox.cram_md5_secret:
            # A name that is no mailbox gets what a mailbox without CRAM-MD5 gets (534, no
            # failure counted): answering it 535 told whether any name exists, at no cost.
            return self._done(CRAM, UNAVAILABLE)
        try:
            key = bytes.fromhex(mailbox.cram_md5_secret)
        except ValueError:
            log.warning("mailbox has an unreadable cram_md5_secret")
            return await self._fail(CRAM, ip, user)
        expected = hmac.new(key, str(record["challenge"]).encode(), hashlib.md5).hexdigest()
        # as bytes: compare_digest refuses str with non-ASCII, and the digest is the client's
        answer = digest.strip().lower().encode()
        if hmac.compare_digest(expected.encode(), answer):
            return self._done(CRAM, OK, _canonical(mailbox.address) or user)
        return await self._fail(CRAM, ip, user)
