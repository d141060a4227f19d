"""Settings of local-delivery (env prefix MAILYARD_LOCAL_)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

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
    # Spool files up to this size are read on the event loop (from the page cache that is
    # cheaper than a thread hand-off), as remote-delivery does. 0 on a network volume that
    # can hang. (A delivery's maildir steps are on the loop whatever this says: only its
    # fsyncs and quota counts go to threads, deliver.py.)
    inline_read_max: int = Field(default=65536, ge=0)
    # |command delivery is not implemented: running programs as the mail user from
    # directory data is dangerous. The switch exists so enabling it fails loudly.
    program_delivery: bool = False
    # The mail user (one owner for mail files: Dovecot serves them as this uid/gid). Unset:
    # files belong to whoever runs local-delivery (containers run it as the mail user).
    # Set while running as root (`mailyard up` as root): every file and folder written is
    # given to this uid/gid. Set to another uid while not root: refused at start.
    mail_uid: int | None = Field(default=None, ge=1)
    mail_gid: int | None = Field(default=None, ge=1)

    # Vacation replies: at most one per (mailbox, sender) in this many seconds (vacation(1)'s
    # default week). Also the TTL of the KV bucket that remembers the pairs, hence bounded:
    # a minute at least, a year at most.
    autoreply_interval: float = Field(default=7 * 86400.0, ge=60, le=366 * 86400)

    # Quota warnings (vpopmail's QUOTA_WARN_PERCENT): a delivery that leaves a mailbox with
    # a quota at or above this percentage of it (bytes or messages) writes a warning into
    # it; 0 turns them off. At most one per mailbox per interval (vdelivermail's day).
    quota_warn_percent: float = Field(default=90.0, ge=0, le=100)
    quota_warn_interval: float = Field(default=86400.0, ge=60, le=366 * 86400)

    # Confirmation requests of subscriptions by mail (subscribe_limit.py): at most this many
    # to one address a day across all lists (besides one per list, action and address an
    # hour), so nobody can use our lists to mail-bomb an address.
    list_requests_per_day: int = Field(default=5, ge=1, le=1000)

    # The directory, for a list member's confirmation by mail (subscribe.py), called with
    # this service's token of role listmail (TOKEN_FILE).
    directory_addr: str = "127.0.0.1:50056"
    directory_timeout: float = Field(default=10.0, gt=0)

    @field_validator("program_delivery")
    @classmethod
    def _no_programs(cls, value: bool) -> bool:
        if value:
            raise ValueError("program delivery (|command) is not supported by this build")
        return value

    @model_validator(mode="after")
    def _mail_owner(self) -> Settings:
        if (self.mail_uid is None) != (self.mail_gid is None):
            raise ValueError("MAIL_UID and MAIL_GID go together")
        euid = os.geteuid()
        if self.mail_uid is not None and euid not in (0, self.mail_uid):
            raise ValueError(f"MAIL_UID={self.mail_uid} needs root (running as uid {euid}); "
                             "run local-delivery as the mail user instead")
        return self

    def owner(self) -> tuple[int, int] | None:
        """(uid, gid) to chown written files to, or None when they are ours already."""
        if self.mail_uid is None or self.mail_gid is None:
            return None
        if (os.geteuid(), os.getegid()) == (self.mail_uid, self.mail_gid):
            return None
        return self.mail_uid, self.mail_gid
