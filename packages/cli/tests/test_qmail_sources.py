"""The old host's files as the import finds them: whatever sits where a file should be (a
FIFO, a device, a symlink loop, a path through a file) is one reported problem with its
path, and the rest of the tree is still planned."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from mailyard.cli.qmail_import import maildirs
from mailyard.cli.qmail_import.command import describe
from mailyard.cli.qmail_import.plan import Plan, Sources, build
from mailyard.cli.qmail_import.problems import ERROR, UNSUPPORTED
from mailyard.local_delivery.quota import Quota
from tests.qmail_tree import Tree, cdb, crypt, message, put_message, vpasswd_cdb
from tests.qmail_tree import build as build_tree


def _fifo(tree: Tree) -> Path:              # open() would wait for a writer forever
    path = tree.domain_dir("example.test") / "joe" / ".qmail"
    os.mkfifo(path)
    return path


def _device(tree: Tree) -> Path:            # stat() says 0 bytes, read() never ends
    path = tree.qmail / "control" / "badmailfrom"
    path.unlink()
    path.symlink_to("/dev/zero")
    return path


def _loop(tree: Tree) -> Path:
    path = tree.qmail / "control" / "rcpthosts"
    path.unlink()
    path.symlink_to("rcpthosts")
    return path


def _directory(tree: Tree) -> Path:
    path = tree.qmail / "control" / "locals"
    path.unlink()
    path.mkdir()
    return path


def _through_a_file(tree: Tree) -> Path:
    return tree.tcp_smtp / "open-smtp"


@pytest.mark.parametrize("plant", [_fifo, _device, _loop, _directory,
                                   _through_a_file])
def test_what_is_no_file_is_reported_and_the_rest_planned(tmp_path: Path,
                                                        plant: Callable[[Tree], Path]) -> None:
    tree = build_tree(tmp_path / "old")
    bad = plant(tree)
    open_smtp = bad if plant is _through_a_file else tree.open_smtp
    plan = build(Sources(qmail_dir=tree.qmail, vpopmail_dir=tree.vpopmail,
                         tcp_smtp=tree.tcp_smtp, open_smtp=open_smtp), now=tree.now)
    assert [(p.path, p.line, p.kind) for p in plan.problems.sorted() if p.kind == ERROR] \
        == [(str(bad), 0, ERROR)]
    assert [m.address for m in plan.mailboxes] == [
        "joe@example.test", "ann@example.test", "bob@example.test", "carl@example.org",
        "dan@example.org"]


def test_a_maildir_that_is_a_symlink_is_reported_as_its_mail_stays_behind(tmp_path: Path
                                                                         ) -> None:
    tree = build_tree(tmp_path / "old")
    joe = tree.maildir("example.test", "joe")
    joe.rename(tmp_path / "moved")
    joe.symlink_to(tmp_path / "moved")
    plan = build(Sources(qmail_dir=tree.qmail, vpopmail_dir=tree.vpopmail,
                         tcp_smtp=tree.tcp_smtp, open_smtp=tree.open_smtp), now=tree.now)
    assert [(p.path, p.line) for p in plan.problems.errors] == [(str(joe), 0)]
    out = io.StringIO()
    describe(plan, out)
    dest = tmp_path / "mail" / "example.test" / "joe" / "Maildir"
    copied = maildirs.import_maildir(joe, maildirs.Target(dest, Quota(0, 0), None))
    # the dry run tells what the import does: symbolic links are never followed
    assert f"mailbox joe@example.test\tpassword=des\tquota=none\tmessages=" \
        f"{copied.messages}\tfolders={copied.folders}\t" in out.getvalue()


def test_a_dot_qmail_of_any_length_is_planned_in_one_pass(tmp_path: Path) -> None:
    # 300,000 forwards (4 MB): a lookup per line in the targets kept so far took about 15
    # minutes here (the suite's timeout fails that), for an alias and for a mailbox's forward
    tree = build_tree(tmp_path / "old")
    everyone = [f"u{i}@remote.test" for i in range(300_000)]
    text = "".join(f"{a}\n" for a in everyone + everyone[:5])
    tree.write(".qmail-everyone", text, tree.domain_dir("example.test"))
    tree.write("ann/.qmail", text, tree.domain_dir("example.test"))
    plan = build(Sources(qmail_dir=tree.qmail, vpopmail_dir=tree.vpopmail,
                         tcp_smtp=tree.tcp_smtp, open_smtp=tree.open_smtp), now=tree.now)
    # read whole, deduplicated, and found too large for one directory record
    assert {p.reason.split(" has ")[0] for p in plan.problems.errors} == {
        "everyone@example.test", "ann@example.test's forward"}
    assert "300000 targets" in str(plan.problems.errors)


@pytest.mark.parametrize("kind", ["alias", "list", "forward"])
def test_what_no_directory_record_holds_is_an_error_in_the_dry_run(tmp_path: Path,
                                                                   kind: str) -> None:
    # 45,000 targets are 1.1 MB, past nats-server's max_payload (1 MiB) that one directory
    # record is written in: the dry run listed it, and the real run failed at its write with
    # INVALID_ARGUMENT, after the domains, mailboxes and mail before it were written
    tree = build_tree(tmp_path / "old")
    domain = tree.domain_dir("example.test")
    text = "".join(f"member{i:05d}@lists.remote.test\n" for i in range(45_000))
    if kind == "forward":
        tree.write("ann/.qmail", text, domain)
        address, path = "ann@example.test", str(domain / "ann" / ".qmail")
    else:
        tree.write(".qmail-everyone", text, domain)
        if kind == "list":
            tree.write(".qmail-everyone-owner", "&joe@example.test\n", domain)
        address, path = "everyone@example.test", str(domain / ".qmail-everyone")
    plan = build(Sources(qmail_dir=tree.qmail, vpopmail_dir=tree.vpopmail,
                         tcp_smtp=tree.tcp_smtp, open_smtp=tree.open_smtp), now=tree.now)
    errors = [(p.path, p.reason) for p in plan.problems.errors]
    assert len(errors) == 1 and errors[0][0] == path, errors
    assert errors[0][1].startswith(address)
    assert "45000 targets" in errors[0][1] and "max_payload" in errors[0][1]
    out = io.StringIO()
    describe(plan, out)
    assert "member00000@" not in out.getvalue()  # left out: --skip-bad imports the rest


def test_a_dot_qmail_name_with_capitals_is_reported_as_qmail_never_read_it(tmp_path: Path
                                                                         ) -> None:
    # qmail-local lowercases the address before it looks for .qmail-<ext>: .qmail-Sales
    # never served sales@ on the old host, and must not start to here (nor replace
    # .qmail-info because it sorts first)
    tree = build_tree(tmp_path / "old")
    domain = tree.domain_dir("example.test")
    tree.write(".qmail-Sales2", "&joe@example.test\n", domain)
    tree.write(".qmail-INFO", "&bob@example.test\n", domain)
    plan = build(Sources(qmail_dir=tree.qmail, vpopmail_dir=tree.vpopmail,
                         tcp_smtp=tree.tcp_smtp, open_smtp=tree.open_smtp), now=tree.now)
    aliases = {a.address: a.targets for a in plan.aliases}
    assert "sales2@example.test" not in aliases
    assert aliases["info@example.test"] == ["joe@example.test", "ann@example.test"]
    assert {(p.path, p.kind) for p in plan.problems.items
            if p.path.endswith(("Sales2", "INFO"))} == {
        (str(domain / ".qmail-Sales2"), UNSUPPORTED), (str(domain / ".qmail-INFO"), UNSUPPORTED)}


def test_alias_domains_are_planned_after_their_real_domain(tmp_path: Path) -> None:
    """vaddaliasdomain's assign lines (another prefix, the real domain's name and directory)
    become alias domains, whichever line comes first; one naming a domain with no line of
    its own, or a name assigned twice, is an error on its line."""
    tree = build_tree(tmp_path / "old")
    entry = "+{0}-:{1}:89:89:/home/vpopmail/domains/{1}:-::"
    tree.write("users/assign", "\n".join([
        entry.format("early.test", "example.org"),
        entry.format("example.test", "example.test"),
        entry.format("example.org", "example.org"),
        entry.format("alias.test", "example.test"),
        entry.format("orphan.test", "gone.test"),
        entry.format("alias.test", "example.org"),
        "."]) + "\n", tree.qmail)
    plan = build(Sources(qmail_dir=tree.qmail, vpopmail_dir=tree.vpopmail,
                         tcp_smtp=tree.tcp_smtp, open_smtp=tree.open_smtp), now=tree.now)
    assert [(a.name, a.real) for a in plan.alias_domains] == [
        ("early.test", "example.org"), ("alias.test", "example.test")]
    assign = str(tree.qmail / "users" / "assign")
    assert [(p.path, p.line, p.kind) for p in plan.problems.errors] == [
        (assign, 5, ERROR), (assign, 6, ERROR)]
    assert "alias domain" not in " ".join(p.reason for p in plan.problems.sorted()
                                          if p.kind == UNSUPPORTED)
    out = io.StringIO()
    describe(plan, out)
    assert f"domain alias.test\talias_of=example.test\t({assign}:4)\n" in out.getvalue()


def test_the_old_hosts_qmail_ext_sets_the_recipient_delimiter(tmp_path: Path) -> None:
    """vpopmail's --enable-qmail-ext (QMAIL_EXT in its installed vpopmail_config.h): joe-x@
    reached joe@ there, so the plan sets "-"; without the define, or the file, it cannot
    tell and leaves the platform's setting alone."""
    tree = build_tree(tmp_path / "old")
    header = tree.vpopmail / "include" / "vpopmail_config.h"

    def planned() -> tuple[str, str] | None:
        return build(Sources(qmail_dir=tree.qmail, vpopmail_dir=tree.vpopmail,
                             tcp_smtp=tree.tcp_smtp, open_smtp=tree.open_smtp),
                     now=tree.now).recipient_delimiter

    assert planned() == ("-", f"{header}:5")
    header.write_text("#define VPOPUSER \"vpopmail\"\n/* #undef QMAIL_EXT */\n")
    assert planned() is None
    header.unlink()
    assert planned() is None


