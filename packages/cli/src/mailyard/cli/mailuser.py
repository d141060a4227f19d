"""The one owner of mail files under `mailyard up`: the user local-delivery writes as and
Dovecot serves mailboxes as.

Run by a normal user, that user owns everything (nothing changes hands). Run as root, the
system user `mail` (present on Debian, Ubuntu, Fedora, RHEL; uid 8 on Debian) is the mail
user unless `--mail-user` names another: local-delivery keeps running as root (it reads the
spool the other root services write) and hands each file it writes to the mail user, and
Dovecot's mail processes run as that user, never as root.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from mailyard.mail_access.dovecot_conf import service_users

DEFAULT_ROOT_MAIL_USER = "mail"


@dataclass(frozen=True)
class MailUser:
    name: str
    uid: int
    gid: int

    @classmethod
    def named(cls, name: str) -> MailUser:
        try:
            entry = pwd.getpwnam(name) if not name.isdigit() else pwd.getpwuid(int(name))
        except KeyError:
            raise ValueError(f"no such user: {name}") from None
        if entry.pw_uid == 0 or entry.pw_gid == 0:
            raise ValueError(f"the mail user must not be root ({name})")
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid)

    @classmethod
    def default(cls) -> MailUser:
        if os.geteuid() == 0:
            return cls.named(DEFAULT_ROOT_MAIL_USER)
        entry = pwd.getpwuid(os.geteuid())
        return cls(entry.pw_name, entry.pw_uid, os.getegid())

    @property
    def handed_over(self) -> bool:
        """Do files change hands (root runs local-delivery for another user)?"""
        return os.geteuid() == 0 and self.uid != 0

    @property
    def dovecot_auth_user(self) -> str:
        """Who may connect to the bridge's socket: Dovecot's auth-worker runs as its
        default_internal_user ("dovecot" when Dovecot starts as root)."""
        internal, _ = service_users()
        return internal if self.handed_over else ""

    def local_delivery_env(self) -> dict[str, str]:
        if not self.handed_over:
            return {}
        return {"MAIL_UID": str(self.uid), "MAIL_GID": str(self.gid)}

    def describe(self) -> str:
        return f"{self.name} {self.uid}:{self.gid}"


def prepare_mail_dir(data: Path, mail_dir: Path, user: MailUser) -> None:
    """The mail root belongs to the mail user, and the data folder lets it pass (0711: it
    may enter, not list); nothing else in the data folder opens up."""
    if not user.handed_over:
        return
    os.chown(mail_dir, user.uid, user.gid)
    os.chmod(data, 0o711)  # noqa: S103 (search only, no listing)
