"""relay-auth metrics, declared once (names fixed in docs/architecture.md)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

LEASES_ACTIVE = Gauge(
    "mailyard_relay_leases_active",
    "POP-before-SMTP leases not yet expired (shared bucket; every replica sees all).",
)
CHECKS = Counter(
    "mailyard_relay_checks_total",
    "CheckClient decisions: deny, relay (rule), lease, allow (connect, no relay).",
    ["decision"],
)
AUTH = Counter(
    "mailyard_relay_auth_total",
    "SMTP AUTH attempts by mechanism (PLAIN, LOGIN, CRAM-MD5) and result.",
    ["mechanism", "result"],
)
AUTH_THROTTLED = Counter(
    "mailyard_relay_auth_throttled_total",
    "Logins refused because the client address failed too often, for any user or for this "
    "one.",
)
AUTH_DELAYED = Counter(
    "mailyard_relay_auth_delayed_total",
    "Logins slowed down because their user failed too often from anywhere (never refused).",
)
LEASES_GRANTED = Counter(
    "mailyard_relay_leases_granted_total",
    "POP-before-SMTP leases granted or refreshed, by source: manual (GrantLease, "
    "`mailyard lease grant`), import (open-smtp, `mailyard import qmail`), imap or pop3 "
    "(a successful mailbox login).",
    ["source"],
)
AUTH_PENDING = Gauge(
    "mailyard_relay_auth_pending",
    "Password checks running or queued in the bounded pool.",
)
AUTH_BUSY = Counter(
    "mailyard_relay_auth_busy_total",
    "Password checks refused because the pool's workers and queue were full.",
)
AUTH_REHASH = Counter(
    "mailyard_relay_auth_rehash_total",
    "Hashes replaced by the platform's argon2id after a login (legacy scheme or old "
    "parameters), by result: upgraded, superseded (the password changed meanwhile), failed, "
    "kept (the login's password was longer than the legacy scheme reads: DES 8 characters, "
    "bcrypt 72 bytes).",
    ["result"],
)
HASH_SCHEMES = ("argon2id", "argon2i", "des", "md5-crypt", "sha256-crypt", "sha512-crypt",
                "bcrypt", "invalid")
AUTH_HASH_CHECKS = Counter(
    "mailyard_relay_auth_hash_checks_total",
    "Password hash checks run in the pool, by the scheme of the hash checked (argon2id: "
    "the platform's, also the dummy check of an unknown user or of a wrong password "
    "against a cheaper hash; invalid: a stored hash that cannot be checked).",
    ["scheme"],
)
CACHE_RESULTS = ("hit", "shared", "miss")
AUTH_CACHE = Counter(
    "mailyard_relay_auth_cache_total",
    "Password logins by how they were answered: hit (the same user, stored hash and "
    "password verified within AUTH_CACHE_TTL), shared (waited for the same check already "
    "running), miss (a check of its own). Unknown users count too (their dummy check); "
    "other mechanisms are not counted.",
    ["result"],
)