def _plan_with_default_domain(tmp_path: Path, text: str | None) -> tuple[Tree, Plan]:
    tree = build_tree(tmp_path / "old")
    if text is None:
        (tree.vpopmail / "etc" / "defaultdomain").unlink()
    else:
        tree.write("etc/defaultdomain", text, base=tree.vpopmail)
    # qmail's own control/defaultdomain is qmail-inject's (host names without a dot): not it
    tree.write("control/defaultdomain", "host.example.net\n", base=tree.qmail)
    plan = build(Sources(qmail_dir=tree.qmail, vpopmail_dir=tree.vpopmail,
                         tcp_smtp=tree.tcp_smtp, open_smtp=tree.open_smtp), now=tree.now)
    return tree, plan


def test_vpopmails_default_domain_comes_over(tmp_path: Path) -> None:
    """~vpopmail/etc/defaultdomain (vpopmail's domain for logins without one) becomes
    control/defaultdomain, so users who logged in as "joe" still can."""
    _, plan = _plan_with_default_domain(tmp_path, "Example.TEST\n")
    assert plan.control.default_domain == "example.test"
    out = io.StringIO()
    describe(plan, out)
    assert "control defaultdomain\texample.test\n" in out.getvalue()
    _, none = _plan_with_default_domain(tmp_path / "none", None)
    assert none.control.default_domain == ""


