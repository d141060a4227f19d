"""Typed settings of smtp-ingress (env prefix MAILYARD_INGRESS_)."""

from __future__ import annotations

import functools
import ipaddress
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from mailyard.core.settings import ServiceSettings, service_config
from mailyard.core.spool import RESERVE
from mailyard.smtp_ingress.policy import known

LISTENERS = ("smtp", "submission", "smtps")

# Policy checks per phase, in the order they run (names of modules in policy/). Not in the
# defaults: mail_sender_login (AUTH users send only as their own addresses), as Postfix and
# qmail leave it off; existing users sending as their other domains would be refused.
DEFAULT_MAIL_CHECKS = "mail_auth_required,mail_badmailfrom,mail_size,mail_nullmx,mail_spf"
DEFAULT_RCPT_CHECKS = "rcpt_limit,rcpt_dnsbl,rcpt_rcpthosts,rcpt_unknown_user,rcpt_greylist"
DEFAULT_DATA_CHECKS = ("data_size,data_header_size,data_hops,data_list_posting,data_dmarc,"
                       "data_rspamd,data_dkim")


@functools.cache
def _names(value: str) -> tuple[str, ...]:
    """Comma-separated names; cached, as the checks are listed for every command."""
    return tuple(v.strip() for v in value.split(",") if v.strip())


