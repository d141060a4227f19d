"""mail-access metrics, declared once."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

PROTOCOLS = ("imap", "pop3", "other")
RESULTS = ("ok", "bad_credentials", "throttled", "unavailable")

LOGINS = Counter(
    "mailyard_mailbox_logins_total",
    "IMAP and POP3 logins checked by the bridge, by protocol (imap, pop3, other) and result "
    "(ok, bad_credentials, throttled, unavailable: relay-auth did not answer).",
    ["protocol", "result"],
)
LOGIN_SECONDS = Histogram(
    "mailyard_mailbox_login_seconds",
    "One login's round trip to relay-auth (password check and, on success, the lease grant).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
USERDB_LOOKUPS = Counter(
    "mailyard_mailbox_userdb_lookups_total",
    "Dovecot userdb lookups answered from the directory, by result (found, not_found).",
    ["result"],
)