def test_a_default_domain_that_is_no_domain_is_reported(tmp_path: Path) -> None:
    tree, plan = _plan_with_default_domain(tmp_path, "not a domain\n")
    path = str(tree.vpopmail / "etc" / "defaultdomain")
    assert [(p.path, p.line, p.kind) for p in plan.problems.sorted()
            if p.path == path] == [(path, 1, ERROR)]
    assert plan.control.default_domain == ""


def test_a_users_own_dot_qmail_is_not_read_when_the_domains_dot_qmail_user_answers(
        tmp_path: Path) -> None:
    """qmail-local delivers bob@ by the domain's .qmail-bob and never runs vdelivermail for
    him, so bob's own .qmail (which vdelivermail reads) never took effect on the old host:
    bob's forward is .qmail-bob's alone, and the unread file is reported."""
    tree = build_tree(tmp_path / "old")
    domain = tree.domain_dir("example.test")
    tree.write("bob/.qmail", "&stale@remote.test\n", domain)
    plan = build(Sources(qmail_dir=tree.qmail, vpopmail_dir=tree.vpopmail,
                         tcp_smtp=tree.tcp_smtp, open_smtp=tree.open_smtp), now=tree.now)
    bob = next(m for m in plan.mailboxes if m.address == "bob@example.test")
    assert (bob.forward_to, bob.keep_copy) == (["bob@remote.test"], True)
    assert [(p.path, p.kind) for p in plan.problems.items
            if p.path == str(domain / "bob" / ".qmail")] == [
        (str(domain / "bob" / ".qmail"), UNSUPPORTED)]


def test_a_forward_of_a_mailbox_to_itself_is_the_loop_it_was_not_a_copy(tmp_path: Path
                                                                      ) -> None:
    """&ann@example.test in ann's own .qmail kept no copy on the old host: vdelivermail sent
    the message there with "Delivered-To: ann@example.test", found that line the second time
    round and bounced it ("mail is looping"); qmail-local did the same with its own
    Delivered-To line for &joe@example.test in .qmail-joe. The line is reported and left out,
    never turned into a kept copy."""
    tree = build_tree(tmp_path / "old")
    domain = tree.domain_dir("example.test")
    tree.write("ann/.qmail", "&ann@remote.test\n&Ann@example.test\n", domain)
    tree.write(".qmail-joe", "&joe@example.test\n", domain)
    plan = build(Sources(qmail_dir=tree.qmail, vpopmail_dir=tree.vpopmail,
                         tcp_smtp=tree.tcp_smtp, open_smtp=tree.open_smtp), now=tree.now)
    forwards = {m.address: (m.forward_to, m.keep_copy) for m in plan.mailboxes}
    assert forwards["ann@example.test"] == (["ann@remote.test"], False)
    assert forwards["joe@example.test"] == ([], False)
    reported = {(p.path, p.line, p.kind): p.reason for p in plan.problems.items
                if p.path in (str(domain / "ann" / ".qmail"), str(domain / ".qmail-joe"))}
    assert set(reported) == {(str(domain / "ann" / ".qmail"), 2, UNSUPPORTED),
                             (str(domain / ".qmail-joe"), 1, UNSUPPORTED)}, reported
    assert all("loop" in r and "bounce" in r for r in reported.values()), reported

def test_a_dot_qmail_of_comments_only_delivered_nowhere_and_the_import_says_so(
        tmp_path: Path) -> None:
    """qmail-local takes its default delivery only for an empty .qmail: one of comment lines
    only runs no delivery and the message is gone (vdelivermail 5.4 did the same with a
    user's own .qmail). .qmail-default so written dropped unknown users' mail (the catch-all
    delete here); every other such file is reported at its first line, as Mailyard keeps
    no address that swallows mail."""
    tree = build_tree(tmp_path / "old")
    d, o = tree.domain_dir("example.test"), tree.domain_dir("example.org")
    tree.write(".qmail-old", "# closed in 2019\n", d)
    tree.write(".qmail-bob", "# bob left\n#&bob@remote.test\n", d)
    tree.write("ann/.qmail", "# no forward for now\n", d)
    tree.write(".qmail-default", "# nothing for anyone\n", o)
    tree.write(".qmail-empty", "", d)     # the default delivery: not this case
    plan = build(Sources(qmail_dir=tree.qmail, vpopmail_dir=tree.vpopmail,
                         tcp_smtp=tree.tcp_smtp, open_smtp=tree.open_smtp), now=tree.now)
    files = {str(d / ".qmail-old"), str(d / ".qmail-bob"), str(d / "ann" / ".qmail"),
             str(o / ".qmail-default"), str(d / ".qmail-empty")}
    reported = sorted((p.path, p.line, p.kind) for p in plan.problems.items if p.path in files)
    assert reported == sorted([(str(d / ".qmail-old"), 1, UNSUPPORTED),
                               (str(d / ".qmail-bob"), 1, UNSUPPORTED),
                               (str(d / "ann" / ".qmail"), 1, UNSUPPORTED),
                               (str(o / ".qmail-default"), 1, UNSUPPORTED)]), reported
    org = next(x for x in plan.domains if x.name == "example.org")
    assert (org.catch_all, org.source) == ("delete", f"{o / '.qmail-default'}:1")
    bob = next(m for m in plan.mailboxes if m.address == "bob@example.test")
    assert (bob.forward_to, bob.keep_copy) == ([], False)
    assert "old@example.test" not in {a.address for a in plan.aliases}

