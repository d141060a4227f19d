"""Every smtp-ingress metric, declared once (names from docs/architecture.md)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONNECTIONS = Counter("mailyard_smtp_connections", "SMTP connections accepted by listener.",
                      ["listener"])
SESSIONS_ACTIVE = Gauge("mailyard_smtp_sessions_active", "SMTP sessions open now.",
                        ["listener"])
MESSAGES_ACCEPTED = Counter("mailyard_smtp_messages_accepted",
                            "Messages answered 250 (committed and announced).", ["listener"])
ACCEPTED_BYTES = Counter("mailyard_smtp_accepted_bytes",
                         "Bytes of accepted messages, as spooled (with our Received: line).")
REJECTIONS = Counter("mailyard_smtp_rejections", "Refused commands and connections by reason.",
                     ["reason"])
_RELAY_DECISIONS = Counter(
    "mailyard_smtp_relay_decisions",
    "Connections' relay decisions by source: local (the ingress's own view of rules and "
    "leases), relay_auth (asked over gRPC: view not ready), failed (no answer: fail closed).",
    ["source"])
RELAY_DECISIONS = {s: _RELAY_DECISIONS.labels(s) for s in ("local", "relay_auth", "failed")}
AUTH_ATTEMPTS = Counter("mailyard_smtp_auth_attempts", "SMTP AUTH attempts.",
                        ["mechanism", "result"])
DNSBL_HITS = Counter("mailyard_smtp_dnsbl_hits", "Clients found on a DNSBL, by zone.", ["zone"])
DNSBL_TIMEOUTS = Counter("mailyard_smtp_dnsbl_timeouts",
                         "DNSBL lookups that timed out (the client was let through).")
DKIM_SIGNED = Counter(
    "mailyard_smtp_dkim_sign", "Mail of our own users at DKIM signing: signed, no_key (From: "
    "domain without a signing key), not_entitled (not signed: the From: domain is not the "
    "sender's, e.g. another customer's), long_line (refused: a line over 998 octets).",
    ["result"])
AUTH_VERDICTS = Counter(
    "mailyard_smtp_sender_auth", "Checks of mail from outside by mechanism (spf, spf_helo, "
    "dkim, dmarc, arc, nullmx) and result (RFC 8601 results; dmarc also 'rejected').",
    ["mechanism", "result"])
GREYLIST = Counter(
    "mailyard_smtp_greylist", "Greylisting decisions per RCPT: new and early (451), passed "
    "(first retry after the delay), known, exempt, error (KV unreachable: let through).",
    ["outcome"])
SCANNER = Counter(
    "mailyard_smtp_scanner", "Content scanner (rspamd) verdicts by action; timeout and error "
    "mean the message was accepted unscanned.", ["action"])
TLS_FAILURES = Counter(
    "mailyard_smtp_tls_failures", "STARTTLS handshakes that failed, by why: no_shared_cipher, "
    "protocol_version, not_tls (the client did not speak TLS), closed, timeout, other; by "
    "listener (smtp, submission: 465's handshakes happen in the event loop's TLS layer, "
    "which reports no failure).", ["listener", "reason"])
COMMIT_SECONDS = Histogram(
    "mailyard_smtp_commit_seconds", "End of DATA to the 250 reply (spool fsync + JetStream ack).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5))

# Every label value known in advance exists from the start at 0, so rate() and alerts see
# a series before the first event (an absent series hides a problem instead of showing 0).
LISTENERS = ("smtp", "submission", "smtps")
REJECTION_REASONS = (
    "auth", "auth_failed", "auth_required", "auth_throttled", "auth_unavailable",
    "badmailfrom", "bare_lf", "client_denied", "databytes", "dnsbl", "header_size", "hops",
    "dmarc", "greylisted", "line_too_long", "long_line", "null_mx", "non_ascii", "nul",
    "pregreet", "proxy_protocol", "rcpthosts", "relay_unavailable", "sender_login", "sequence",
    "spam", "spf", "srs_invalid",
    "storage", "syntax",
    "timeout", "tls", "tls_required", "too_many_auth_failures", "too_many_connections",
    "too_many_errors",
    "too_many_recipients",
    "unavailable", "unknown_command", "unknown_user")
AUTH_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")
AUTH_RESULTS = ("ok", "failed", "throttled", "unavailable", "aborted", "mechanism_unavailable")

# children used on every message, looked up once (labels() takes a lock and builds a key)
ACCEPTED_ON = {name: MESSAGES_ACCEPTED.labels(name) for name in LISTENERS}
for _listener in LISTENERS:
    CONNECTIONS.labels(_listener)
    SESSIONS_ACTIVE.labels(_listener)
for _reason in REJECTION_REASONS:
    REJECTIONS.labels(_reason)
TLS_FAILURE_REASONS = ("no_shared_cipher", "protocol_version", "not_tls", "closed", "timeout",
                       "other")
for _listener in ("smtp", "submission"):  # the listeners with STARTTLS
    for _reason in TLS_FAILURE_REASONS:
        TLS_FAILURES.labels(_listener, _reason)
for _result in ("signed", "no_key", "not_entitled", "long_line"):
    DKIM_SIGNED.labels(_result)
SENDER_AUTH_RESULTS = {
    "spf": ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"),
    "spf_helo": ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"),
    "dkim": ("pass", "fail", "none", "temperror", "permerror"),
    "dmarc": ("pass", "fail", "none", "temperror", "permerror", "rejected"),
    "arc": ("pass", "fail", "temperror"),   # counted only for mail that carries ARC
    "nullmx": ("fail", "temperror"),
}
for _mechanism, _results in SENDER_AUTH_RESULTS.items():
    for _result in _results:
        AUTH_VERDICTS.labels(_mechanism, _result)
for _outcome in ("new", "early", "passed", "known", "exempt", "error"):
    GREYLIST.labels(_outcome)
for _action in ("no_action", "add_header", "rewrite_subject", "soft_reject", "reject",
                "greylist", "timeout", "error"):
    SCANNER.labels(_action)
for _mech in AUTH_MECHANISMS:
    for _result in AUTH_RESULTS:
        AUTH_ATTEMPTS.labels(_mech, _result)
