"""Settings of remote-delivery (env prefix MAILYARD_REMOTE_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from mailyard.core.settings import ServiceSettings, service_config
from mailyard.core.smtproutes import TLS_POLICIES


class Settings(ServiceSettings):
    model_config = service_config("REMOTE")

    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=50053, ge=0, le=65535)
    # "" = the system resolver (/etc/resolv.conf); "ip" or "ip:port" = that server only
    # (tests point this at a loopback DNS server).
    dns_server: str = ""
    dns_timeout: float = Field(default=10.0, gt=0)
    smtp_port: int = Field(default=25, ge=1, le=65535)  # remote port for MX hosts
    helo: str = ""                                       # "" = me
    tls_policy: str = "may"                              # default; smtproutes may override
    tls_ca_file: Path | None = None                      # extra CA for "verify" (None = system)
    # Transactions at once per MX address:port, cluster-wide: each replica takes
    # max(1, ceil(limit / replicas)), replicas counted in KV bucket remote_members.
    # 20 as Postfix's default_destination_concurrency_limit: with 10, one busy destination
    # got half of concurrencyremote and its jobs queued behind each other (issue 20).
    per_destination_limit: int = Field(default=20, ge=1)
    # A replica that stops heartbeating (every member_ttl / 3) stops counting after this.
    member_ttl: float = Field(default=30.0, ge=1)
    connect_timeout: float = Field(default=30.0, gt=0)
    command_timeout: float = Field(default=300.0, gt=0)  # RFC 5321 4.5.3.2 suggests minutes
    # Octets per second a server must take the message at, once COMMAND_TIMEOUT has passed
    # (Postfix's smtp_min_data_rate and default): progress restarts COMMAND_TIMEOUT, so a
    # tar-pit taking a little in each window would hold the job for ever. 0: no minimum.
    min_data_rate: float = Field(default=500.0, ge=0)
    idle_timeout: float = Field(default=5.0, ge=0)       # keep a used connection this long
    max_messages_per_connection: int = Field(default=100, ge=1)
    # Loop detection: our names (me is always one) and addresses an MX must not point to.
    local_names: list[str] = Field(default_factory=list)
    local_addresses: list[str] = Field(default_factory=list)
    # JetStream consumer
    # A job with no ack or progress ack for this long goes to another replica: a killed
    # replica's jobs wait this long (progress acks every ack_wait / 3 keep a live one's).
    ack_wait: float = Field(default=10.0, gt=1)
    max_deliver: int = Field(default=5, ge=1)
    concurrency_default: int = Field(default=20, ge=1)  # concurrencyremote when the file is empty
    # Jobs one replica runs at once: 0 = up to concurrencyremote (the cluster-wide limit).
    # Set it to size replicas (CPU, sockets); the cluster never exceeds concurrencyremote.
    max_in_flight: int = Field(default=0, ge=0)
    # Spool files up to this size are read on the event loop (from the page cache that is
    # cheaper than a thread hand-off). 0 on a network volume that can hang: a stuck read
    # would then stall this replica's loop instead of one spool thread.
    inline_read_max: int = Field(default=65536, ge=0)
    # smtp-ingress's DKIM key folder (mailyard.core.dkimkeys), read-only here: the mail the
    # platform writes itself (bounces, vacation replies) is signed on its way out
    # (signing.py). Empty: no signing.
    dkim_dir: str = "var/dkim"

    @field_validator("tls_policy")
    @classmethod
    def _policy(cls, value: str) -> str:
        value = value.lower()
        if value not in TLS_POLICIES:
            raise ValueError(f"must be one of {', '.join(TLS_POLICIES)}")
        return value

    @field_validator("dns_server")
    @classmethod
    def _dns(cls, value: str) -> str:
        if value:
            parse_server(value)
        return value

    def our_names(self, me: str) -> set[str]:
        """`me` (control/me, through Identity) and LOCAL_NAMES: the names that are us."""
        return {n.lower().rstrip(".") for n in [me, *self.local_names] if n}


def parse_server(value: str) -> tuple[str, int]:
    """"ip", "ip:port", "[v6]:port" -> (ip, port)."""
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else 53
    elif value.count(":") == 1:
        host, _, p = value.partition(":")
        port = int(p)
    else:
        host, port = value, 53
    if not host or not 0 < port < 65536:
        raise ValueError(f"not an address[:port]: {value!r}")
    return host, port