def test_an_account_refused_every_login_comes_over_locked(tmp_path: Path) -> None:
    """vchkpw refused dan's POP3, IMAP and SMTP AUTH logins (NO_POP, NO_IMAP and NO_SMTP in
    his vpasswd gid) while his mail was delivered. Mailyard has no per-protocol switch: the
    mailbox comes over with its mail but locked, not with the old password that opened it
    everywhere; a user refused only some logins keeps the password, each flag reported."""
    tree = build_tree(tmp_path / "old")
    vpasswd = tree.domain_dir("example.test") / "vpasswd"
    vpasswd.write_text(vpasswd.read_text().replace(":1:0:Ann Example:", ":1:2048:Ann Example:"))
    plan = build(Sources(qmail_dir=tree.qmail, vpopmail_dir=tree.vpopmail,
                         tcp_smtp=tree.tcp_smtp, open_smtp=tree.open_smtp), now=tree.now)
    locked = {m.address: m.locked for m in plan.mailboxes}
    assert locked["dan@example.org"] and not locked["ann@example.test"]
    dan = [p.reason for p in plan.problems.items if p.reason.startswith("dan:")]
    assert len(dan) == 1 and "locked" in dan[0] and "not carried over" not in dan[0], dan
    ann = [p.reason for p in plan.problems.items if p.reason.startswith("ann:")]
    assert len(ann) == 1 and "NO_SMTP is not carried over" in ann[0], ann
    out = io.StringIO()
    describe(plan, out)
    assert "mailbox dan@example.org\tpassword=locked\tquota=none\tmessages=1\t" \
        in out.getvalue()


def test_a_domains_limits_refuse_logins_as_vpopmail_applied_them(tmp_path: Path) -> None:
    """vpopmail 5.4 ORs the disable_* lines of a domain's .qmailadmin-limits (else of
    ~vpopmail/etc/vlimits.default) into the flags of each of its users without V_OVERRIDE
    (vlimits_setflags): a domain refused every login is locked here too, user by user, and
    a domain refused SMTP AUTH only is reported once, at its file."""
    tree = build_tree(tmp_path / "old")
    org = tree.domain_dir("example.org")
    tree.write(".qmailadmin-limits", "maxpopaccounts\t-1\n# closed for non-payment\n"
               "disable_pop\ndisable_imap:\ndisable_smtp 1\n", org)
    tree.write("vpasswd", (org / "vpasswd").read_text() + "eve:ab01FAX.bQRSU:1:8192:Eve:"
               "/home/vpopmail/domains/example.org/eve:NOQUOTA\n", org)   # V_OVERRIDE
    tree.write("etc/vlimits.default", "disable_smtp\n", tree.vpopmail)
    plan = build(Sources(qmail_dir=tree.qmail, vpopmail_dir=tree.vpopmail,
                         tcp_smtp=tree.tcp_smtp, open_smtp=tree.open_smtp), now=tree.now)
    locked = {m.address: m.locked for m in plan.mailboxes}
    assert locked == {"joe@example.test": False, "ann@example.test": False,
                      "bob@example.test": False, "carl@example.org": True,
                      "dan@example.org": True, "eve@example.org": False}
    limits = str(org / ".qmailadmin-limits")
    default = str(tree.vpopmail / "etc" / "vlimits.default")
    reported = {(p.path, p.line): p.reason for p in plan.problems.items
                if p.path in (limits, default)}
    assert set(reported) == {(limits, 3), (default, 1)}, reported
    assert "example.org" in reported[limits, 3] and "locked" in reported[limits, 3]
    assert "example.test" in reported[default, 1] and "NO_SMTP" in reported[default, 1]


