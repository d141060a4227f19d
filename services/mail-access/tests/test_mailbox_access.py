"""Reading mail through Dovecot: what IMAP and POP3 return is byte for byte what
local-delivery stored; expunges update maildirsize so both quota views agree; IDLE sees a
new delivery; the directory's changes count at the next login; TLS both ways and no
plaintext login before it; no mail process runs as root."""

from __future__ import annotations

import concurrent.futures
import imaplib
import os
import poplib
import re
import time
from pathlib import Path

import pytest

from mailyard.local_delivery import quota

from .conftest import IMAP, IMAPS, OUTSIDER, POP3, POP3S, Box

EIGHT_BIT = "Subject: 8bit\r\nContent-Type: text/plain; charset=utf-8\r\n" \
            "Content-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln, ½ € \u2013 ok\r\n"
DOTS = b"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nend\r\n"
BIG = b"Subject: big\r\n\r\n" + b"".join(b"%05d " % i + b"x" * 70 + b"\r\n"
                                         for i in range(2000))  # ~150 KB


def _pop3_messages(client: poplib.POP3) -> list[bytes]:
    count, _ = client.stat()
    return [b"\r\n".join(client.retr(i)[1]) + b"\r\n" for i in range(1, count + 1)]


def _imap_messages(client: imaplib.IMAP4) -> list[bytes]:
    client.select("INBOX", readonly=True)
    _, data = client.fetch("1:*", "(BODY.PEEK[])")
    return [part[1] for part in data if isinstance(part, tuple)]


def test_imap_and_pop3_return_the_stored_bytes(box: Box) -> None:
    user = "reader@example.test"
    box.add_user(user, "pw-reader-1")
    box.send(user, EIGHT_BIT.encode())
    box.send(user, DOTS)
    box.send(user, BIG)
    stored = sorted(box.stored(user, 3).values())
    assert any(b"Gr\xc3\xbc\xc3\x9fe" in m for m in stored)
    assert any(len(m) > 150_000 for m in stored)

    with box.imap(user, "pw-reader-1") as imap:
        assert sorted(_imap_messages(imap)) == stored
    pop = box.pop3(user, "pw-reader-1")
    try:
        assert sorted(_pop3_messages(pop)) == stored
    finally:
        pop.quit()


def _quota_root(client: imaplib.IMAP4) -> tuple[int, int]:
    """(storage used in KiB, messages used) from GETQUOTAROOT INBOX."""
    _, data = client.getquotaroot("INBOX")
    text = b" ".join(d for d in data[1] if isinstance(d, bytes)).decode()
    storage = re.search(r"STORAGE (\d+) \d+", text)
    messages = re.search(r"MESSAGE (\d+) \d+", text)
    assert storage and messages, text
    return int(storage.group(1)), int(messages.group(1))


