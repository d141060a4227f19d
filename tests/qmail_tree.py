"""A qmail + vpopmail server's files, written in their real formats, for the import's tests
and its benchmark: control/, users/assign (an entry a line, as qmail-newu needs them: an
alias domain, the final "."), vpasswd with DES, MD5-crypt and SHA-512-crypt hashes made
by the system's libcrypt, a clear-password field and an account refused every login,
.qmail-* files (aliases, a list with an -owner, a forward with a copy, an autoresponder,
ezmlm, users' extension catch-alls, the catch-all), tcp.smtp and
open-smtp as on the help page, and Maildirs with cur/new/tmp, flags and Maildir++ folders.

Paths inside the files are the old host's (/home/vpopmail/...); the tree itself lives
wherever the test puts it (`--vpopmail-dir`, `--qmail-dir`).
"""

from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from mailyard.core import libcrypt

OLD_HOME = "/home/vpopmail"
PASSWORDS = {"joe": "joe-des-pw", "ann": "ann-md5-password", "bob": "bob-sha512-password",
             "dan": "dan-md5-password"}

def crypt(password: str, setting: str) -> str:
    """crypt(3) of the system's libcrypt (libxcrypt): a real DES / $1$ / $6$ hash."""
    out = libcrypt.crypt(password.encode(), setting)
    assert out is not None, f"libcrypt refused {setting!r}"
    return out


def message(subject: str, body: str = "old mail\r\n") -> bytes:
    return (f"From: someone@old.test\r\nTo: user@example.test\r\nSubject: {subject}\r\n"
            f"Date: Sat, 11 Oct 2003 13:22:00 +0200\r\n\r\n{body}").encode()


@dataclass
class Tree:
    root: Path
    sink_port: int = 2626
    now: float = field(default_factory=time.time)

    @property
    def qmail(self) -> Path:
        return self.root / "var" / "qmail"

    @property
    def vpopmail(self) -> Path:
        return self.root / "home" / "vpopmail"

    @property
    def tcp_smtp(self) -> Path:
        return self.root / "etc" / "tcp.smtp"

    @property
    def open_smtp(self) -> Path:
        return self.root / "etc" / "vpopmail" / "open-smtp"

    def args(self) -> list[str]:
        return ["--qmail-dir", str(self.qmail), "--vpopmail-dir", str(self.vpopmail),
                "--tcp-smtp", str(self.tcp_smtp), "--open-smtp", str(self.open_smtp)]

    def write(self, relative: str, text: str | bytes, base: Path | None = None) -> Path:
        path = (base or self.root) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode() if isinstance(text, str) else text)
        return path

    def domain_dir(self, domain: str) -> Path:
        return self.vpopmail / "domains" / domain

    def maildir(self, domain: str, user: str) -> Path:
        return self.domain_dir(domain) / user / "Maildir"


def cdb(records: list[tuple[bytes, bytes]]) -> bytes:
    """A cdb file as cdbmake (and vpopmail's make_vpasswd_cdb) writes it: a 2048-byte
    header of 256 (position, slots) pairs, the records, then the 256 hash tables."""
    def cdb_hash(key: bytes) -> int:
        h = 5381
        for byte in key:
            h = ((h << 5) + h ^ byte) & 0xFFFFFFFF
        return h

    body, pos, entries = bytearray(), 2048, []
    for key, data in records:
        entries.append((cdb_hash(key), pos))
        body += struct.pack("<II", len(key), len(data)) + key + data
        pos += 8 + len(key) + len(data)
    header, tables = bytearray(), bytearray()
    for i in range(256):
        chosen = [(h, p) for h, p in entries if h & 0xFF == i]
        slots = [(0, 0)] * (2 * len(chosen))
        for h, p in chosen:
            n = (h >> 8) % len(slots)
            while slots[n][1]:
                n = (n + 1) % len(slots)
            slots[n] = (h, p)
        header += struct.pack("<II", pos + len(tables), len(slots))
        tables += b"".join(struct.pack("<II", h, p) for h, p in slots)
    return bytes(header + body + tables)


def vpasswd_cdb(vpasswd: bytes) -> bytes:
    """vpasswd.cdb of a vpasswd text as make_vpasswd_cdb builds it: the name is the key, the
    rest of the line up to its LF the data (a CR before it stays in the data)."""
    return cdb([tuple(line.split(b":", 1)) for line in vpasswd.split(b"\n")  # type: ignore[misc]
                if b":" in line])


def put_message(folder: Path, sub: str, name: str, data: bytes) -> Path:
    for s in ("cur", "new", "tmp"):
        (folder / s).mkdir(parents=True, exist_ok=True)
    path = folder / sub / name
    path.write_bytes(data)
    os.utime(path, (1065871320, 1065871320))  # 2003-10-11: the mtime must survive
    return path