def test_a_domains_quota_limits_are_reported_and_the_users_keep_their_own(tmp_path: Path
                                                                         ) -> None:
    """.qmailadmin-limits' quota and maxmsgcount capped the whole domain (vdelivermail built
    with --enable-domainquotas), which Mailyard cannot; default_quota and default_maxmsgcount
    were vadduser's quota for new users, written into their vpasswd lines when they were
    made, so a user without one had none there and has none here. Each line with a limit
    is reported; 0 (none) is not."""
    tree = build_tree(tmp_path / "old")
    org = tree.domain_dir("example.org")
    tree.write(".qmailadmin-limits", "maxpopaccounts\t-1\nquota\t100\nmaxmsgcount: 5000\n"
               "default_quota 10485760\ndefault_maxmsgcount\t0\n", org)
    plan = build(Sources(qmail_dir=tree.qmail, vpopmail_dir=tree.vpopmail,
                         tcp_smtp=tree.tcp_smtp, open_smtp=tree.open_smtp), now=tree.now)
    limits = str(org / ".qmailadmin-limits")
    reported = {p.line: p.reason for p in plan.problems.items
                if (p.path, p.kind) == (limits, UNSUPPORTED)}
    assert sorted(reported) == [2, 3, 4], reported
    assert "example.org" in reported[2] and "mailyard user add" in reported[4]
    quotas = {m.address: (m.user.quota_bytes, m.user.quota_messages) for m in plan.mailboxes}
    assert quotas["carl@example.org"] == (0, 0)

def test_a_users_extension_catch_all_is_the_recipient_delimiter(tmp_path: Path) -> None:
    """.qmail-ann-default took ann-anything@ to ann's own Maildir: with vpopmail's QMAIL_EXT
    the plan sets the recipient delimiter "-", which does the same here, so nothing is left
    to report. .qmail-joe-default sent joe-anything@ elsewhere, which no record holds: that
    is reported as such (not as "no extension addresses"), and so is ann's when the plan
    does not set "-"."""
    tree = build_tree(tmp_path / "old")
    domain = tree.domain_dir("example.test")
    sources = Sources(qmail_dir=tree.qmail, vpopmail_dir=tree.vpopmail,
                      tcp_smtp=tree.tcp_smtp, open_smtp=tree.open_smtp)

    def reported(name: str, plan: Plan) -> list[str]:
        return [p.reason for p in plan.problems.items if p.path == str(domain / name)]

    plan = build(sources, now=tree.now)
    assert reported(".qmail-ann-default", plan) == []
    joe = reported(".qmail-joe-default", plan)
    assert len(joe) == 1 and "joe-extensions@remote.test" in joe[0], joe
    assert "no extension addresses" not in joe[0]
    (tree.vpopmail / "include" / "vpopmail_config.h").unlink()
    ann = reported(".qmail-ann-default", build(sources, now=tree.now))
    assert len(ann) == 1 and "mailyard delimiter set -" in ann[0], ann


def test_what_vpopmail_kept_in_a_database_is_reported(tmp_path: Path) -> None:
    """vpopmail built with an SQL or LDAP backend kept its users there (vpasswd files may be
    stale or vconvert's copy), with --enable-valias its aliases in the valias table instead
    of .qmail files, with --enable-mysql-limits the domains' limits: none of them is in the
    files the import reads, so each is one reported line at its define, not silence."""
    tree = build_tree(tmp_path / "old")
    header = tree.write("include/vpopmail_config.h", "#define QMAIL_EXT 1\n#define USE_SQL 1\n"
                        "#define USE_MYSQL 1\n#define VALIAS 1\n#define ENABLE_MYSQL_LIMITS 1\n"
                        "#define CLEAR_PASS 1\n", tree.vpopmail)
    plan = build(Sources(qmail_dir=tree.qmail, vpopmail_dir=tree.vpopmail,
                         tcp_smtp=tree.tcp_smtp, open_smtp=tree.open_smtp), now=tree.now)
    found = {p.line: p.reason for p in plan.problems.items if p.path == str(header)}
    assert set(found) == {3, 4, 5}, found
    assert "MySQL" in found[3] and "valias" in found[4] and "limits" in found[5]
    assert all(p.kind == UNSUPPORTED for p in plan.problems.items if p.path == str(header))
    assert plan.recipient_delimiter == ("-", f"{header}:1")


def test_an_account_without_a_password_comes_over_locked_with_its_mail(tmp_path: Path
                                                                        ) -> None:
    """vadduser -n makes an account with an empty password field: vchkpw refused its logins
    (or, with --enable-learn-passwords, took the first password given) while its mail was
    delivered. It was a malformed line that stopped the import, and --skip-bad left its mail
    behind; it comes over locked, with its mail, and is reported."""
    tree = build_tree(tmp_path / "old")
    org = tree.domain_dir("example.org")
    tree.write("vpasswd", (org / "vpasswd").read_text() + "new::1:0:New:"
               "/home/vpopmail/domains/example.org/new:NOQUOTA\n", org)
    put_message(tree.maildir("example.org", "new"), "new", "1065871330.M11P100.mx1",
                message("for new"))
    plan = build(Sources(qmail_dir=tree.qmail, vpopmail_dir=tree.vpopmail,
                         tcp_smtp=tree.tcp_smtp, open_smtp=tree.open_smtp), now=tree.now)
    assert plan.problems.errors == []
    new = next(m for m in plan.mailboxes if m.address == "new@example.org")
    assert new.locked
    reasons = [p.reason for p in plan.problems.items if p.reason.startswith("new:")]
    assert len(reasons) == 1 and "no password" in reasons[0] and "locked" in reasons[0]
    out = io.StringIO()
    describe(plan, out)
    assert "mailbox new@example.org\tpassword=locked\tquota=none\tmessages=1\t" \
        in out.getvalue()


