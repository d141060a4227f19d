"""relay-auth settings (env prefix MAILYARD_RELAYAUTH_), validated at start."""

from __future__ import annotations

import os

from pydantic import Field, field_validator

from mailyard.core.relaypolicy import DEFAULT_RULES, MAX_LEASE_TTL
from mailyard.core.settings import ServiceSettings, service_config


class Settings(ServiceSettings):
    model_config = service_config("RELAYAUTH")

    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=50055, ge=0, le=65535)
    # Times are bounded where they stop making sense, and so below what a Timestamp or a
    # bucket TTL can hold (a lease past the year 9999 failed every grant).
    lease_ttl: float = Field(default=10800.0, gt=0, le=MAX_LEASE_TTL)  # POP-before-SMTP: 3 h
    lease_purge_interval: float = Field(default=60.0, gt=0, le=86400)  # purge of expired
    # Failed logins (throttle.py): an address stops trying one user after LIMIT_PAIR
    # failures and stops logging in after LIMIT_IP; a user failing LIMIT_USER times from
    # anywhere is slowed (a delay doubling from DELAY_BASE to DELAY_MAX), never locked out.
    # DELAY_MAX stays well under smtp-ingress's AUTH deadline (30 s).
    auth_fail_limit_ip: int = Field(default=10, ge=1)
    auth_fail_limit_pair: int = Field(default=5, ge=1)
    auth_fail_limit_user: int = Field(default=5, ge=1)
    auth_fail_window: float = Field(default=900.0, gt=0, le=7 * 86400)
    auth_delay_base: float = Field(default=0.5, ge=0)
    auth_delay_max: float = Field(default=8.0, ge=0, le=20)
    cram_ttl: float = Field(default=300.0, gt=0, le=3600)     # an unanswered challenge dies
    # KV cram_challenges holds at most this many, the oldest dropped first: AUTH CRAM-MD5
    # in a loop (from many connections and addresses) grew it without bound for CRAM_TTL.
    # About 180 bytes each; a flood must outrun a real client's answer (a second) by this
    # many to push out its challenge.
    cram_max_challenges: int = Field(default=100_000, ge=100, le=10_000_000)
    # Password checks: this many at once (one per core: each argon2id check takes a core
    # and 19 MiB), up to AUTH_QUEUE more waiting; beyond that a temporary failure.
    auth_workers: int = Field(default_factory=lambda: min(4, os.cpu_count() or 1), ge=1,
                              le=64)
    auth_queue: int = Field(default=256, ge=0)
    # A correct login is remembered this long (a keyed digest of user, stored hash and
    # password; login_cache.py), so a client's next connections skip argon2id; 0: off.
    # Short on purpose: the digest is worth something to whoever dumps the process.
    auth_cache_ttl: float = Field(default=300.0, ge=0, le=3600)
    auth_cache_size: int = Field(default=10000, ge=0)
    # The directory, to replace a legacy hash after a login (rehash on login).
    directory_addr: str = "127.0.0.1:50056"
    directory_timeout: float = Field(default=10.0, gt=0)
    default_rules: str = DEFAULT_RULES
    # vpopmail's ATCHARS ("@%/"): a login without "@" whose part after the last of these is
    # a hosted domain is <local>@<domain> ("joe%example.com", for clients and ISP guides that
    # could not put "@" in a login field); "" turns it off. "@" itself always separates.
    login_separators: str = "%/"

    @field_validator("login_separators")
    @classmethod
    def _separators(cls, value: str) -> str:
        # a letter, digit, "." or "-" would split ordinary names ("jo.example.com")
        bad = [c for c in value if not c.isascii() or c.isalnum() or c in "@.-_"
               or not c.isprintable() or c.isspace()]
        if bad:
            raise ValueError(f"login separators must be punctuation other than @ . - _, "
                             f"not {''.join(bad)!r}")
        return value

    @field_validator("default_rules")
    @classmethod
    def _no_open_relay(cls, value: str) -> str:
        # Refuse an insecure default: RELAYCLIENT for every address is an open relay.
        from mailyard.core.openrelay import open_relay
        from mailyard.core.tcprules import RuleError, parse

        try:
            rules = parse(value)
        except RuleError as exc:
            raise ValueError(str(exc)) from None
        if open_relay(rules):
            raise ValueError("RELAYCLIENT for every address (a catch-all, 0.0.0.0/0 or ::/0) "
                             "makes an open relay")
        return value
