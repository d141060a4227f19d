"""Settings of the login bridge (env prefix MAILYARD_MAILACCESS_), validated at start."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from mailyard.core.settings import ServiceSettings, service_config


class Settings(ServiceSettings):
    model_config = service_config("MAILACCESS")

    # The UNIX socket Dovecot's passdb / userdb dict connects to (auth-dict.conf.ext's uri).
    auth_socket: Path = Path("var/run/mail-access/auth.sock")
    # When the bridge runs as root, the socket is given to this user (Dovecot's auth-worker
    # runs as default_internal_user, "dovecot") and nobody else may connect: the socket
    # answers "is this password right" and says which mailboxes exist.
    auth_socket_owner: str = ""
    relay_auth_addr: str = "127.0.0.1:50055"
    # A login waits at most this long for the check (argon2 under load takes its time).
    relay_auth_timeout: float = Field(default=15.0, gt=0)
    # Sent as "authorization: Bearer <token>" on every relay-auth call when set (the admin
    # plane's access control); never logged.
    relay_auth_token: SecretStr | None = None
    # local-delivery's MAIL_DIR: mailbox M lives at <mail_dir>/<M.maildir>.
    mail_dir: Path = Path("var/mail")

    @field_validator("relay_auth_addr")
    @classmethod
    def _addr(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError("must be HOST:PORT")
        return value
