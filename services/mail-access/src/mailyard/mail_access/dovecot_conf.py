"""Dovecot's config, rendered from the templates in deploy/dovecot/ (`@@NAME@@` fields).

`mailyard up` and the tests render it into their data folder; containers render it at start
(`mailyard-dovecot-conf --out DIR ...`). Nothing outside `out_dir`, `base_dir` and
`state_dir` is read or written by the Dovecot it configures.
"""

from __future__ import annotations

import argparse
import dataclasses
import grp
import os
import pwd
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

TEMPLATES = {"dovecot.conf.in": "dovecot.conf", "auth-dict.conf.ext.in": "auth-dict.conf.ext"}
INSTALL_HINT = ("Dovecot is not installed, so IMAP and POP3 are off "
                "(Debian/Ubuntu: apt-get install dovecot-imapd dovecot-pop3d)")
_FIELD = re.compile(r"@@([A-Z0-9_]+)@@")
# Dovecot reads these values up to the end of the line; a newline would smuggle settings.
_UNSAFE = re.compile(r"[\r\n\x00]")


def _utf8_octets() -> str:
    """A few characters that, in UTF-8, hold every octet a non-ASCII character can be made of
    (leads C2-F4, continuations 80-BF): Dovecot's auth_username_chars is a set of octets, and
    a login name passes when each of its octets is in it."""
    chars: dict[int, str] = {}
    for code in range(0x80, 0x110000, 0x40):  # 0x40 apart: every continuation value occurs
        if not 0xD800 <= code <= 0xDFFF:  # surrogates are not characters
            for octet in chr(code).encode():
                chars.setdefault(octet, chr(code))
    return "".join(dict.fromkeys(chars.values()))


# The non-ASCII part of auth_username_chars: the directory takes local parts in UTF-8.
UTF8_USERNAME_CHARS = _utf8_octets()


class ConfigError(ValueError):
    """A value Dovecot must not get (root as mail user, a newline in a path, ...)."""