@pytest.mark.parametrize(("target", "mailbox"), [
    ("joe@example.test", "joe@example.test"),
    ("Joe@Alias.TEST", "joe@example.test"),        # an alias domain of the real one
    ("/home/vpopmail/domains/example.test/ann", "ann@example.test"),
    ("/home/vpopmail/domains/example.test/bob/Maildir/", "bob@example.test"),
    ("someone@remote.test", ""),
])
def test_a_catch_all_into_another_hosted_domains_mailbox_comes_over(
        tmp_path: Path, target: str, mailbox: str) -> None:
    """A customer's second domain often sent its unknown users to the first domain's
    mailbox (vdelivermail's address or path). The platform's catch-all takes any mailbox,
    in any domain; only a target with no mailbox here is reported."""
    tree = build_tree(tmp_path / "old")
    org = tree.domain_dir("example.org")
    tree.write(".qmail-default", f"| /home/vpopmail/bin/vdelivermail '' {target}\n", org)
    plan = build(Sources(qmail_dir=tree.qmail, vpopmail_dir=tree.vpopmail,
                         tcp_smtp=tree.tcp_smtp, open_smtp=tree.open_smtp), now=tree.now)
    domain = next(d for d in plan.domains if d.name == "example.org")
    reported = [p for p in plan.problems.items if p.path == str(org / ".qmail-default")]
    if mailbox:
        assert (domain.catch_all, domain.catch_all_target) == ("deliver", mailbox)
        assert reported == []
    else:
        assert domain.catch_all == "none" and len(reported) == 1


def test_vpasswd_that_vpasswd_cdb_disagrees_with_is_reported(tmp_path: Path) -> None:
    """vpopmail's cdb backend reads only vpasswd.cdb for logins and deliveries (vauth_getpw
    rebuilds it only when it is missing), so a vpasswd edited without vmkpasswd never took
    effect: each user the two files disagree on is reported, and a user only the cdb held (a
    mailbox that would be lost) is an error."""
    tree = build_tree(tmp_path / "old")
    domain = tree.domain_dir("example.test")
    vpasswd = domain / "vpasswd"
    old = vpasswd.read_bytes()
    gone = b"old:ab01FAX.bQRSU:1:0:Old:/home/vpopmail/domains/example.test/old:NOQUOTA\n"
    (domain / "vpasswd.cdb").write_bytes(vpasswd_cdb(old + gone))
    vpasswd.write_bytes(old.replace(b":Ann Example:", b":Ann Changed:")
                        + b"zed:ab01FAX.bQRSU:1:0:Zed:/home/vpopmail/domains/example.test/zed:"
                        b"NOQUOTA\n")
    plan = build(Sources(qmail_dir=tree.qmail, vpopmail_dir=tree.vpopmail,
                         tcp_smtp=tree.tcp_smtp, open_smtp=tree.open_smtp), now=tree.now)
    found = sorted((p.path.rsplit("/", 1)[1], p.line, p.kind, p.reason.split(":")[0])
                   for p in plan.problems.items if p.path.startswith(f"{domain}/vpasswd"))
    assert found == [("vpasswd", 2, UNSUPPORTED, "ann"), ("vpasswd", 4, UNSUPPORTED, "zed"),
                     ("vpasswd.cdb", 0, ERROR, "old")], found
    # the same files as vmkpasswd leaves them: nothing to say
    (domain / "vpasswd.cdb").write_bytes(vpasswd_cdb(vpasswd.read_bytes()))
    plan = build(Sources(qmail_dir=tree.qmail, vpopmail_dir=tree.vpopmail,
                         tcp_smtp=tree.tcp_smtp, open_smtp=tree.open_smtp), now=tree.now)
    assert not [p for p in plan.problems.items if p.path.startswith(f"{domain}/vpasswd")]


def test_control_virtualdomains_says_which_domains_the_old_host_delivered(tmp_path: Path
                                                                         ) -> None:
    """qmail-send hands a domain's mail to vpopmail only through its control/virtualdomains
    line (vadddomain writes domain:domain). A users/assign domain without one got no mail
    there (sent out as remote: 5.4.6), and a line to anything else than a vpopmail domain
    (a system user's prefix, subdomains, single addresses) is mail that nothing imported
    takes: each is reported at its line, a consistent file is not."""
    tree = build_tree(tmp_path / "old")
    sources = Sources(qmail_dir=tree.qmail, vpopmail_dir=tree.vpopmail,
                      tcp_smtp=tree.tcp_smtp, open_smtp=tree.open_smtp)
    path = tree.qmail / "control" / "virtualdomains"
    assign = str(tree.qmail / "users" / "assign")

    def reported() -> list[tuple[str, int, str]]:
        return sorted((p.path, p.line, p.kind) for p in build(sources, now=tree.now)
                      .problems.items if p.path in (str(path), assign))

    assert reported() == []
    path.write_text("# vpopmail's\nexample.test:example.test\nalias.test:alias.test\n"
                    "lists.example.net:ezmlm\n.example.test:example.test\n"
                    "joe@other.test:example.test\nExample.ORG:other\n")
    assert reported() == sorted([(assign, 2, UNSUPPORTED), (str(path), 4, UNSUPPORTED),
                                 (str(path), 5, UNSUPPORTED), (str(path), 6, UNSUPPORTED),
                                 (str(path), 7, UNSUPPORTED)])