def test_expunge_and_dele_keep_both_quota_views_in_step(box: Box) -> None:
    user = "quota@example.test"
    # three BIG fit, four do not; three stay below the quota warning's 90 %
    limits = quota.Quota(bytes=540_000, messages=100)
    box.add_user(user, "pw-quota-1", "--quota", str(limits.bytes), "--quota-messages",
                 str(limits.messages))
    for _ in range(3):
        box.send(user, BIG)
    box.stored(user, 3)
    path = box.maildir(user)
    size = len(BIG) + 200  # with our Received:, Return-Path: and Delivered-To: lines
    # As local-delivery decides, which may rebuild maildirsize: for the mail user, as it does.
    owner = (box.platform.mail_user.uid, box.platform.mail_user.gid)
    assert quota.over(path, limits, size, owner)  # a fourth would not fit

    with box.imap(user, "pw-quota-1") as imap:
        used_kib, count = _quota_root(imap)
        on_disk = quota.usage(path, limits)
        assert count == on_disk[1] == 3
        assert used_kib == -(-on_disk[0] // 1024)  # Dovecot rounds bytes up to KiB
        imap.select("INBOX")
        imap.store("1", "+FLAGS", "\\Deleted")
        imap.expunge()
        used_kib, count = _quota_root(imap)
    after = quota.read(path, limits)
    assert after is not None, "maildirsize must stay current, not be rebuilt"
    assert after[1] == count == 2 and used_kib == -(-after[0] // 1024)
    assert not quota.over(path, limits, size, owner)  # local-delivery would take one more now

    pop = box.pop3(user, "pw-quota-1")
    try:
        pop.dele(1)
    finally:
        pop.quit()
    after_dele = quota.read(path, limits)
    assert after_dele is not None and after_dele[1] == 1
    with box.imap(user, "pw-quota-1") as imap:
        assert _quota_root(imap)[1] == 1


def test_dovecot_shows_the_quota_warning_counted_in_maildirsize(box: Box) -> None:
    """local-delivery writes the warning straight into new/ and adds its size to
    maildirsize (Maildir++), so IMAP shows it and Dovecot's quota agrees with the folders."""
    user = "warned@example.test"
    limits = quota.Quota(bytes=500_000, messages=100)
    box.add_user(user, "pw-warned-1", "--quota", str(limits.bytes), "--quota-messages",
                 str(limits.messages))
    for n in range(1, 4):  # about 94 % of the quota after the third
        box.send(user, BIG)
        # one at a time: deliveries to one mailbox at once each see the usage before the
        # others' (the quota check's), so the crossing would wait for the next delivery
        box.stored(user, n)
    assert len(box.stored(user, 4)) == 4
    path = box.maildir(user)
    with box.imap(user, "pw-warned-1") as imap:
        messages = _imap_messages(imap)
        # IMAP gives CRLF line ends whatever the file has
        warnings = [m for m in messages if b"\r\nAuto-Submitted: auto-generated\r\n" in m]
        assert len(messages) == 4 and len(warnings) == 1
        assert b"\r\nFrom: Postmaster <postmaster@example.test>\r\n" in warnings[0]
        assert f"\r\nTo: <{user}>\r\n".encode() in warnings[0]
        used_kib, count = _quota_root(imap)
    on_disk = quota.read(path, limits)
    assert on_disk is not None and on_disk == quota.count(path)
    assert count == on_disk[1] == 4 and used_kib == -(-on_disk[0] // 1024)


def test_idle_sees_a_new_delivery(box: Box) -> None:
    user = "idler@example.test"
    box.add_user(user, "pw-idle-1")
    box.send(user, b"Subject: first\r\n\r\none\r\n")
    box.stored(user, 1)
    with box.imap(user, "pw-idle-1") as imap:
        imap.select("INBOX")
        tag = imap._new_tag().decode()
        imap.send(f"{tag} IDLE\r\n".encode())
        assert imap.readline().startswith(b"+")
        box.send(user, b"Subject: second\r\n\r\ntwo\r\n")
        deadline = time.monotonic() + 30
        seen = b""
        while b"EXISTS" not in seen and time.monotonic() < deadline:
            seen = imap.readline()
        assert seen.strip() == b"* 2 EXISTS"
        imap.send(b"DONE\r\n")
        while not (line := imap.readline()).startswith(tag.encode()):
            pass
        assert b"OK" in line


def test_password_change_and_removal_count_at_the_next_login(box: Box) -> None:
    user = "mover@example.test"
    box.add_user(user, "old-secret")
    box.pop3(user, "old-secret").quit()
    box.cli("user", "passwd", user, "--password-stdin", stdin="new-secret\n")
    with pytest.raises(poplib.error_proto):
        box.pop3(user, "old-secret")
    box.pop3(user, "new-secret").quit()
    with box.imap(user, "new-secret"):
        pass
    box.cli("user", "del", user)
    with pytest.raises(poplib.error_proto):
        box.pop3(user, "new-secret")
    with pytest.raises(imaplib.IMAP4.error):
        box.imap(user, "new-secret")


def test_tls_both_ways_and_no_plaintext_login_before_it(box: Box) -> None:
    user = "tls@example.test"
    box.add_user(user, "pw-tls-12")
    imap = IMAP(box.ports.imap, OUTSIDER)
    assert "LOGINDISABLED" in imap.capabilities and "STARTTLS" in imap.capabilities
    with pytest.raises(imaplib.IMAP4.error):
        imap.login(user, "pw-tls-12")
    imap.shutdown()
    pop = POP3(box.ports.pop3, OUTSIDER)
    with pytest.raises(poplib.error_proto, match=r"(?i)plaintext|disallowed|TLS"):
        pop.user(user)
        pop.pass_("pw-tls-12")
    pop.close()

    with box.imap(user, "pw-tls-12") as starttls:  # STARTTLS, then LOGIN
        assert starttls.sock.version() in ("TLSv1.2", "TLSv1.3")
    with IMAPS(box.ports.imaps, box.tls, OUTSIDER) as implicit:
        implicit.login(user, "pw-tls-12")
    box.pop3(user, "pw-tls-12").quit()  # STLS
    pop3s = POP3S(box.ports.pop3s, box.tls, OUTSIDER)
    pop3s.user(user)
    pop3s.pass_("pw-tls-12")
    pop3s.quit()


def _children(parent: int) -> dict[int, tuple[bytes, int]]:
    """pid -> (command line, uid) of the processes whose parent is `parent`."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        uid = re.search(r"^Uid:\s+(\d+)", status, re.M)
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and uid:
            found[int(pid)] = (cmdline, int(uid.group(1)))
    return found


def test_mail_processes_run_as_the_mail_user(box: Box) -> None:
    user = "owner@example.test"
    box.add_user(user, "pw-owner-1")
    box.send(user, b"Subject: mine\r\n\r\nbody\r\n")
    box.stored(user, 1)
    with box.imap(user, "pw-owner-1") as imap:
        imap.select("INBOX")
        master = box.platform.running["dovecot"].proc.pid
        mail = [uid for cmd, uid in _children(master).values()
                if cmd.split(b"\0")[0] in (b"dovecot/imap", b"dovecot/pop3")]
        assert mail and all(uid == box.platform.mail_user.uid != 0 for uid in mail), mail
        imap.store("1", "+FLAGS", "\\Seen")  # Dovecot renames the file: it must own it
    folder = box.maildir(user)
    for path in (folder, folder / "cur", *(folder / "cur").iterdir()):
        assert path.stat().st_uid == box.platform.mail_user.uid, path


def test_concurrent_logins_all_succeed(box: Box) -> None:
    """Logins at once each get their own answer over the bridge's socket (Dovecot runs one
    auth-worker per lookup). Latency at 20 at once is measured by bench/mail_login.py."""
    user = "crowd@example.test"
    box.add_user(user, "pw-crowd-1")

    def login(_: int) -> bytes:
        client = POP3(box.ports.pop3)  # from 127.0.0.1: Dovecot's own address, no STLS
        client.user(user)
        reply = client.pass_("pw-crowd-1")
        client.quit()
        return reply

    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        replies = list(pool.map(login, range(5)))
    assert all(r.startswith(b"+OK") for r in replies), replies


def test_a_bare_login_reads_the_default_domains_mailbox(box: Box) -> None:
    """vpopmail's default domain (control/defaultdomain): Dovecot adds no realm of its own
    to "bare", the bridge passes it on, and the session is bare@<default>'s."""
    user = "bare@example.test"
    box.add_user(user, "pw-bare-1")
    box.send(user, b"Subject: bare\r\n\r\nbody\r\n")
    box.stored(user, 1)
    box.cli("control", "set", "defaultdomain", "example.test")
    try:
        deadline = time.monotonic() + 10
        while True:  # relay-auth's control view follows the change (failures meanwhile
            try:     # count against an address of their own, not the other tests')
                pop = box.pop3("Bare", "pw-bare-1", source="127.0.0.7")
                break
            except poplib.error_proto:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        try:
            assert pop.stat()[0] == 1
        finally:
            pop.quit()
        with box.imap("bare", "pw-bare-1") as imap:
            assert imap.select("INBOX", readonly=True)[1] == [b"1"]
    finally:
        box.cli("control", "del", "defaultdomain")


def test_a_password_that_is_not_utf8_fails_like_a_wrong_one(box: Box) -> None:
    """A client sending its password in Latin-1: Dovecot passes the bytes through. Against
    the platform's hash of the password set as text it is a failed login (those octets are
    not the text's UTF-8), not a temporary failure, and Dovecot does not write it into its
    log (it logs the whole key of a lookup that fails)."""
    user = "latin@example.test"
    box.add_user(user, "p\u00e4sswort")
    bad = box.metric(box.ports.mailaccess_http, "mailyard_mailbox_logins_total",
                     protocol="pop3", result="bad_credentials")
    client = POP3(box.ports.pop3, OUTSIDER)
    client.stls(box.tls)
    client.user(user)
    client.encoding = "latin-1"  # what an old client sends: b"p\xe4sswort"
    with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[AUTH\] Authentication failed"):
        client.pass_("p\u00e4sswort")
    client.close()
    assert box.metric(box.ports.mailaccess_http, "mailyard_mailbox_logins_total",
                      protocol="pop3", result="bad_credentials") == bad + 1
    assert b"p\xe4sswort" not in (box.platform.logs / "dovecot.log").read_bytes()
    box.pop3(user, "p\u00e4sswort").quit()  # the same password in UTF-8 logs in


def test_a_latin1_password_opens_the_mailbox_its_crypt_hash_was_made_of(box: Box) -> None:
    """A qmail user's old client sends "p\xe4sswort" (ISO-8859-1): the old host's crypt(3)
    read those bytes, and the hash imported from it matches them here too, through Dovecot,
    the bridge and relay-auth. The UTF-8 form of the same text fails, as it did there."""
    from mailyard.core import libcrypt

    user = "oldclient@example.test"
    latin1 = "p\u00e4sswort".encode("latin-1")
    box.cli("user", "add", user, "--password-hash", libcrypt.crypt(latin1, "$1$vpop$") or "")
    client = POP3(box.ports.pop3, OUTSIDER)
    client.stls(box.tls)
    client.user(user)
    client.encoding = "latin-1"
    assert client.pass_("p\u00e4sswort").startswith(b"+OK")
    client.quit()
    with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[AUTH\] Authentication failed"):
        box.pop3(user, "p\u00e4sswort")


def test_a_temporary_failure_leaves_the_password_out_of_dovecots_log(box: Box) -> None:
    """relay-auth away: the login fails temporarily (clients keep the password and try
    later), and the password, here the right one, is not in Dovecot's log: Dovecot logs the
    whole key of a dict lookup that fails, and the key holds the password."""
    user = "away@example.test"
    box.add_user(user, "pw-away-secret")
    box.platform.kill("relay-auth")
    try:
        with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[SYS/TEMP\] "):
            box.pop3(user, "pw-away-secret")
        with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
            box.imap(user, "pw-away-secret")
    finally:
        box.platform.restart("relay-auth")
        # mail-access's /readyz: its channel to relay-auth is connected again
        box.platform.wait_ready(box.platform.running["mail-access"].spec, 10)
    assert b"pw-away-secret" not in (box.platform.logs / "dovecot.log").read_bytes()
    box.pop3(user, "pw-away-secret").quit()


@pytest.mark.parametrize("local", ["o'brien", "a&b", "x!y", "t~z", "{c}", "h#1", "o*o",
                                   "a%b", "%u%d", "100%", "jörg", "пётр", "用户", "a%ö"])
def test_every_local_part_the_directory_takes_can_log_in(box: Box, local: str) -> None:
    """The directory takes RFC 5322 atext in local parts (without "/") and non-ASCII
    letters (SMTPUTF8); Dovecot refuses a login name with an octet outside
    auth_username_chars before asking the bridge. The user reads the mail delivered to
    that address, over POP3 and IMAP ("%u%d": no variable is expanded on the way)."""
    user = f"{local}@example.test"
    box.add_user(user, "pw-atext-1")
    box.send(user, b"Subject: for you\r\n\r\nbody\r\n")
    box.stored(user, 1)
    pop = box.pop3(user, "pw-atext-1")
    try:
        assert pop.stat()[0] == 1
    finally:
        pop.quit()
    imap = IMAP(box.ports.imap, OUTSIDER)
    imap.starttls(box.tls)
    # AUTHENTICATE PLAIN: base64 carries the UTF-8 octets (imaplib's LOGIN sends ASCII only)
    imap.authenticate("PLAIN", lambda _: b"\0" + user.encode() + b"\0pw-atext-1")
    with imap:
        assert imap.select("INBOX", readonly=True) == ("OK", [b"1"])


def test_an_alias_domain_delivers_and_logs_in_as_its_real_domain(box: Box) -> None:
    """vaddaliasdomain: joe@alias is joe@real for RCPT, delivery and POP3/IMAP/SMTP AUTH
    logins (Dovecot's user is the real address: one maildir, one quota)."""
    user = "joe@example.test"
    box.add_user(user, "pw-alias-1")
    box.cli("domain", "add", "Alias.Example", "--alias-of", "example.test")
    assert "alias.example\talias_of=example.test" in box.cli("domain", "list")
    with box.smtp() as client:
        client.mail("sender@client.test")
        assert client.rcpt("nobody@alias.example")[0] == 550
        client.rset()
    box.send("Joe@Alias.Example", b"Subject: via the alias\r\n\r\nhello\r\n")
    [stored] = box.stored(user, 1).values()
    assert b"Delivered-To: joe@alias.example\r\n" in stored
    with box.imap("joe@alias.example", "pw-alias-1") as imap:
        assert [m.endswith(b"hello\r\n") for m in _imap_messages(imap)] == [True]
    pop = box.pop3("JOE@alias.example", "pw-alias-1")
    assert pop.stat()[0] == 1
    pop.quit()
    with box.smtp(OUTSIDER) as client:
        client.starttls(context=box.tls)
        client.ehlo("client.test")
        client.login("joe@alias.example", "pw-alias-1")
        client.mail("joe@alias.example")
        assert client.rcpt("friend@elsewhere.example")[0] == 250  # relaying, authenticated
        client.rset()
    with pytest.raises(imaplib.IMAP4.error):
        box.imap("joe@alias.example", "wrong-password")


def test_address_extensions_follow_the_delimiter_set_with_the_cli(box: Box) -> None:
    user = "ext@example.test"
    box.add_user(user, "pw-ext-12")
    assert box.cli("delimiter", "show").strip() == "+"
    box.send("ext+news@example.test", b"Subject: plus\r\n\r\none\r\n")
    box.stored(user, 1)
    assert box.cli("delimiter", "set", "-").strip() == "recipient delimiter: -"
    try:
        box.send("ext-lists@example.test", b"Subject: dash\r\n\r\ntwo\r\n")
        stored = box.stored(user, 2).values()
        assert any(b"Delivered-To: ext-lists@example.test\r\n" in m for m in stored)
        with box.smtp() as client:
            client.mail("sender@client.test")
            assert client.rcpt("ext+news@example.test")[0] == 550
            client.rset()
        assert "INVALID_ARGUMENT" in box.cli("delimiter", "set", ".", check=False)
        assert box.cli("delimiter", "off").strip() == "recipient delimiter: off"
        assert box.cli("delimiter", "show").strip() == "off"
    finally:
        box.cli("delimiter", "set", "+")


def test_a_login_in_either_normal_form_reads_the_one_mailbox(box: Box) -> None:
    """A local part typed in NFD (e and a combining accent, as macOS and some input methods
    write it) or upper case logs in to the mailbox added in NFC, over POP3 and IMAP: Dovecot
    hands the login on as typed, relay-auth and the userdb answer match it in NFC."""
    user = "ren\u00e9@example.test"
    box.add_user(user, "pw-nfc-1")
    box.send(user, b"Subject: one mailbox\r\n\r\nbody\r\n")
    box.stored(user, 1)
    for login in ("rene\u0301@example.test", "REN\u00c9@example.test"):
        pop = box.pop3(login, "pw-nfc-1")
        try:
            assert pop.stat()[0] == 1, login
        finally:
            pop.quit()
        imap = IMAP(box.ports.imap, OUTSIDER)
        imap.starttls(box.tls)
        imap.authenticate("PLAIN", lambda _, login=login: b"\0" + login.encode()
                          + b"\0pw-nfc-1")
        with imap:
            assert imap.select("INBOX", readonly=True) == ("OK", [b"1"]), login


def test_a_vpopmail_percent_login_reads_the_mailbox(box: Box) -> None:
    """vpopmail took "joe%example.com" for joe@example.com (clients and ISP guides that could
    not put "@" in a login field): Dovecot passes it to the bridge, relay-auth maps it, and
    the session is the canonical user's (its userdb lookup, its lease)."""
    user = "percent@example.test"
    box.add_user(user, "pw-percent-1")
    box.send(user, b"Subject: for you\r\n\r\nbody\r\n")
    box.stored(user, 1)
    pop = box.pop3("Percent%example.test", "pw-percent-1")
    try:
        assert pop.stat()[0] == 1
    finally:
        pop.quit()
    listed = [line for line in box.cli("lease", "list").splitlines()
              if line.startswith(OUTSIDER + "\t")]
    assert len(listed) == 1 and f"user={user}" in listed[0], listed
    with box.imap("percent%example.test", "pw-percent-1") as imap:
        imap.select("INBOX", readonly=True)
        _, data = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert b"for you" in data[0][1]
