"""Where the CLI finds each service: one table shared by `mailyard up` and every command.

Each address can be overridden with MAILYARD_<NAME>_ADDR (for example in Kubernetes, through
a port-forward or from an admin pod).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc

from mailyard.core import auth


@dataclass(frozen=True)
class Ports:
    """The loopback ports `mailyard up` uses by default."""

    nats: int = 4222
    nats_monitor: int = 8222
    smtp: int = 2525
    submission: int = 2587
    smtps: int = 2465
    ingress_http: int = 9101
    queue_http: int = 9102
    queue_grpc: int = 50052
    remote_http: int = 9103
    remote_grpc: int = 50053
    local_http: int = 9104
    relayauth_http: int = 9105
    relayauth_grpc: int = 50055
    directory_http: int = 9106
    directory_grpc: int = 50056
    mailaccess_http: int = 9107       # Dovecot's login bridge
    imap: int = 2143                  # Dovecot: IMAP with STARTTLS (143 in production)
    imaps: int = 2993                 # IMAP over TLS (993)
    pop3: int = 2110                  # POP3 with STLS (110)
    pop3s: int = 2995                 # POP3 over TLS (995)
    dovecot_stats: int = 9108         # Dovecot's own OpenMetrics


PORTS = Ports()
GRPC_DEFAULTS = {
    "QUEUE": f"127.0.0.1:{PORTS.queue_grpc}",
    "REMOTE": f"127.0.0.1:{PORTS.remote_grpc}",
    "RELAYAUTH": f"127.0.0.1:{PORTS.relayauth_grpc}",
    "DIRECTORY": f"127.0.0.1:{PORTS.directory_grpc}",
}


def address(name: str) -> str:
    """name: QUEUE, REMOTE, RELAYAUTH or DIRECTORY."""
    return os.environ.get(f"MAILYARD_{name}_ADDR", GRPC_DEFAULTS[name])


# Where `mailyard up` (default --data var) leaves its token table; see token().
UP_TOKENS = Path("var") / "auth" / "tokens"


def token() -> str | None:
    """The CLI's credential: MAILYARD_TOKEN_FILE (one token, or a table whose MAILYARD_ROLE
    line, admin by default, is used), else the table `mailyard up` wrote under ./var, else
    none (a platform without tokens on loopback)."""
    role = os.environ.get("MAILYARD_ROLE", "admin")
    given = os.environ.get("MAILYARD_TOKEN_FILE")
    if given:
        return auth.read_token(Path(given), role)
    return auth.read_token(UP_TOKENS, role) if UP_TOKENS.is_file() else None


# The directory's and relay-auth's listings come in pages (cli.pages), but some answers are
# still whole and may pass the 4 MiB a gRPC client takes by default (RESOURCE_EXHAUSTED): a
# history search, a mailing list of many members (GetList). The CLI talks to its own
# services, so it takes what they send.
_OPTIONS = [("grpc.max_receive_message_length", -1)]


def channel(name: str) -> grpc.Channel:
    return auth.channel(address(name), token(), _OPTIONS)
