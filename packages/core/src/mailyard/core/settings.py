"""Typed settings: one class per service, each with its own env prefix (MAILYARD_<SERVICE>_).

Every service subclasses ServiceSettings, sets `model_config = service_config("INGRESS")`,
and calls `load()` at start: invalid or unsafe values stop the process with one clear line
instead of a traceback deep inside a handler.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mailyard.core.errors import SettingsError


def service_config(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=f"MAILYARD_{prefix}_", extra="ignore",
                              validate_default=True)


# The admin plane's bounds by default (mailyard.core.limits explains each).
ADMIN_MAX_BODY = 4 << 20
HTTP_MAX_CONNECTIONS = 100
HTTP_REQUEST_TIMEOUT = 30.0
GRPC_MAX_RPCS = 10_000
GRPC_MAX_IDLE = 300.0


class ServiceSettings(BaseSettings):
    """Fields every service has. Defaults suit `mailyard up` on one machine."""

    model_config = service_config("COMMON")

    nats_url: str = "nats://127.0.0.1:4222"
    spool_dir: Path = Path("var/spool")
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=0, ge=0, le=65535)  # /healthz /readyz /metrics; 0 = off
    log_level: str = "INFO"
    instance: str = Field(default_factory=socket.gethostname)
    # qmail's control/me: the name in greetings, Received: lines and bounces.
    me: str = Field(default_factory=socket.getfqdn)
    # The admin plane's token table ("ROLE TOKEN" lines, mailyard.core.auth), from a Secret.
    # Unset: gRPC and /api/ serve only on loopback, open to local users.
    tokens_file: Path | None = None
    # This service's own token for the calls it makes (ingress -> relay-auth, relay-auth ->
    # directory): a file holding the token, or a table whose line for its role is used.
    token_file: Path | None = None
    # Copies JetStream keeps of every stream and KV bucket this service creates or opens:
    # 1 for one nats-server (`mailyard up`), 3 on a 3-node cluster (the manifests).
    nats_replicas: int = Field(default=1, ge=1, le=5)
    # The event loop: uvloop (libuv, in C) by default; "asyncio" is the standard library's,
    # for a platform uvloop does not build on. Same behaviour, less CPU per message
    # (docs/architecture.md, "Where the time goes").
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    # What one client may ask of the admin plane: the defaults are mailyard.core.limits's
    # (defined here, where the CLI can read them without importing FastAPI and uvicorn). A
    # big installation's dashboards or a CI system may need more; the bounds keep each
    # value where it still means what it says.
    # A request body (HTTP) or message (gRPC): at least a KV message (1 MiB, a control file
    # or a tcp.smtp), at most nats-server's largest max_payload (64 MiB).
    admin_max_body: int = Field(default=ADMIN_MAX_BODY, ge=1 << 20, le=64 << 20)
    # HTTP connections at once: the probes and Prometheus need a few; past 10,000 a
    # process runs out of descriptors first (and each costs memory).
    http_max_connections: int = Field(default=HTTP_MAX_CONNECTIONS, ge=10, le=10_000)
    # Seconds to send a whole request, and to take a part of an answer.
    http_request_timeout: float = Field(default=HTTP_REQUEST_TIMEOUT, ge=1, le=600)
    # gRPC calls at once: an ingress alone holds up to 320 (64 relay checks, 256 AUTH).
    grpc_max_rpcs: int = Field(default=GRPC_MAX_RPCS, ge=1000, le=1_000_000)
    # Seconds a gRPC connection with no call stays open.
    grpc_max_idle: float = Field(default=GRPC_MAX_IDLE, ge=10, le=86_400)

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return value

    @field_validator("nats_url")
    @classmethod
    def _nats(cls, value: str) -> str:
        if not value.startswith(("nats://", "tls://", "ws://", "wss://")):
            raise ValueError("must be a nats:// or tls:// URL")
        return value

    @classmethod
    def load(cls, **overrides: Any) -> Self:
        """Build from the environment (and overrides), or raise SettingsError with the reasons."""
        try:
            return cls(**overrides)
        except ValidationError as exc:
            prefix = cls.model_config.get("env_prefix", "")
            reasons = "; ".join(
                f"{prefix}{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
                for e in exc.errors())
            raise SettingsError(f"{cls.__name__}: {reasons}") from None


S = TypeVar("S", bound=ServiceSettings)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or the name localhost, exactly: a prefix took "localhost.example.net"
    (whatever DNS says) or "::1:5" for loopback, and opened the admin plane there."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
