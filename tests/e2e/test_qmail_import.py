"""`mailyard import qmail` into a running platform, from a qmail + vpopmail tree written in
the real formats (tests/qmail_tree.py), then the old host's behaviour checked over SMTP:
old passwords (DES, MD5-crypt, SHA-512-crypt) with swaks, rehashed to argon2id; aliases,
a list, forwards and catch-alls; tcp.smtp rules and open-smtp leases; the old mail next to
new deliveries; a re-run that updates; a tree with bad lines that writes nothing."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import imaplib
import os
import poplib
import re
import shutil
import smtplib
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.api.relayauth.v1 import relayauth_pb2, relayauth_pb2_grpc
from mailyard.core import auth, bus
from mailyard.core.directory import record_key
from tests.e2e.conftest import Mailyard
from tests.qmail_tree import PASSWORDS, Tree, add_bad_lines, build, crypt, rebrand

SWAKS = shutil.which("swaks")
DOVECOT = True   # the platform fixture runs Dovecot for this module (IMAP/POP3 logins)
BODY = b"Subject: after the move\r\n\r\nnew mail\r\n"


def run_import(mailyard: Mailyard, tree: Tree, *extra: str) -> tuple[int, str]:
    env = {**os.environ, **mailyard.platform.cli_env()}
    proc = subprocess.run(
        [sys.executable, "-m", "mailyard.cli.main", "import", "qmail", *tree.args(),
         "--mail-dir", str(mailyard.platform.mail_dir), *extra],
        capture_output=True, text=True, env=env, timeout=120, check=False)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def tree(mailyard: Mailyard, tmp_path_factory: pytest.TempPathFactory) -> Tree:
    return build(tmp_path_factory.mktemp("old-host"), sink_port=mailyard.sink.port)


@pytest.fixture(scope="module")
def imported(mailyard: Mailyard, tree: Tree) -> str:
    before = _files(tree.root)
    code, out = run_import(mailyard, tree)
    assert _files(tree.root) == before  # nothing on the old host changed
    # 1: some lines have no equivalent (the autoresponder, ezmlm, =host, ...): reported
    assert code == 1, out
    return out


def _files(root: Path) -> dict[str, tuple[int, int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_mode)
            for p in root.rglob("*")}


def _stored_hash(mailyard: Mailyard, address: str) -> str:
    async def read() -> str:
        nc = await bus.connect(f"nats://127.0.0.1:{mailyard.platform.ports.nats}", "test")
        try:
            kv = await nc.jetstream().key_value(bus.KV_DIRECTORY)
            entry = await kv.get(record_key("mailbox", address))
            return pb.Mailbox.FromString(entry.value or b"").password_hash
        finally:
            await nc.close()
    return asyncio.run(read())


def test_the_report_names_what_stayed_behind(mailyard: Mailyard, imported: str,
                                              tree: Tree) -> None:
    for line in (f"{tree.domain_dir('example.test')}/.qmail-vacation:1: unsupported: "
                 "autoresponder (autorespond)",
                 f"{tree.domain_dir('example.test')}/.qmail-news:1: unsupported: "
                 "ezmlm-reject's checks",
                 f"{tree.domain_dir('example.test')}/.qmail-board: unsupported: "
                 "board@example.test: moderation is not supported",
                 f"{tree.tcp_smtp}:5: unsupported: host name rule"):
        assert line in imported
    assert "domain example.test: created" in imported
    assert "domain alias.test: created, an alias domain of example.test" in imported
    assert "Mailyard has no domain aliases" not in imported  # reported before, left out
    assert "recipient delimiter: - (was +), as the old host's qmail-ext" in imported
    users = mailyard.cli("user", "list", "example.test")
    assert re.search(r"ann@example\.test\tquota=5000000\t.*\tgecos=Ann Example", users), users
    assert "# 0 malformed line(s)" in imported


@pytest.mark.skipif(SWAKS is None, reason="swaks is not installed (CI installs it)")
@pytest.mark.parametrize("user", ["joe", "ann", "bob"])  # DES, $1$, $6$
def test_old_password_works_over_smtp_auth_and_is_rehashed(mailyard: Mailyard, imported: str,
                                                           user: str) -> None:
    address = f"{user}@example.test"
    assert not _stored_hash(mailyard, address).startswith("$argon2")
    assert SWAKS is not None
    bad = subprocess.run([SWAKS, "--server", "127.0.0.1", "--port",
                          str(mailyard.platform.ports.submission), "--tls", "--timeout", "20",
                          "--auth", "LOGIN", "--auth-user", address, "--auth-password",
                          "not the password", "--from", address, "--to", "x@remote.test",
                          "--quit-after", "AUTH"], capture_output=True, text=True, timeout=60,
                         check=False)
    assert "535" in bad.stdout
    proc = subprocess.run([SWAKS, "--server", "127.0.0.1", "--port",
                           str(mailyard.platform.ports.submission), "--tls", "--timeout", "20",
                           "--ehlo", "client.test", "--auth", "PLAIN", "--auth-user", address,
                           "--auth-password", PASSWORDS[user], "--from", address,
                           "--to", "someone@remote.test", "--body", "relayed after AUTH"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "235 " in proc.stdout
    if user == "joe":
        # DES reads 8 characters of joe-des-pw: the hash cannot tell whether joe set those 8
        # or more, so it is kept (rehashing what this login sent would decide for him). The
        # decision is made before the 235 is sent: no upgrade was started.
        assert _rehash_kept(mailyard) >= 1
        assert _stored_hash(mailyard, address) == crypt(PASSWORDS["joe"], "ab")
        return
    deadline = time.monotonic() + 20
    while not _stored_hash(mailyard, address).startswith("$argon2id$"):
        assert time.monotonic() < deadline, "hash not replaced by argon2id after the login"
        time.sleep(0.1)


def _rehash_kept(mailyard: Mailyard) -> float:
    port = mailyard.platform.running["relay-auth"].spec.http_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith('mailyard_relay_auth_rehash_total{result="kept"}'))


def _no_verify() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the platform's own self-signed pair; login only
    return context


def test_old_password_opens_the_old_mail_over_imap_and_pop3(mailyard: Mailyard,
                                                           imported: str) -> None:
    if mailyard.platform.dovecot is None:
        if os.environ.get("CI"):
            pytest.fail("Dovecot is not installed (CI installs it)")
        pytest.skip("Dovecot is not installed (apt-get install dovecot-imapd dovecot-pop3d)")
    # carl's $6$ hash was never used before: Dovecot's login goes through the legacy check
    assert _stored_hash(mailyard, "carl@example.org").startswith("$6$")
    pop = poplib.POP3("127.0.0.1", mailyard.platform.ports.pop3, timeout=15)
    try:
        pop.stls(_no_verify())
        pop.user("carl@example.org")
        pop.pass_("carl-password")
        assert pop.stat()[0] == 1
        assert b"Subject: for carl" in b"\r\n".join(pop.retr(1)[1])
    finally:
        pop.quit()
    imap = imaplib.IMAP4("127.0.0.1", mailyard.platform.ports.imap, timeout=15)
    try:
        imap.starttls(_no_verify())
        imap.login("joe@example.test", PASSWORDS["joe"])
        _, folders = imap.list()
        names = b" ".join(f for f in folders if isinstance(f, bytes))
        assert b"Sent" in names and b"Archive" in names
        imap.select("INBOX", readonly=True)
        _, found = imap.search(None, "ANSWERED")
        assert len(found[0].split()) == 1            # :2,RS survived as \Answered
        imap.select("Sent", readonly=True)
        _, data = imap.fetch("1", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert b"\\Seen" in data[0][0] and b"Subject: sent" in data[0][1]
    finally:
        imap.logout()


def test_alias_mail_lands_next_to_the_old_mail(mailyard: Mailyard, imported: str) -> None:
    joe = mailyard.platform.mail_dir / "example.test" / "joe" / "Maildir"
    assert (joe / "cur" / "1065871321.M2P100.mx1:2,RS").exists()   # flags survived
    owner = mailyard.platform.mail_user          # the one mail user, as local-delivery's
    for path in (joe, joe / "cur" / "1065871321.M2P100.mx1:2,RS", joe / ".Sent"):
        assert (path.stat().st_uid, path.stat().st_gid) == (owner.uid, owner.gid)
    assert (joe / ".Sent" / "cur" / "1065871324.M5P100.mx1:2,S").exists()
    before = mailyard.count("joe@example.test")
    with mailyard.smtp() as client:
        client.sendmail("someone@client.test", ["info@example.test"], BODY)
    got = mailyard.wait_maildir("joe@example.test", before + 1)
    assert any(m.endswith(BODY) for m in got)
    assert (joe / "cur" / "1065871321.M2P100.mx1:2,RS").exists()
    assert mailyard.wait_maildir("ann@example.test", 2)  # info@ goes to ann too


def test_the_ezmlm_list_posts_to_its_subscribers_as_on_the_old_host(mailyard: Mailyard,
                                                                    imported: str) -> None:
    """news@ ran ezmlm-send -u on the old host: a subscriber's post reaches the other
    subscribers with the list's fields, a stranger's is refused at the end of DATA (no bounce
    of ours to a sender that may be forged), and news-subscribe@ (ezmlm-manage's) is refused
    rather than posted."""
    assert "list news@example.test: created, 3 member(s)" in imported
    shown = mailyard.cli("list", "list", "example.test")
    assert "news@example.test\towner=bob@example.test\tposting=members\t" in shown, shown
    ann = mailyard.count("ann@example.test")
    with mailyard.smtp() as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("stranger@remote.test", ["news@example.test"],
                            b"Subject: spam\r\n\r\nspam\r\n")
        assert refused.value.smtp_code == 550
        assert refused.value.smtp_error.startswith(b"5.7.2 Sorry, only members of news@")
        client.sendmail("joe@example.test", ["news@example.test"], BODY)
        client.docmd("MAIL FROM:<someone@client.test>")
        code, reply = client.docmd("RCPT TO:<news-subscribe@example.test>")
    assert (code, b"write to news-owner@example.test" in reply) == (550, True), reply
    got = mailyard.wait_maildir("ann@example.test", ann + 1)
    assert any(b"List-Id: <news.example.test>\r\n" in m and m.endswith(BODY) for m in got)
    mailyard.queue_empty()
    assert not any(b"spam" in m for m in mailyard.wait_maildir("ann@example.test", ann + 1))


def test_the_alias_domain_delivers_as_on_the_old_host(mailyard: Mailyard,
                                                    imported: str) -> None:
    """vaddaliasdomain's assign line: alias.test is example.test, its users, aliases and
    catch-all (it used to be reported and left out: every address of it refused 550)."""
    assert "alias.test\talias_of=example.test" in mailyard.cli("domain", "list")
    ann, joe = mailyard.count("ann@example.test"), mailyard.count("joe@example.test")
    with mailyard.smtp() as client:
        client.sendmail("someone@client.test", ["ann@alias.test"], BODY)
        client.sendmail("someone@client.test", ["nobody@alias.test"], BODY)  # catch-all joe
    mailyard.wait_maildir("ann@example.test", ann + 1)
    mailyard.wait_maildir("joe@example.test", joe + 1)


def test_qmail_ext_addresses_reach_their_user_as_on_the_old_host(mailyard: Mailyard,
                                                                 imported: str) -> None:
    """The old vpopmail had QMAIL_EXT: ann-news@ reached ann@ there, and does here."""
    assert mailyard.cli("delimiter", "show").strip() == "-"
    ann = mailyard.count("ann@example.test")
    with mailyard.smtp() as client:
        client.sendmail("someone@client.test", ["ann-news@alias.test"], BODY)
    got = mailyard.wait_maildir("ann@example.test", ann + 1)
    assert any(b"Delivered-To: ann-news@alias.test\r\n" in m for m in got)


def test_forwards_and_catch_alls_behave_as_before(mailyard: Mailyard, imported: str) -> None:
    sent = len(mailyard.sink.messages)
    bob_before = mailyard.count("bob@example.test")
    joe_before = mailyard.count("joe@example.test")
    with mailyard.smtp() as client:
        client.sendmail("someone@client.test", ["bob@example.test"], BODY)   # & + own Maildir
        client.sendmail("someone@client.test", ["carl@example.org"], BODY)   # forward only
        client.sendmail("someone@client.test", ["nobody@example.test"], BODY)  # catch-all joe
        client.docmd("MAIL FROM:<someone@client.test>")
        code, reply = client.docmd("RCPT TO:<nobody@example.org>")  # bounce-no-mailbox
    assert code == 550, reply
    got = mailyard.sink.wait_for(sent + 2)
    assert sorted(r for m in got[sent:] for r in m.rcpt_tos) == ["bob@remote.test",
                                                                 "carl@remote.test"]
    mailyard.wait_maildir("bob@example.test", bob_before + 1)             # the copy kept
    mailyard.wait_maildir("joe@example.test", joe_before + 1)
    mailyard.queue_empty()
    assert mailyard.count("carl@example.org") == 1                        # the old one only


def test_relay_rules_and_leases_decide_as_on_the_old_host(mailyard: Mailyard,
                                                          imported: str) -> None:
    def decision(ip: str) -> str:
        out = mailyard.cli("relay", "check", ip)
        match = re.search(r"decision=(\w+).*decided_by=(\w+)", out)
        assert match, out
        return f"{match.group(1)}/{match.group(2)}"

    assert decision("127.0.0.1") == "relay/rule"
    assert decision("127.0.0.3") == "deny/rule"
    assert decision("127.0.1.7") == "relay/rule"       # 127.0.1.1-20
    assert decision("127.0.0.5") == "relay/lease"      # logged in 10 minutes before
    assert decision("127.0.0.6") == "allow/rule"       # its open-smtp line had expired
    leases = mailyard.cli("lease", "list")
    expires = re.search(r"127\.0\.0\.5\tuser=open-smtp\tgranted=\S+\texpires=(\S+)"
                        r"\tsource=import", leases)
    assert expires, leases
    left = time.mktime(time.strptime(expires.group(1), "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert abs(left - (time.time() + 3 * 3600 - 600)) < 120
    with mailyard.smtp(source="127.0.0.5") as client:
        client.docmd("MAIL FROM:<someone@client.test>")
        assert client.docmd("RCPT TO:<x@remote.test>")[0] == 250
    with mailyard.smtp(source="127.0.0.6") as client:
        client.docmd("MAIL FROM:<someone@client.test>")
        assert client.docmd("RCPT TO:<x@remote.test>")[0] == 553


def test_control_files_came_over(mailyard: Mailyard, imported: str) -> None:
    assert mailyard.cli("control", "get", "databytes").strip() == "10000000"
    assert mailyard.cli("control", "get", "concurrencyremote").strip() == "120"
    assert "backup.test" in mailyard.cli("control", "get", "rcpthosts").split()
    assert "@spam.test" in mailyard.cli("control", "get", "badmailfrom").split()
    # vpopmail's domains/.quotawarn.msg and domains/example.org/.quotawarn.msg
    assert "more than 90% full" in mailyard.cli("control", "get", "quotawarn.msg")
    assert mailyard.cli("control", "get", "quotawarn.msg.example.org") == \
        "Subject: carl, clean up\n\nexample.org's text\n"
    assert f"remote.test:127.0.0.1:{mailyard.sink.port}" in mailyard.cli("route", "list")
    team = mailyard.cli("resolve", "team@example.test")
    assert "\tlist\t" in team and "outside@remote.test" in team


def test_a_bare_login_is_in_vpopmails_default_domain(mailyard: Mailyard,
                                                     imported: str) -> None:
    """~vpopmail/etc/defaultdomain came over: "ann" logs in as ann@example.test, as on the
    old host."""
    assert mailyard.cli("control", "get", "defaultdomain").strip() == "example.test"
    assert SWAKS is not None
    proc = subprocess.run([SWAKS, "--server", "127.0.0.1", "--port",
                           str(mailyard.platform.ports.submission), "--tls", "--timeout", "20",
                           "--auth", "LOGIN", "--auth-user", "ann", "--auth-password",
                           PASSWORDS["ann"], "--quit-after", "AUTH"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert "235 " in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.skipif(SWAKS is None, reason="swaks is not installed (CI installs it)")
def test_an_account_refused_every_login_stays_closed_and_gets_its_mail(
        mailyard: Mailyard, imported: str) -> None:
    """dan's vpasswd gid had NO_POP, NO_IMAP and NO_SMTP: vchkpw refused him everywhere
    while vdelivermail delivered his mail. His old password opens nothing here either."""
    assert "mailbox dan@example.org: created (locked)" in imported
    assert SWAKS is not None
    proc = subprocess.run([SWAKS, "--server", "127.0.0.1", "--port",
                           str(mailyard.platform.ports.submission), "--tls", "--timeout", "20",
                           "--auth", "PLAIN", "--auth-user", "dan@example.org",
                           "--auth-password", PASSWORDS["dan"], "--quit-after", "AUTH"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert "535" in proc.stdout and "235 " not in proc.stdout, proc.stdout + proc.stderr
    if mailyard.platform.dovecot is not None:
        imap = imaplib.IMAP4("127.0.0.1", mailyard.platform.ports.imap, timeout=15)
        try:
            imap.starttls(_no_verify())
            with pytest.raises(imaplib.IMAP4.error):
                imap.login("dan@example.org", PASSWORDS["dan"])
        finally:
            imap.shutdown()
    before = mailyard.count("dan@example.org")
    assert before == 1                                   # the old mail came over
    with mailyard.smtp() as client:
        client.sendmail("someone@client.test", ["dan@example.org"], BODY)
    mailyard.wait_maildir("dan@example.org", before + 1)


def test_a_rerun_updates_instead_of_duplicating(mailyard: Mailyard, tree: Tree,
                                                imported: str) -> None:
    counts = {a: mailyard.count(a) for a in ("joe@example.test", "ann@example.test")}
    (tree.domain_dir("example.test") / ".qmail-sales").write_text("&joe@example.test\n")
    code, out = run_import(mailyard, tree)
    assert code == 1, out
    assert "domain example.test: exists" in out
    assert "alias info@example.test: unchanged" in out
    assert "alias sales@example.test -> joe@example.test: replaced" in out
    assert "mailbox joe@example.test: updated" in out
    assert {a: mailyard.count(a) for a in counts} == counts
    assert "sales@example.test\tjoe@example.test" in mailyard.cli("alias", "list",
                                                                  "example.test")


def test_cram_md5_from_the_clear_password_only_when_asked(mailyard: Mailyard, tree: Tree,
                                                          imported: str) -> None:
    assert "CRAM-MD5" not in imported
    code, out = run_import(mailyard, tree, "--cram-md5-from-clear")
    assert code == 1, out
    assert "mailbox joe@example.test: updated (des)" in out
    assert out.count("CRAM-MD5 enabled from the clear password") == 2   # joe and bob
    relay = relayauth_pb2_grpc.RelayAuthStub(auth.channel(  # CRAM as smtp-ingress does it
        f"127.0.0.1:{mailyard.platform.ports.relayauth_grpc}",
        auth.read_token(mailyard.platform.tokens_file, "ingress")))
    for user, expected in (("joe", relayauth_pb2.AUTH_RESULT_OK),
                           ("ann", relayauth_pb2.AUTH_RESULT_MECHANISM_UNAVAILABLE)):
        challenge = relay.CramChallenge(relayauth_pb2.CramChallengeRequest(
            client_ip="127.0.0.9", hostname="mx.test"))
        digest = hmac.new(PASSWORDS[user].encode(), challenge.challenge.encode(),
                          hashlib.md5).hexdigest()
        answer = relay.CramVerify(relayauth_pb2.CramVerifyRequest(
            challenge_id=challenge.challenge_id, username=f"{user}@example.test",
            digest=digest, client_ip="127.0.0.9"))
        assert answer.result == expected, user


def _snapshot(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_bad_lines_are_named_and_nothing_is_written(mailyard: Mailyard, imported: str,
                                                    tmp_path: Path) -> None:
    bad = build(tmp_path / "bad", sink_port=mailyard.sink.port)
    lines = add_bad_lines(bad)
    rebrand(bad, "bad-")        # other domains: nothing of them may appear
    domains = mailyard.cli("domain", "list")
    mail = _snapshot(mailyard.platform.mail_dir)
    for extra in (["--dry-run"], []):
        code, out = run_import(mailyard, bad, *extra)
        assert code == 1, out
        vpasswd = bad.domain_dir("bad-example.test") / "vpasswd"
        assert f"{vpasswd}:{lines['vpasswd']}: error: expected name:crypted" in out
        assert f"{vpasswd}:{lines['vpasswd-quota']}: error: quota: quota 'lots'" in out
        assert f"{bad.tcp_smtp}:{lines['tcp.smtp']}: error:" in out
        assert mailyard.cli("domain", "list") == domains
        assert _snapshot(mailyard.platform.mail_dir) == mail
    assert "mailbox joe@bad-example.test" in run_import(mailyard, bad, "--dry-run")[1]


def test_a_list_where_the_old_host_has_an_alias_is_a_conflict_before_any_write(
        mailyard: Mailyard, tree: Tree, imported: str) -> None:
    # the platform's lists were read only at the addresses the old host has lists at: the
    # clash surfaced as ALREADY_EXISTS from AddAlias, after the mailboxes were written
    mailyard.cli("alias", "del", "info@example.test")
    mailyard.cli("list", "add", "--owner", "joe@example.test", "info@example.test",
                 "ann@example.test")
    (tree.domain_dir("example.test") / ".qmail-vacation").write_text("&ann@example.test\n")
    try:
        code, out = run_import(mailyard, tree)
        assert code == 1, out
        assert (f"{tree.domain_dir('example.test')}/.qmail-info: error: info@example.test "
                "is list on the platform, the old host has it as alias") in out
        assert "mailyard: nothing imported" in out
        assert "vacation@" not in mailyard.cli("alias", "list", "example.test")
    finally:
        (tree.domain_dir("example.test") / ".qmail-vacation").write_text(
            "| /usr/bin/autorespond 86400 3 msg.txt ./vacation\n")
        mailyard.cli("list", "del", "info@example.test")
        assert run_import(mailyard, tree)[0] == 1      # info@ is an alias again


def test_an_alias_domain_of_another_domain_here_is_a_conflict_before_any_write(
        mailyard: Mailyard, tree: Tree, imported: str) -> None:
    mailyard.cli("domain", "del", "alias.test")
    mailyard.cli("domain", "add", "alias.test", "--alias-of", "example.org")
    try:
        code, out = run_import(mailyard, tree)
        assert code == 1, out
        assert (f"{tree.qmail}/users/assign:3: error: alias.test is an alias domain of "
                "example.org on the platform, the old host has it as an alias domain of "
                "example.test: delete it first") in out
        assert "mailyard: nothing imported" in out
    finally:
        mailyard.cli("domain", "del", "alias.test")
        mailyard.cli("domain", "add", "alias.test", "--alias-of", "example.test")
    code, out = run_import(mailyard, tree)
    assert code == 1 and "domain alias.test: exists, an alias domain of example.test" in out