def build(root: Path, sink_port: int = 2626, now: float | None = None) -> Tree:
    tree = Tree(root, sink_port, time.time() if now is None else now)
    q = tree.qmail
    control = {
        "me": "mx1.old.test\n",
        "rcpthosts": "example.test\nexample.org\n",
        "morercpthosts": "alias.test\nbackup.test\n",
        "locals": "localhost\nmx1.old.test\n",
        "badmailfrom": "spammer@bad.test\n@spam.test\n",
        "databytes": "10000000\n",
        "queuelifetime": "604800\n",
        "smtproutes": f"remote.test:127.0.0.1:{sink_port}\n",
        "concurrencyremote": "120\n",
        "concurrencylocal": "15\n",
        # vadddomain / vaddaliasdomain's lines: each domain to its users/assign prefix
        "virtualdomains": "example.test:example.test\nexample.org:example.org\n"
                          "alias.test:alias.test\n",
    }
    for name, text in control.items():
        tree.write(name, text, q / "control")
    # vpopmail built with --enable-qmail-ext, as its configure writes the installed header
    tree.write("include/vpopmail_config.h",
               "/* config.h.  Generated from config.h.in by configure.  */\n"
               "/* config.h.in.  Generated from configure.in by autoheader.  */\n"
               "#define VPOPUSER \"vpopmail\"\n/* \"\" */\n#define QMAIL_EXT 1\n",
               tree.vpopmail)
    entry = "+{0}-:{1}:89:89:" + OLD_HOME + "/domains/{1}:-::"
    tree.write("users/assign",
               entry.format("example.test", "example.test") + "\n"
               + entry.format("example.org", "example.org") + "\n"
               + entry.format("alias.test", "example.test") + "\n.\n", q)

    d = tree.domain_dir("example.test")
    home = f"{OLD_HOME}/domains/example.test"
    joe = crypt(PASSWORDS["joe"], "ab")
    ann = crypt(PASSWORDS["ann"], "$1$annsalt$")
    bob = crypt(PASSWORDS["bob"], "$6$bobsaltbobsalt$")
    tree.write("vpasswd", "".join([
        f"joe:{joe}:1:0:Joe User:{home}/joe:NOQUOTA:{PASSWORDS['joe']}\n",
        f"ann:{ann}:1:0:Ann Example:{home}/ann:5000000S\n",
        f"bob:{bob}:1:0:Bob:{home}/bob:5000000S,1000C:{PASSWORDS['bob']}\n",
    ]), d)
    tree.write(".qmail-default", f"| {OLD_HOME}/bin/vdelivermail '' joe@example.test\n", d)
    tree.write(".qmail-info", "&joe@example.test\n&ann@example.test\n", d)
    tree.write(".qmail-sales", "./ann/Maildir/\n", d)
    tree.write(".qmail-team", "# the team\n&joe@example.test\nbob@example.test\n"
               "outside@remote.test\n", d)
    tree.write(".qmail-team-owner", "&joe@example.test\n", d)
    tree.write(".qmail-bob", f"&bob@remote.test\n{home}/bob/Maildir/\n", d)
    tree.write(".qmail-vacation", "| /usr/bin/autorespond 86400 3 msg.txt ./vacation\n", d)
    tree.write(".qmail-news", "|/usr/bin/ezmlm/ezmlm-reject '<#l#>'\n"
               f"|/usr/bin/ezmlm/ezmlm-send '{home}/news'\n", d)
    tree.write(".qmail-news-default", f"|/usr/bin/ezmlm/ezmlm-manage '{home}/news'\n", d)
    # ezmlm-make's list directory: subscribers in its hashed files ("T" + address + NUL),
    # DIR/owner as .qmail lines, subscriber-only posting (-u) with one address allowed
    tree.write("news/subscribers/@", b"Tjoe@example.test\0Toutside@remote.test\0", d)
    tree.write("news/subscribers/C", b"Tann@example.test\0", d)
    tree.write("news/allow/subscribers/K", b"Teditor@remote.test\0", d)
    tree.write("news/owner", "&bob@example.test\n", d)
    tree.write("news/subonly", "", d)
    tree.write("news/outlocal", "news\n", d)
    tree.write("news/outhost", "example.test\n", d)
    tree.write(".qmail-news-return-default", f"|/usr/bin/ezmlm/ezmlm-return -D '{home}/news'\n",
               d)
    # a moderated one (ezmlm-make -m): no owner in DIR/owner but its .qmail-LIST-owner
    tree.write(".qmail-board", f"|/usr/bin/ezmlm/ezmlm-send '{home}/board'\n", d)
    tree.write(".qmail-board-owner", "&ann@example.test\n", d)
    tree.write("board/subscribers/@", b"Tjoe@example.test\0", d)
    tree.write("board/mod/subscribers/@", b"Tann@example.test\0", d)
    tree.write("board/modpost", "", d)
    tree.write("board/owner", f"{home}/board/Mailbox\n", d)
    # a user's extension catch-all: ann-anything@ to her Maildir, joe-anything@ elsewhere
    tree.write(".qmail-ann-default", "./ann/Maildir/\n", d)
    tree.write(".qmail-joe-default", "&joe-extensions@remote.test\n", d)

    joe_md = tree.maildir("example.test", "joe")
    put_message(joe_md, "cur", "1065871320.M1P100.mx1,S=120:2,S", message("read"))
    put_message(joe_md, "cur", "1065871321.M2P100.mx1:2,RS", message("answered"))
    put_message(joe_md, "new", "1065871322.M3P100.mx1", message("unread"))
    put_message(joe_md, "tmp", "1065871323.M4P100.mx1", b"half a delivery")
    put_message(joe_md / ".Sent", "cur", "1065871324.M5P100.mx1:2,S", message("sent"))
    (joe_md / ".Sent" / "maildirfolder").write_bytes(b"")
    put_message(joe_md / ".Archive.2003", "cur", "1065871325.M6P100.mx1:2,FS",
                message("flagged"))
    (joe_md / ".Archive.2003" / "maildirfolder").write_bytes(b"")
    (joe_md / "courierimapsubscribed").write_text("INBOX.Sent\nINBOX.Archive.2003\n")
    (joe_md / "maildirsize").write_text("0S\n999999 99\n")  # stale: recomputed
    put_message(tree.maildir("example.test", "ann"), "new", "1065871326.M7P100.mx1",
                message("for ann"))
    put_message(tree.maildir("example.test", "bob"), "cur", "1065871327.M8P100.mx1:2,S",
                message("for bob"))

    o = tree.domain_dir("example.org")
    ohome = f"{OLD_HOME}/domains/example.org"
    carl = crypt("carl-password", "$6$carlsalt$")
    dan = crypt(PASSWORDS["dan"], "$1$dansalt$")
    # dan: every login refused (vmoduser -p -i -s: NO_POP | NO_IMAP | NO_SMTP), mail kept
    tree.write("vpasswd", f"carl:{carl}:1:0:Carl:{ohome}/carl:NOQUOTA\n"
               f"dan:{dan}:1:{0x02 | 0x08 | 0x800}:Dan:{ohome}/dan:NOQUOTA\n", o)
    tree.write(".qmail-default", f"| {OLD_HOME}/bin/vdelivermail '' bounce-no-mailbox\n", o)
    put_message(tree.maildir("example.org", "carl"), "new", "1065871328.M9P100.mx1",
                message("for carl"))
    tree.write("carl/.qmail", "&carl@remote.test\n", o)   # qmailadmin's forward, no copy
    put_message(tree.maildir("example.org", "dan"), "cur", "1065871329.M10P100.mx1:2,S",
                message("for dan"))

    tree.write("etc/tcp.smtp", "\n".join([
        "# as on the help page, plus a deny and a range",
        '127.0.0.1:allow,RELAYCLIENT=" "',
        "127.0.0.3:deny",
        '127.0.1.1-20:allow,RELAYCLIENT=""',
        '=trusted.old.test:allow,RELAYCLIENT=""',
        ":allow", ""]))
    # vdelivermail's quota warning texts: every domain's, and example.org's own
    tree.write("domains/.quotawarn.msg", "Subject: Mail quota warning\n\nYour mailbox on "
               "the server is now more than 90% full.\n", base=tree.vpopmail)
    tree.write(".quotawarn.msg", "Subject: carl, clean up\n\nexample.org's text\n", o)
    # vpopmail's domain for logins without one (vpopmail 5.4 reads this file)
    tree.write("etc/defaultdomain", "example.test\n", base=tree.vpopmail)
    fresh, old = int(tree.now) - 600, int(tree.now) - 4 * 3600
    tree.write("etc/vpopmail/open-smtp",
               f'127.0.0.5:allow,RELAYCLIENT=" ",RBLSMTPD=" " {fresh}\n'
               f'127.0.0.6:allow,RELAYCLIENT=" ",RBLSMTPD=" " {old}\n')
    return tree


