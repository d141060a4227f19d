"""Settings of local-delivery (env prefix MAILYARD_LOCAL_)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from mailyard.core.settings import ServiceSettings, service_config


class Settings(ServiceSettings):
    model_config = service_config("LOCAL")

    # Root of every mailbox: <mail_dir>/<Mailbox.maildir>, "<domain>/<local>/Maildir" by
    # default; the same tree a Dovecot IMAP/POP3 server serves (mail_location = maildir:...).
    mail_dir: Path = Path("var/mail")
    # Over quota: "bounce" is vpopmail's behaviour; "defer" keeps retrying until the user
    # makes room or queuelifetime runs out.
    over_quota: Literal["bounce", "defer"] = "bounce"
    # Seconds a job may run without a progress ack before JetStream hands it to another
    # replica (a killed worker's jobs come back after this long).
    # 10 s: progress acks every ack_wait / 3 keep a slow delivery; a dead worker's jobs run
    # again elsewhere after at most this long.
    ack_wait: float = Field(default=10.0, gt=0)
    # |command delivery is not implemented: running programs as the mail user from
    # directory data is dangerous. The switch exists so enabling it fails loudly.
    program_delivery: bool = False

    @field_validator("program_delivery")
    @classmethod
    def _no_programs(cls, value: bool) -> bool:
        if value:
            raise ValueError("program delivery (|command) is not supported by this build")
        return value