def test_users_assign_that_users_cdb_disagrees_with_is_reported(tmp_path: Path) -> None:
    """qmail-lspawn reads users/cdb alone, which qmail-newu builds from users/assign (and
    vadddomain runs it): an assign edited without qmail-newu never took effect. A domain the
    cdb lacks got no mail on the old host, one it maps elsewhere is reported, and one only
    the cdb holds (delivered there, left out here) is an error."""
    tree = build_tree(tmp_path / "old")
    cdb_path = tree.qmail / "users" / "cdb"
    assign = str(tree.qmail / "users" / "assign")

    def entry(prefix: str, home: str) -> tuple[bytes, bytes]:   # user: the real domain
        return (f"!{prefix}-".encode(),
                f"{home}\x0089\x0089\x00/home/vpopmail/domains/{home}\x00-\x00".encode())

    def reported() -> list[tuple[str, int, str]]:
        plan = build(Sources(qmail_dir=tree.qmail, vpopmail_dir=tree.vpopmail,
                             tcp_smtp=tree.tcp_smtp, open_smtp=tree.open_smtp), now=tree.now)
        return sorted((p.path, p.line, p.kind) for p in plan.problems.items
                      if p.path in (assign, str(cdb_path)))

    as_newu = [entry("example.test", "example.test"), entry("example.org", "example.org"),
               entry("alias.test", "example.test"), (b"", b"-")]
    cdb_path.write_bytes(cdb(as_newu))
    assert reported() == []
    cdb_path.write_bytes(cdb([entry("example.test", "example.test"),
                              entry("alias.test", "elsewhere.test"),
                              entry("gone.test", "gone.test"), (b"", b"-")]))
    assert reported() == sorted([(assign, 2, UNSUPPORTED), (assign, 3, UNSUPPORTED),
                                 (str(cdb_path), 0, ERROR)])


def test_a_vpasswd_with_dos_line_ends_agrees_with_the_cdb_vmkpasswd_made_of_it(tmp_path: Path
                                                                             ) -> None:
    """make_vpasswd_cdb takes a line's data up to its LF, so a vpasswd saved with CRLF line
    ends gives records ending in CR, while the import reads each line without it: the same
    users in both files, which is nothing to report."""
    tree = build_tree(tmp_path / "old")
    domain = tree.domain_dir("example.test")
    raw = (domain / "vpasswd").read_bytes().replace(b"\n", b"\r\n")
    (domain / "vpasswd").write_bytes(raw)
    (domain / "vpasswd.cdb").write_bytes(vpasswd_cdb(raw))
    plan = build(Sources(qmail_dir=tree.qmail, vpopmail_dir=tree.vpopmail,
                         tcp_smtp=tree.tcp_smtp, open_smtp=tree.open_smtp), now=tree.now)
    assert [str(p) for p in plan.problems.items
            if p.path.startswith(f"{domain}/vpasswd")] == []
    assert [(m.address, m.user.quota_bytes) for m in plan.mailboxes[:3]] == [
        ("joe@example.test", 0), ("ann@example.test", 5000000), ("bob@example.test", 5000000)]
    # a real difference is still one
    (domain / "vpasswd").write_bytes(raw.replace(b":Ann Example:", b":Ann Changed:"))
    plan = build(Sources(qmail_dir=tree.qmail, vpopmail_dir=tree.vpopmail,
                         tcp_smtp=tree.tcp_smtp, open_smtp=tree.open_smtp), now=tree.now)
    assert [(p.line, p.kind) for p in plan.problems.items
            if p.path.startswith(f"{domain}/vpasswd")] == [(2, UNSUPPORTED)]

def test_a_user_whose_directory_vpopmail_had_yet_to_make_comes_over(tmp_path: Path) -> None:
    """An empty directory field (a user provisioned straight into vpopmail's database and
    written out by vconvert) is made by vchkpw at the first login or vdelivermail at the
    first delivery: the account worked, with no mail yet. It was a malformed line that
    stopped the import, and --skip-bad dropped the mailbox."""
    tree = build_tree(tmp_path / "old")
    org = tree.domain_dir("example.org")
    hashed = crypt("fresh-password", "$6$freshsalt$")
    tree.write("vpasswd", (org / "vpasswd").read_text() + f"fresh:{hashed}:1:0:Fresh::5000S\n",
               org)
    plan = build(Sources(qmail_dir=tree.qmail, vpopmail_dir=tree.vpopmail,
                         tcp_smtp=tree.tcp_smtp, open_smtp=tree.open_smtp), now=tree.now)
    assert plan.problems.errors == []
    fresh = next(m for m in plan.mailboxes if m.address == "fresh@example.org")
    assert (fresh.user.quota_bytes, fresh.locked) == (5000, False)
    assert fresh.user.home == "/home/vpopmail/domains/example.org/fresh"
    assert not fresh.maildir.exists()


