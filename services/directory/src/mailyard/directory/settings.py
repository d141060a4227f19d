"""Settings of the directory service (env prefix MAILYARD_DIRECTORY_)."""

from __future__ import annotations

from pydantic import Field

from mailyard.core.settings import ServiceSettings, service_config


class Settings(ServiceSettings):
    model_config = service_config("DIRECTORY")

    # The admin plane has no authentication of its own: loopback by default, and only an
    # explicit setting (a pod behind a NetworkPolicy) exposes it further.
    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=50056, ge=0, le=65535)
    # Shortest password AddMailbox / SetPassword accept (vpopmail accepted anything).
    min_password_length: int = Field(default=8, ge=8, le=128)
