"""The qmail/vpopmail file parsers: the formats as written on such hosts, and property tests
(they read legacy, possibly hostile files: any input gives records or reported lines, never
an exception)."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailyard.cli.qmail_import import (
    assign,
    assigncdb,
    controlfiles,
    dotqmail,
    tcprules,
    userflags,
    virtualdomains,
    vlimits,
    vpasswd,
    vpasswdcdb,
)
from mailyard.cli.qmail_import.apply import merged
from mailyard.cli.qmail_import.problems import ERROR, UNSUPPORTED, Problems
from mailyard.cli.qmail_import.sourcefile import decode, lines
from tests.qmail_tree import cdb, crypt

HELP_PAGE_ASSIGN = [
    "+00-00l0-00l00l-0-0.com-:00-00l0-00l00l-0-0.com:508:503:"
    "/home/vpopmail/domains/00-00l0-00l00l-0-0.com:-:: +00h01.com-:00h01.com:508:503:"
    "/home/vpopmail/domains/00h01.com:-::",
    "+01emarket.com-:01emarket.com:508:503:/home/vpopmail/domains/01emarket.com:-::",
    ".",
]
texts = st.text(st.characters(blacklist_categories=["Cs"]), max_size=200)
line_lists = st.lists(texts.filter(lambda t: "\n" not in t), max_size=8)


def test_a_second_entry_on_an_assign_line_stays_as_dead_as_qmail_newu_left_it() -> None:
    """qmail-newu reads a line up to the seventh ':' after its key and drops the rest: the
    help page's second entry on its first line (00h01.com) never reached users/cdb, so the
    old host gave it no mail and no logins. It is reported at its line, not imported."""
    problems = Problems()
    found = assign.parse(HELP_PAGE_ASSIGN, "assign", problems)
    assert [d.name for d in found] == ["00-00l0-00l00l-0-0.com", "01emarket.com"]
    assert found[1].home == "/home/vpopmail/domains/01emarket.com"
    assert (found[1].uid, found[1].gid, found[1].line) == (508, 503, 2)
    assert [(p.line, p.kind) for p in problems.items] == [(1, UNSUPPORTED)]
    assert "+00h01.com-" in problems.items[0].reason
    assert "qmail-newu" in problems.items[0].reason


def test_assign_reports_what_qmail_newu_would_not_take() -> None:
    problems = Problems()
    found = assign.parse([
        "+alias.test-:real.test:89:89:/home/vpopmail/domains/real.test:-::",
        "+bad.test-:bad.test:x:89:/home/vpopmail/domains/bad.test:-::",
        "=root:root:0:0:/root:::",
        "+ex ample-:ex:1:1:/x:-::",
        ".",
        "+late.test-:late.test:1:1:/x:-::",
    ], "assign", problems)
    assert [(d.name, d.real) for d in found] == [("alias.test", "real.test")]
    kinds = {(p.line, p.kind) for p in problems.items}
    assert kinds == {(2, ERROR), (3, UNSUPPORTED), (4, ERROR), (6, UNSUPPORTED)}


def test_assign_without_final_dot_is_an_error() -> None:
    problems = Problems()
    assign.parse(HELP_PAGE_ASSIGN[:2], "assign", problems)
    assert [(p.line, p.kind) for p in problems.items] == [(1, UNSUPPORTED), (2, ERROR)]


def test_vpasswd_each_hash_kind_quota_and_clear_field() -> None:
    des, md5, sha = crypt("pw", "ab"), crypt("pw", "$1$salt$"), crypt("pw", "$6$salt$")
    problems = Problems()
    users = vpasswd.parse([
        f"joe:{des}:1:0:Joe:/h/joe:NOQUOTA:clear:with:colons",
        f"ann:{md5}:1:0:Ann:/h/ann:5000000S",
        f"bob:{sha}:1:0::/h/bob:5000000S,1000C:",
        f"old:{des}:1:0::/h/old:2000000",
        f"Cap:{des}:1:2048::/h/cap:1000C",
    ], "example.test", "vpasswd", problems)
    assert [(u.local, u.hash_kind, u.quota_bytes, u.quota_messages, u.clear) for u in users] \
        == [("joe", "des", 0, 0, "clear:with:colons"), ("ann", "md5-crypt", 5000000, 0, None),
            ("bob", "sha512-crypt", 5000000, 1000, None), ("old", "des", 2000000, 0, None),
            ("cap", "des", 0, 1000, None)]
    # NO_SMTP is kept for the plan, which reports it with the domain's limits
    assert [u.flags for u in users] == [0, 0, 0, 0, 2048] and not problems.items


def test_vpasswd_2x_bcrypt_is_imported() -> None:
    """A $2x$ hash (pre-2011 crypt_blowfish; crypt_blowfish's own test vector) came out as
    an error line, the user left behind: it is imported and checked as the old host did."""
    problems = Problems()
    stored = "$2x$05$/OK.fbVrR/bpIqNJ5ianF.CE5elHaaO4EbggVDjb8P19RukzXSM3e"
    users = vpasswd.parse([f"kim:{stored}:1:0::/h/kim:NOQUOTA"], "example.test", "vpasswd",
                          problems)
    assert [(u.local, u.crypted, u.hash_kind) for u in users] == [("kim", stored, "bcrypt")]
    assert not problems.items


def test_quota_digits_are_ascii() -> None:
    # vpopmail reads the field with atol(): "\u0661\u0660\u0660" (Arabic-Indic 100) is no number
    for text in ("\u0661\u0660\u0660S", "5\u0660S,1000C", "\uff15S"):
        with pytest.raises(ValueError):
            vpasswd.parse_quota(text)


def test_quota_in_kilobytes_or_megabytes_as_vdelivermail_reads_it() -> None:
    # vsetuserquota before 5.4 stored "5M" as typed; vdelivermail and Dovecot's vpopmail
    # userdb pass the field through format_maildirquota(), which multiplies it out
    assert [vpasswd.parse_quota(q) for q in ("5M", "5m", "2048k", "10K")] == [
        (5 * 2**20, 0), (5 * 2**20, 0), (2 * 2**20, 0), (10 * 2**10, 0)]
    with pytest.raises(ValueError):
        vpasswd.parse_quota("5M,1000C")       # left alone by format_maildirquota


def test_vpasswd_bad_lines_are_named() -> None:
    problems = Problems()
    users = vpasswd.parse([
        "short:xx:1:0:five",
        "nohash:not-a-hash:1:0::/h/x:NOQUOTA",
        "badquota:abcdefghijklm:1:0::/h/x:lots",
        "rel:abcdefghijklm:1:0::relative:NOQUOTA",
        "a/b:abcdefghijklm:1:0::/h/x:NOQUOTA",
        "dup:abcdefghijklm:1:0::/h/x:NOQUOTA",
        "dup:abcdefghijklm:1:0::/h/y:NOQUOTA",
        "ctl:abcdefghijklm:1:0:bell\x07:/h/x:NOQUOTA",
        "nopw::1:0::/h/x:NOQUOTA",
    ], "example.test", "vpasswd", problems)
    assert [u.local for u in users] == ["dup", "nopw"]   # nopw: vadduser -n, locked by the plan
    assert [(p.line, p.kind) for p in problems.items] == [(n, ERROR) for n in range(1, 6)] + [
        (7, ERROR), (8, ERROR)]


def test_dotqmail_lines() -> None:
    problems = Problems()
    dot = dotqmail.parse(["# c", "&a@x.test", "b@y.test", "./joe/Maildir/", "/abs/mbox",
                          "| /usr/bin/autorespond 1 2", "&nodomain", "?"],
                         ".qmail-x", "/home/vpopmail/domains/d", problems)
    assert dot.forwards == [("a@x.test", 2), ("b@y.test", 3)]
    assert dot.maildirs == [("/home/vpopmail/domains/d/joe/Maildir", 4)]
    assert dot.mboxes == [("/abs/mbox", 5)]
    assert [(p.line, p.describe()) for p in dot.programs] == [(6, "autoresponder (autorespond)")]
    assert [(p.line, p.kind) for p in problems.items] == [(7, ERROR), (8, ERROR)]
    assert dotqmail.local_of(".qmail-first:last") == "first.last"
    assert dotqmail.local_of(".qmail-") is None


def test_dotqmail_blank_first_line_and_indented_lines_are_what_qmail_local_made_of_them() -> None:
    """qmail-local strips only trailing blanks: a blank first line defers every message
    ("Uh-oh: first line of .qmail file is blank. (#4.2.1)"), and a line starting with a
    blank is a forward to an address starting with one, which no mail ever reached. Neither
    may come over as if it had worked: each is an error naming what the old host did."""
    problems = Problems()
    dot = dotqmail.parse(["", "./Maildir/", "  ./joe/Maildir/", "\t&ann@x.test",
                          "| /usr/bin/autorespond 1 2", "", "bob@x.test   "],
                         ".qmail-x", "/home/d", problems)
    assert dot.maildirs == [("/home/d/Maildir", 2)]
    assert dot.forwards == [("bob@x.test", 7)]           # trailing blanks go, as in qmail
    assert [p.line for p in dot.programs] == [5]
    assert [(p.line, p.kind) for p in problems.items] == [(1, ERROR), (3, ERROR), (4, ERROR)]
    first, indented, tab = problems.items
    assert "deferred every message" in first.reason and "#4.2.1" in first.reason
    assert "starts with a blank" in indented.reason and "'  ./joe/Maildir/'" in indented.reason
    assert "starts with a blank" in tab.reason
    clean = Problems()
    dotqmail.parse(["# comment", "", "./Maildir/"], ".qmail-y", "/home/d", clean)
    assert clean.items == []       # a blank line after the first is nothing


def test_dotqmail_forward_may_start_with_any_character() -> None:
    # qmail-local: a line that is not #, ., /, | (or blank) is a forward; & only lets the
    # address start with one of those
    problems = Problems()
    dot = dotqmail.parse(["_abuse@x.test", "-desk@x.test", "+tag@x.test", '"j s"@x.test',
                          "&#hash@x.test", "?"], ".qmail-x", "/h", problems)
    assert dot.forwards == [("_abuse@x.test", 1), ("-desk@x.test", 2), ("+tag@x.test", 3),
                            ('"j s"@x.test', 4), ("#hash@x.test", 5)]
    assert [(p.line, p.kind) for p in problems.items] == [(6, ERROR)]   # no domain


def test_assign_ends_at_any_line_starting_with_a_dot() -> None:
    problems = Problems()       # qmail-newu stops at the first line that starts with "."
    found = assign.parse([HELP_PAGE_ASSIGN[1], ". "], "assign", problems)
    assert [d.name for d in found] == ["01emarket.com"] and problems.items == []


def test_catch_all_forms() -> None:
    home = "/home/vpopmail/domains/d"
    cases = {
        "bounce-no-mailbox": ("bounce", ""), "delete": ("delete", ""),
        "joe@d.test": ("address", "joe@d.test"),
        "/home/vpopmail/domains/d/joe": ("path", "/home/vpopmail/domains/d/joe"),
        "/home/vpopmail/domains/d/joe/Maildir/": ("path",
                                                  "/home/vpopmail/domains/d/joe/Maildir"),
    }
    for target, expected in cases.items():
        problems = Problems()
        dot = dotqmail.parse([f"| /home/vpopmail/bin/vdelivermail '' {target}"], "f", home,
                             problems)
        found = dotqmail.catch_all(dot, home, problems)
        assert found is not None and (found.action, found.target) == expected
        assert problems.items == []


def test_tcp_smtp_keeps_good_lines_and_reports_host_rules() -> None:
    problems = Problems()
    text, count = tcprules.rules_text(['127.0.0.:allow,RELAYCLIENT=" "', "=mx.test:allow",
                                       "1.2.3.300:deny", "# c", ":allow"], "tcp.smtp", problems)
    assert text == '127.0.0.:allow,RELAYCLIENT=" "\n# c\n:allow\n' and count == 2
    assert [(p.line, p.kind) for p in problems.items] == [(2, UNSUPPORTED), (3, ERROR)]


def test_tcp_smtp_catch_all_relay_is_reported_not_sent_to_be_refused() -> None:
    # relay-auth's ImportRules refuses a text with one (an open relay): sent as it was, the
    # dry run passed and the real run failed at its last step, everything else written
    problems = Problems()
    text, count = tcprules.rules_text(['127.:allow,RELAYCLIENT=""', ':allow,RELAYCLIENT=""'],
                                      "tcp.smtp", problems)
    assert (text, count) == ('127.:allow,RELAYCLIENT=""\n', 1)
    assert [(p.line, p.kind) for p in problems.items] == [(2, UNSUPPORTED)]
    assert "open relay" in problems.items[0].reason


@pytest.mark.parametrize("line", ['0.0.0.0/0:allow,RELAYCLIENT=""', '0-255.:allow,RELAYCLIENT=""',
                                  '::/0:allow,RELAYCLIENT=""'])
def test_tcp_smtp_rule_relaying_for_every_address_is_reported(line: str) -> None:
    # relay-auth refuses any text whose RELAYCLIENT rules cover every address, not only
    # the empty pattern: the dry run must find what the real run would fail on
    problems = Problems()
    text, count = tcprules.rules_text(["127.:allow,RELAYCLIENT=\"\"", line], "tcp.smtp",
                                      problems)
    assert (text, count) == ('127.:allow,RELAYCLIENT=""\n', 1)
    assert [(p.line, p.kind) for p in problems.items] == [(2, UNSUPPORTED)]
    assert "open relay" in problems.items[0].reason


def test_tcp_smtp_rules_relaying_for_every_address_together_are_an_error() -> None:
    problems = Problems()
    tcprules.rules_text(['0-127.:allow,RELAYCLIENT=""', "10.:deny",
                         '128.0.0.0/1:allow,RELAYCLIENT=""'], "tcp.smtp", problems)
    assert [(p.line, p.kind) for p in problems.items] == [(3, ERROR)]
    assert "open relay" in problems.items[0].reason


def test_open_smtp_lines_as_on_the_help_page() -> None:
    problems = Problems()
    entries = tcprules.open_smtp([
        '213.41.188.249:allow,RELAYCLIENT=" ",RBLSMTPD=" " 1029581749',
        '213.41.184.98:allow,RELAYCLIENT=" ",RBLSMTPD=" "',
        "10.0.0.:allow 1029581749",
    ], "open-smtp", problems)
    assert [(e.ip, e.last_login) for e in entries] == [("213.41.188.249", 1029581749)]
    assert tcprules.remaining(entries[0], 1029581749 + 600) == 3 * 3600 - 600
    assert [p.line for p in problems.items] == [2, 3]


def test_numbers_too_long_for_int_are_reported() -> None:
    digits = "9" * 5000   # int() refuses more than 4300 digits: a ValueError, not a report
    problems = Problems()
    assert vpasswd.parse([f"joe:abcdefghijklm:1:{digits}::/h/joe:NOQUOTA"], "example.test",
                         "vpasswd", problems) == []
    assert assign.parse([f"+a.test-:a.test:{digits}:89:/h/a.test:-::", "."], "assign",
                        problems) == []
    assert tcprules.open_smtp([f"10.0.0.1:allow {digits}"], "open-smtp", problems) == []
    assert [(p.path, p.line, p.kind) for p in problems.items] == [
        ("vpasswd", 1, ERROR), ("assign", 1, ERROR), ("open-smtp", 1, ERROR)]


def test_open_smtp_login_in_the_future_is_a_lease_of_a_fresh_login() -> None:
    now = 1029581749
    for stamp in (now + 60, now + 10 * 365 * 86400, 10**18 - 1):   # skew, typo, garbage
        entry = tcprules.OpenSmtpEntry("10.0.0.1", stamp, 1)
        assert tcprules.remaining(entry, now) == tcprules.CLEAR_MINUTES * 60


def test_a_nul_byte_makes_a_line_malformed() -> None:
    # qmail-newu refuses an assign line with NUL; a NUL in a home path reached os.open()
    # (ValueError: embedded null byte) when the plan looked for the user's .qmail
    problems = Problems()
    assert vpasswd.parse(["joe:abcdefghijklm:1:0::/h/jo\x00e:NOQUOTA"], "example.test",
                         "vpasswd", problems) == []
    assert assign.parse(["+a.test-:a.test:89:89:/h/a.\x00test:-::", "."], "assign",
                        problems) == []
    assert [(p.path, p.line, p.kind) for p in problems.items] == [
        ("vpasswd", 1, ERROR), ("assign", 1, ERROR)]


def test_control_files() -> None:
    problems = Problems()
    got = controlfiles.parse({
        "me": ["mx1.old.test"], "rcpthosts": ["a.test", ".sub.test", "A.TEST"],
        "databytes": ["0"], "queuelifetime": ["x"], "concurrencyremote": ["120"],
        "smtproutes": ["beispiel.com:213.186.33.9", ":smarthost.test:2525", "bad route"],
        "badmailfrom": ["@spam.test"],
    }, controlfiles.Path("control"), problems)
    assert got.me == "mx1.old.test" and got.rcpthosts == ["a.test", ".sub.test"]
    assert got.integers == {"concurrencyremote": 120}
    assert got.routes == ["beispiel.com:213.186.33.9", ":smarthost.test:2525"]
    assert sorted((p.path, p.kind) for p in problems.items) == [
        ("control/databytes", UNSUPPORTED), ("control/queuelifetime", ERROR),
        ("control/smtproutes", ERROR)]


def test_control_lists_of_any_length_are_deduplicated_in_one_pass() -> None:
    # 300,000 lines (6 MB; MAX_FILE_BYTES allows ten times more): looking each line up in
    # the list kept so far took about 15 minutes here (the suite's timeout fails that), and
    # merging them into the platform's file as long again
    hosts = [f"d{i}.example.com" for i in range(300_000)]
    senders = [f"u{i}@spam.test" for i in range(300_000)]
    problems = Problems()
    got = controlfiles.parse({"morercpthosts": hosts + hosts[:5],
                              "badmailfrom": senders + senders[:5]},
                             controlfiles.Path("control"), problems)
    assert (got.rcpthosts, got.badmailfrom, problems.items) == (hosts, senders, [])
    old = "".join(f"{s}\n" for s in ["# kept", *senders[::2], "other@x.test"])
    assert merged(old, senders) == ["# kept", *senders[::2], "other@x.test",
                                    *senders[1::2]]


def test_control_me_that_the_platform_refuses_is_reported() -> None:
    # the Control service takes only a fully qualified name that is not this machine's: a
    # dry run passed "localhost.localdomain" and the real run failed at Set with
    # INVALID_ARGUMENT, after the domains, mailboxes and mail were written
    for me in ("localhost.localdomain", "mx1", "localhost"):
        problems = Problems()
        got = controlfiles.parse({"me": [me]}, controlfiles.Path("control"), problems)
        assert got.me == ""
        assert [(p.path, p.line, p.kind) for p in problems.items] == [
            ("control/me", 1, UNSUPPORTED)]


def test_source_lines_mixed_encodings() -> None:
    assert lines(b"a\r\nJ\xfcrgen\nK\xc3\xa4the\n") == ["a", "Jürgen", "Käthe"]


def test_vlimits_as_vpopmail_ships_and_as_qmailadmin_writes_it() -> None:
    shipped = ["# uncomment the following lines to disable certain features",
               "#disable_pop", "#disable_smtp", "perm_account\t\t0", "maxpopaccounts\t\t-1"]
    assert vlimits.parse(shipped).flags == 0
    written = ["maxpopaccounts: -1", "default_quota: 10485760", "disable_imap", "disable_smtp:",
               "disable_pop 1", "disable_popx", " disable_webmail", "x\rdisable_external_relay"]
    got = vlimits.parse(written)
    assert got.flags == (userflags.NO_IMAP | userflags.NO_SMTP | userflags.NO_POP
                         | userflags.NO_RELAY)
    assert got.lines == [3, 4, 5, 8]
    assert got.quotas == [("default_quota", 10485760, 2)]
    assert userflags.locked(got.flags)
    assert not userflags.locked(userflags.effective(userflags.V_OVERRIDE, got.flags))


# -- properties: any input is either parsed or reported, never an exception ---------------

@settings(max_examples=100, deadline=None)
@given(line_lists)
def test_assign_never_raises(raw: list[str]) -> None:
    problems = Problems()
    for domain in assign.parse(raw, "assign", problems):
        assert domain.home.startswith("/") and domain.name == domain.name.lower()
        assert "\x00" not in domain.home


@settings(max_examples=100, deadline=None)
@given(line_lists)
def test_vpasswd_never_raises(raw: list[str]) -> None:
    problems = Problems()
    for user in vpasswd.parse(raw, "example.test", "vpasswd", problems):
        assert "/" not in user.local and "\x00" not in user.home
        assert bool(user.hash_kind) == bool(user.crypted)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["joe", "$1$ab$", "1", "0", "", "NOQUOTA", "5S", "/h",
                                 "x:y", "1000C", "\x00"]), min_size=6, max_size=9))
def test_vpasswd_field_mixtures(fields: list[str]) -> None:
    problems = Problems()
    users = vpasswd.parse([":".join(fields)], "example.test", "vpasswd", problems)
    assert len(users) + len([p for p in problems.items if p.kind == ERROR]) >= 1 or \
        any(p.kind == UNSUPPORTED for p in problems.items)


@settings(max_examples=100, deadline=None)
@given(line_lists)
def test_dotqmail_never_raises(raw: list[str]) -> None:
    problems = Problems()
    dot = dotqmail.parse(raw, "f", "/home/vpopmail/domains/d", problems)
    dotqmail.catch_all(dot, "/home/vpopmail/domains/d", problems)
    for address, _ in dot.forwards:
        assert "@" in address


@settings(max_examples=100, deadline=None)
@given(line_lists)
def test_tcp_rules_and_open_smtp_never_raise(raw: list[str]) -> None:
    problems = Problems()
    tcprules.rules_text(raw, "tcp.smtp", problems)
    tcprules.open_smtp(raw, "open-smtp", problems)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(list(controlfiles.READ)), line_lists))
@example({"databytes": ["\u00b9"]})  # found by this test: "¹".isdigit() but int() refuses it
def test_control_files_never_raise(files: dict[str, list[str]]) -> None:
    problems = Problems()
    got = controlfiles.parse(files, controlfiles.Path("control"), problems)
    assert all(value > 0 for value in got.integers.values())


@settings(max_examples=150, deadline=None)
@given(texts)
def test_quota_parses_or_says_why(text: str) -> None:
    try:
        size, count = vpasswd.parse_quota(text)
    except ValueError:
        return
    assert 0 <= size < 2**64 and 0 <= count < 2**64


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_source_lines_take_any_bytes(raw: bytes) -> None:
    got = lines(raw)
    assert len(got) == raw.count(b"\n") + (0 if raw.endswith(b"\n") or not raw else 1)
    assert not any("\n" in line for line in got)


@settings(max_examples=200, deadline=2000)
@given(line_lists)
def test_vlimits_never_raise(raw: list[str]) -> None:
    got = vlimits.parse(raw)
    assert got.flags & ~sum(vlimits.KEYS.values()) == 0
    assert len(got.lines) <= len(raw)
    assert all(name in vlimits.QUOTAS and value > 0 for name, value, _ in got.quotas)


@settings(max_examples=200, deadline=2000)
@given(st.lists(st.tuples(st.binary(max_size=20), st.binary(max_size=60)), max_size=10),
       st.binary(max_size=64), st.integers(0, 4000))
def test_vpasswd_cdb_reads_what_cdbmake_wrote_and_says_why_not(
        pairs: list[tuple[bytes, bytes]], noise: bytes, cut: int) -> None:
    raw = cdb(pairs)
    first: dict[bytes, bytes] = {}
    for key, data in pairs:
        first.setdefault(key, data)
    assert set(vpasswdcdb.records(raw)) == {decode(key) for key in first}
    for damaged in (raw[:cut], raw[:cut] + noise + raw[cut:], noise + raw):
        try:
            vpasswdcdb.records(damaged)
        except ValueError:
            pass


@settings(max_examples=200, deadline=2000)
@given(line_lists)
def test_virtualdomains_never_raise(raw: list[str]) -> None:
    problems = Problems()
    found = assign.parse(HELP_PAGE_ASSIGN, "assign", problems)
    virtualdomains.check(raw, controlfiles.Path("virtualdomains"), found,
                         controlfiles.Path("assign"), problems)
    assert all(p.kind == UNSUPPORTED for p in problems.items)


@settings(max_examples=200, deadline=2000)
@given(st.lists(st.tuples(st.binary(max_size=30), st.binary(max_size=80)), max_size=8))
def test_users_cdb_of_any_records_is_compared_or_reported(
        pairs: list[tuple[bytes, bytes]]) -> None:
    problems = Problems()
    found = assign.parse(HELP_PAGE_ASSIGN, "assign", problems)
    assigncdb.compare(found, cdb([(b"!" + k, v) for k, v in pairs]),
                      controlfiles.Path("assign"), controlfiles.Path("cdb"), problems)
    assert all(p.kind in (ERROR, UNSUPPORTED) for p in problems.items)