class Settings(ServiceSettings):
    model_config = service_config("INGRESS")

    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=2525, ge=0, le=65535)        # MX / relay; 0 = off
    submission_port: int = Field(default=2587, ge=0, le=65535)  # STARTTLS, then AUTH
    smtps_port: int = Field(default=2465, ge=0, le=65535)       # implicit TLS

    tls_cert: str = ""              # empty: self-signed pair generated into tls_dir
    tls_key: str = ""
    tls_dir: Path = Path("var/tls")

    relay_auth_addr: str = "127.0.0.1:50055"
    relay_auth_timeout: float = Field(default=0.5, gt=0)
    relay_auth_in_flight: int = Field(default=64, ge=1)  # calls at once; the rest wait
    # AUTH's own deadline: password checks are slow on purpose and queue in relay-auth's
    # pool (50 logins at once take seconds on 2 cores); the client waits, as for any reply.
    relay_auth_auth_timeout: float = Field(default=30.0, gt=0)

    max_connections: int = Field(default=20000, ge=1)   # tcpserver -c
    max_per_ip: int = Field(default=50, ge=1)
    listen_backlog: int = Field(default=1024, ge=1)
    # SO_REUSEPORT: several ingress processes on one host share the SMTP ports and the
    # kernel spreads connections over them (one process per core, like Postfix's smtpd
    # processes). Off by default so a second instance started by mistake fails loudly.
    reuse_port: bool = False
    # Seconds the MX listener waits before its 220 (0 = off); a client talking in that
    # time gets 554 5.5.0 (reason pregreet). Off by default: every connection waits it.
    greet_pause: float = Field(default=0.0, ge=0, le=30)
    # PROXY protocol v1/v2 (proxy_protocol.py) on these listeners (smtp, submission): a TCP
    # load balancer in front sends the client's address first. Only connections from
    # PROXY_FROM (addresses or networks, comma-separated) are read for it, and must send it.
    proxy_protocol: str = ""
    proxy_from: str = ""
    proxy_timeout: float = Field(default=5.0, gt=0)
    idle_timeout: float = Field(default=1200.0, gt=0)  # qmail's control/timeoutsmtpd
    # DATA must average at least this many bytes/s once the grace period is over, so a
    # slow-loris client loses its slot while a slow honest upload keeps going.
    min_data_rate: float = Field(default=512.0, ge=0)
    data_rate_grace: float = Field(default=30.0, ge=0)
    max_recipients: int = Field(default=100, ge=100)
    # Postfix's error limits. A client's errors (refused commands and recipients) count
    # until it gets a message accepted; from SOFT_ERROR_LIMIT on each reply waits
    # ERROR_SLEEP_TIME, at HARD_ERROR_LIMIT it gets 421 and is cut, relay clients and AUTH
    # users alike. NOOP, RSET, VRFY, HELP, HELO and EHLO past JUNK_COMMAND_LIMIT count as
    # errors, so a flood of them cannot hold a slot until IDLE_TIMEOUT. A 452 for a
    # recipient past MAX_RECIPIENTS is no error (the client sends it again later) unless a
    # transaction has more than RCPT_OVERSHOOT_LIMIT of them.
    soft_error_limit: int = Field(default=10, ge=0)
    hard_error_limit: int = Field(default=20, ge=1)
    error_sleep_time: float = Field(default=1.0, ge=0, le=10)
    junk_command_limit: int = Field(default=100, ge=0)
    rcpt_overshoot_limit: int = Field(default=1000, ge=0)
    max_auth_failures: int = Field(default=3, ge=1)
    max_line: int = Field(default=2048, ge=512)        # command lines (with ESMTP params)
    max_auth_line: int = Field(default=12288, ge=512)  # RFC 4954 section 4
    cleartext_auth: str = ""        # listeners allowing AUTH without TLS, e.g. "smtp"
    # CRAM-MD5 works only for mailboxes given a CRAM secret (plaintext-equivalent, opt-in per
    # mailbox), so it is not offered unless the operator says so: a client picking it for
    # any other mailbox would be refused its correct password.
    auth_cram_md5: bool = False

    dns_servers: str = ""           # "ip[:port],..." for DNSBL/PTR; empty: system resolver
    dnsbl_timeout: float = Field(default=2.0, gt=0)
    dnsbl_permanent: bool = False   # rblsmtpd -b: 553 instead of 451
    reverse_dns: bool = True

    mail_checks: str = DEFAULT_MAIL_CHECKS
    rcpt_checks: str = DEFAULT_RCPT_CHECKS
    data_checks: str = DEFAULT_DATA_CHECKS
    publish_timeout: float = Field(default=5.0, gt=0)
    # DKIM keys of our domains (mailyard.core.dkimkeys; `mailyard dkim keygen`); only
    # smtp-ingress and remote-delivery (for bounces and vacation replies) read them.
    # Empty: no signing.
    dkim_dir: str = "var/dkim"
    # MAIL gets 452 4.3.1 (and /readyz says not ready) while the spool's file system has
    # less free than max(SPOOL_MIN_FREE, 1.5 x databytes) + the SIZE= the client declared:
    # Postfix's queue_minfree rule, so a full disk turns clients away before DATA.
    spool_min_free: int = Field(default=0, ge=0)
    # Empty files kept parked on the spool at start (Spool.reserve): a new spool's first
    # burst of mail then allocates no inodes. 0: none.
    spool_reserve: int = Field(default=RESERVE, ge=0)
    # SPF, DKIM verification, DMARC and null MX for mail from outside (not AUTH, relay
    # clients or leases), through DNS_SERVERS. A lookup slower than AUTH_DNS_TIMEOUT counts
    # as temperror, which is recorded and never rejects.
    sender_auth: bool = True
    auth_dns_timeout: float = Field(default=3.0, gt=0)
    # Bytes of one message held in memory during DATA; the rest streams into a spill file
    # on the spool (message_body.py), so RAM does not grow with databytes x connections.
    # Past DATA_MEMORY_TOTAL held by all messages of the process, a message spills once it
    # holds 64 KB: a flood of big uploads holds the total plus 64 KB each.
    data_memory: int = Field(default=1048576, ge=0)
    data_memory_total: int = Field(default=33554432, ge=0)
    # control/rspamd (the scanner's URL) turns scanning on; slower than this: accepted
    rspamd_timeout: float = Field(default=10.0, gt=0)

    @field_validator("cleartext_auth")
    @classmethod
    def _listeners(cls, value: str) -> str:
        bad = [n for n in _names(value) if n not in LISTENERS]
        if bad:
            raise ValueError(f"unknown listener(s) {bad}; use {', '.join(LISTENERS)}")
        return value

    @field_validator("rcpt_checks")
    @classmethod
    def _relay_closed(cls, value: str) -> str:
        # rcpt_rcpthosts is the relay decision: without it every RCPT is accepted
        if "rcpt_rcpthosts" not in _names(value):
            raise ValueError("without rcpt_rcpthosts anyone may relay through us "
                             "(an open relay); keep it in the list")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("TLS_CERT and TLS_KEY must be set together")
        proxied = set(_names(self.proxy_protocol))
        if proxied - {"smtp", "submission"}:
            raise ValueError("PROXY_PROTOCOL: only smtp and submission (the header would "
                             "have to come before smtps's TLS handshake)")
        if proxied and not self.proxy_networks():
            raise ValueError("PROXY_PROTOCOL needs PROXY_FROM (the proxies' addresses): "
                             "a header from anyone else would let clients choose their IP")
        for phase in ("mail", "rcpt", "data"):
            for name in _names(getattr(self, f"{phase}_checks")):
                if name not in known(phase):
                    raise ValueError(f"{phase}_checks: unknown check {name!r}")
        return self

    def proxy_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        try:
            return [ipaddress.ip_network(n, strict=False) for n in _names(self.proxy_from)]
        except ValueError as exc:
            raise ValueError(f"PROXY_FROM: {exc}") from None

    def checks(self, phase: str) -> tuple[str, ...]:
        return _names(getattr(self, f"{phase}_checks"))

    def auth_mechanisms(self) -> tuple[str, ...]:
        return ("PLAIN", "LOGIN", "CRAM-MD5") if self.auth_cram_md5 else ("PLAIN", "LOGIN")

    def cleartext_auth_on(self, listener: str) -> bool:
        return listener in _names(self.cleartext_auth)

    def dns_nameservers(self) -> list[tuple[str, int]]:
        out = []
        for item in _names(self.dns_servers):
            host, _, port = item.rpartition(":") if item.count(":") == 1 else (item, "", "53")
            out.append((host, int(port or 53)))
        return out