def test_vpopmails_other_flags_that_changed_what_happened_are_reported(tmp_path: Path) -> None:
    """QA_ADMIN (QmailAdmin's domain administrator) and the spam flags vdelivermail obeyed
    (NO_SPAMASSASSIN, DELETE_SPAM, NO_MAILDROP), on a user or from the domain's limits, have
    no equivalent here: reported, not dropped unsaid. NO_PASSWD_CHNG, NO_WEBMAIL and
    V_USER0-3 change nothing here (no user changes a password or reads webmail through
    Mailyard; V_USERn meant nothing to vpopmail) and are not."""
    tree = build_tree(tmp_path / "old")
    org = tree.domain_dir("example.org")
    flags = 0x1000 | 0x4000 | 0x8000 | 0x40000 | 0x01 | 0x04 | 0x80 | 0x400
    tree.write("vpasswd", (org / "vpasswd").read_text().replace(":1:0:Carl:", f":1:{flags}:Carl:"),
               org)
    tree.write(".qmailadmin-limits", "delete_spam\n", tree.domain_dir("example.test"))
    plan = build(Sources(qmail_dir=tree.qmail, vpopmail_dir=tree.vpopmail,
                         tcp_smtp=tree.tcp_smtp, open_smtp=tree.open_smtp), now=tree.now)
    carl = " ".join(p.reason for p in plan.problems.items if p.reason.startswith("carl:"))
    for flag in ("QA_ADMIN", "NO_SPAMASSASSIN", "DELETE_SPAM", "NO_MAILDROP"):
        assert flag in carl, carl
    for flag in ("NO_PASSWD_CHNG", "NO_WEBMAIL", "V_USER"):
        assert flag not in carl, carl
    limits = [p.reason for p in plan.problems.items
              if p.path == str(tree.domain_dir("example.test") / ".qmailadmin-limits")]
    assert len(limits) == 1 and "DELETE_SPAM" in limits[0], limits


def test_a_users_own_extension_dot_qmail_files_are_reported(tmp_path: Path) -> None:
    """With QMAIL_EXT, vdelivermail delivered joe-news@ by joe's own .qmail-news (then
    .qmail-default, in joe's directory) before his .qmail: mail that went elsewhere there
    reaches joe@ here, so each such file is reported; without QMAIL_EXT vdelivermail never
    read them, and they are reported as such."""
    tree = build_tree(tmp_path / "old")
    joe = tree.domain_dir("example.test") / "joe"
    tree.write(".qmail-news", "./Maildir/.News/\n", joe)
    tree.write(".qmail-default", "&joe-everything@remote.test\n", joe)
    sources = Sources(qmail_dir=tree.qmail, vpopmail_dir=tree.vpopmail,
                      tcp_smtp=tree.tcp_smtp, open_smtp=tree.open_smtp)

    def reported() -> dict[str, str]:
        return {p.path.rsplit("/", 1)[1]: p.reason for p in build(sources, now=tree.now)
                .problems.items if p.path.startswith(str(joe) + "/.qmail-")}

    got = reported()
    assert set(got) == {".qmail-news", ".qmail-default"}, got
    assert "joe-news@example.test" in got[".qmail-news"]
    assert "joe-ANYTHING@example.test" in got[".qmail-default"]
    (tree.vpopmail / "include" / "vpopmail_config.h").unlink()
    assert all("never read" in reason for reason in reported().values())


VPOPMAIL_WARNING = ("From: SomeCompany Postmaster <postmaster@example.test>\n"
                    "Reply-To: postmaster@example.test\nTo: SomeCompany User:;\n"
                    "Subject: Mail quota warning\n\n"
                    "Your mailbox on the server is now more than 90% full.\n")


def test_vpopmails_quota_warning_texts_come_over(tmp_path: Path) -> None:
    """~vpopmail/domains/.quotawarn.msg (every domain) and domains/DOM/.quotawarn.msg (one
    domain's, read first by vdelivermail) become control quotawarn.msg[.DOM], the texts
    local-delivery warns with."""
    tree = build_tree(tmp_path / "old")
    tree.write("domains/.quotawarn.msg", VPOPMAIL_WARNING, base=tree.vpopmail)
    tree.write(".quotawarn.msg", "Subject: example.org is full\r\n\r\nClean up.\r\n",
               base=tree.domain_dir("example.org"))
    tree.write(".quotawarn.msg", "", base=tree.domain_dir("example.test"))  # skipped by it
    plan = build(Sources(qmail_dir=tree.qmail, vpopmail_dir=tree.vpopmail,
                         tcp_smtp=tree.tcp_smtp, open_smtp=tree.open_smtp), now=tree.now)
    texts = {name: lines for name, (lines, _) in plan.control.quotawarn.items()}
    assert texts == {"quotawarn.msg": VPOPMAIL_WARNING.splitlines(),
                     "quotawarn.msg.example.org": ["Subject: example.org is full", "",
                                                   "Clean up."]}
    out = io.StringIO()
    describe(plan, out)
    assert (f"control quotawarn.msg\t6 line(s)\t({tree.vpopmail}/domains/.quotawarn.msg)\n"
            in out.getvalue())
    assert "control quotawarn.msg.example.org\t3 line(s)\t(" in out.getvalue()


def test_a_quota_warning_that_is_no_text_is_reported(tmp_path: Path) -> None:
    tree = build_tree(tmp_path / "old")
    path = tree.write("domains/.quotawarn.msg", "Subject: x\n\nnul \x00 here\n",
                      base=tree.vpopmail)
    plan = build(Sources(qmail_dir=tree.qmail, vpopmail_dir=tree.vpopmail,
                         tcp_smtp=tree.tcp_smtp, open_smtp=tree.open_smtp), now=tree.now)
    assert [(p.path, p.line, p.kind) for p in plan.problems.sorted()
            if p.path == str(path)] == [(str(path), 3, ERROR)]
    assert "quotawarn.msg" not in plan.control.quotawarn  # the domain's own still comes
    assert "quotawarn.msg.example.org" in plan.control.quotawarn