def dovecot_binary() -> str | None:
    """The dovecot master binary, or None when Dovecot is not installed."""
    return shutil.which("dovecot") or next(
        (p for p in ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot") if os.access(p, os.X_OK)),
        None)


def template_dir() -> Path:
    """deploy/dovecot/ of this checkout, or MAILYARD_DOVECOT_TEMPLATES, or the image's copy."""
    candidates = [os.environ.get("MAILYARD_DOVECOT_TEMPLATES", "")]
    candidates += [str(p / "deploy" / "dovecot") for p in Path(__file__).resolve().parents]
    candidates.append("/usr/share/mailyard/dovecot")
    for candidate in candidates:
        if candidate and (Path(candidate) / "dovecot.conf.in").is_file():
            return Path(candidate)
    raise ConfigError("Dovecot templates not found (deploy/dovecot/dovecot.conf.in); "
                      "set MAILYARD_DOVECOT_TEMPLATES")


def service_users(uid: int | None = None) -> tuple[str, str]:
    """(default_internal_user, default_login_user) for a Dovecot started by `uid` (default:
    this process): Dovecot's own unprivileged users when its master runs as root, else that
    user (Dovecot then runs every process as it)."""
    uid = os.geteuid() if uid is None else uid
    if uid == 0:
        return "dovecot", "dovenull"
    name = pwd.getpwuid(uid).pw_name
    return name, name


def service_group(uid: int | None = None) -> str:
    """default_internal_group: Dovecot's own group as root, else the user's group. Dovecot
    gives its internal sockets (stats-writer, dict, ...) to this group; a master not running
    as root cannot chown them to "dovecot" and stops ("Failed to start listeners")."""
    if (os.geteuid() if uid is None else uid) == 0:
        return "dovecot"
    gid = os.getegid() if uid is None else pwd.getpwuid(uid).pw_gid
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:  # a group with no name (containers): Dovecot takes the number
        return str(gid)


@dataclass
class DovecotConfig:
    out_dir: Path
    base_dir: Path
    state_dir: Path
    log_path: Path
    auth_socket: Path
    ssl_cert: Path
    ssl_key: Path
    mail_uid: int
    mail_gid: int
    imap_port: int = 143
    imaps_port: int = 993
    pop3_port: int = 110
    pop3s_port: int = 995
    stats_port: int = 9900
    listen: str = "127.0.0.1"
    allow_plaintext: bool = False   # operator's choice: login before TLS
    internal_user: str = ""
    login_user: str = ""
    # Who starts Dovecot (None: this process's user, as under `mailyard up` and in the
    # containers, where the renderer runs as the user Dovecot runs as).
    run_uid: int | None = None

    def fields(self) -> dict[str, str]:
        if self.mail_uid <= 0 or self.mail_gid <= 0:
            raise ConfigError("the mail user must not be root (mail_uid and mail_gid > 0)")
        internal, login = service_users(self.run_uid)
        as_root = (os.geteuid() if self.run_uid is None else self.run_uid) == 0
        values = {k.upper(): str(v) for k, v in dataclasses.asdict(self).items()}
        values.update(
            INTERNAL_USER=self.internal_user or internal, LOGIN_USER=self.login_user or login,
            INTERNAL_GROUP=service_group(self.run_uid),
            # chroot needs root; a non-root Dovecot keeps its login processes unchrooted
            # (they still run as the unprivileged login user and hold no mail access)
            LOGIN_CHROOT="login" if as_root else "",
            EMPTY_CHROOT="empty" if as_root else "",
            DISABLE_PLAINTEXT_AUTH="no" if self.allow_plaintext else "yes",
            UTF8_USERNAME_CHARS=UTF8_USERNAME_CHARS,
            AUTH_DICT_CONF=str(self.out_dir / TEMPLATES["auth-dict.conf.ext.in"]))
        for name, value in values.items():
            if _UNSAFE.search(value):
                raise ConfigError(f"{name.lower()} must be one line")
        return values


def fill(template: str, values: dict[str, str]) -> str:
    missing = sorted({m.group(1) for m in _FIELD.finditer(template)} - values.keys())
    if missing:
        raise ConfigError(f"no value for template field(s) {', '.join(missing)}")
    return _FIELD.sub(lambda m: values[m.group(1)], template)


def render(config: DovecotConfig, templates: Path | None = None,
           make_dirs: bool = True) -> Path:
    """Write dovecot.conf and auth-dict.conf.ext into out_dir; returns dovecot.conf's path.
    With make_dirs, also base_dir and state_dir (in containers they are Dovecot's own
    volumes, not the renderer's)."""
    source = templates or template_dir()
    values = config.fields()
    config.out_dir.mkdir(parents=True, exist_ok=True)
    for folder in (config.base_dir, config.state_dir) if make_dirs else ():
        folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    for template, target in TEMPLATES.items():
        text = fill((source / template).read_text(encoding="utf-8"), values)
        (config.out_dir / target).write_text(text, encoding="utf-8")
    return config.out_dir / TEMPLATES["dovecot.conf.in"]


def main(argv: list[str] | None = None) -> int:
    """Containers: render once before `dovecot -F -c <out>/dovecot.conf`."""
    parser = argparse.ArgumentParser(prog="mailyard-dovecot-conf", description=main.__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder for the config")
    parser.add_argument("--run", type=Path, default=Path("/run/dovecot"), help="base_dir")
    parser.add_argument("--state", type=Path, default=Path("/var/lib/dovecot"))
    parser.add_argument("--log", type=Path, default=Path("/dev/stderr"))
    parser.add_argument("--auth-socket", type=Path, required=True)
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--mail-uid", type=int, required=True)
    parser.add_argument("--mail-gid", type=int, required=True)
    parser.add_argument("--listen", default="*")
    parser.add_argument("--ports", default="143,993,110,995,9900",
                        help="imap,imaps,pop3,pop3s,stats")
    parser.add_argument("--allow-plaintext", action="store_true",
                        help="allow logins before TLS (not recommended)")
    args = parser.parse_args(argv)
    try:
        imap, imaps, pop3, pop3s, stats = (int(p) for p in args.ports.split(","))
    except ValueError:
        print("mailyard-dovecot-conf: --ports needs five numbers", file=sys.stderr)
        return 2
    config = DovecotConfig(args.out, args.run, args.state, args.log, args.auth_socket,
                           args.cert, args.key, args.mail_uid, args.mail_gid, imap, imaps,
                           pop3, pop3s, stats, args.listen, args.allow_plaintext)
    try:
        print(render(config, make_dirs=False))
    except (ConfigError, OSError) as exc:
        print(f"mailyard-dovecot-conf: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