def add_bad_lines(tree: Tree) -> dict[str, int]:
    """Malformed lines in several files; returns {file name: line number} of each."""
    vpasswd = tree.domain_dir("example.test") / "vpasswd"
    lines = vpasswd.read_text().splitlines()
    lines.append("broken:xx:1:0:only five")
    lines.append("quota:ab01234567890:1:0:Q:/home/vpopmail/domains/example.test/quota:lots")
    vpasswd.write_text("\n".join(lines) + "\n")
    rules = tree.tcp_smtp.read_text().splitlines()
    rules.insert(1, "10.0.0.300:allow")
    tree.tcp_smtp.write_text("\n".join(rules) + "\n")
    return {"vpasswd": len(lines) - 1, "vpasswd-quota": len(lines), "tcp.smtp": 2}


def rebrand(tree: Tree, prefix: str) -> None:
    """Rename the tree's domains to <prefix>example.test / .org (a second, separate host)."""
    files = [*tree.qmail.rglob("*"), *tree.vpopmail.rglob("vpasswd"),
             *tree.vpopmail.rglob(".qmail*")]
    for path in files:
        if path.is_file():
            text = path.read_text()
            for name in ("example.test", "example.org"):
                text = text.replace(name, prefix + name)
            path.write_text(text)
    for name in ("example.test", "example.org"):
        tree.domain_dir(name).rename(tree.domain_dir(prefix + name))
