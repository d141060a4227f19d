"""tcp.smtp parsing and tcpserver's lookup, including the help page's own lines."""

from __future__ import annotations

import pytest

from mailyard.core.tcprules import RuleError, RuleSet, parse, parse_ip
from mailyard.relay_auth.settings import DEFAULT_RULES, Settings

HELP_PAGE_TCP_SMTP = '127.0.0.:allow,RELAYCLIENT=" "\n:allow\n'
HELP_PAGE_OPEN_SMTP = """\
213.41.188.249:allow,RELAYCLIENT=" ",RBLSMTPD=" " 1029581749
213.41.184.98:allow,RELAYCLIENT=" ",RBLSMTPD=" " 1029782162
213.41.184.135:allow,RELAYCLIENT=" ",RBLSMTPD=" " 1029880909
"""


def match(rules: RuleSet, ip: str) -> tuple[str, bool, dict[str, str]] | None:
    rule = rules.match(parse_ip(ip))
    return None if rule is None else (rule.pattern, rule.allow, rule.env)


def test_help_page_tcp_smtp() -> None:
    rules = RuleSet(HELP_PAGE_TCP_SMTP)
    assert match(rules, "127.0.0.1") == ("127.0.0.", True, {"RELAYCLIENT": " "})
    assert match(rules, "212.27.48.10") == ("", True, {})


def test_help_page_open_smtp_lines_with_timestamps() -> None:
    rules = RuleSet(HELP_PAGE_OPEN_SMTP + HELP_PAGE_TCP_SMTP)
    assert [r.pattern for r in rules.rules][:3] == [
        "213.41.188.249", "213.41.184.98", "213.41.184.135"]
    assert match(rules, "213.41.184.98") == (
        "213.41.184.98", True, {"RELAYCLIENT": " ", "RBLSMTPD": " "})
    assert match(rules, "213.41.184.99") == ("", True, {})


def test_forms_and_specificity() -> None:
    rules = RuleSet("""\
# comment, then a blank line

:deny
10.:allow
10.1.:allow,RBLSMTPD=""
10.1.2.:deny
10.1.2.3:allow,RELAYCLIENT=""
10.9.9.1-50:allow,RELAYCLIENT="",RBLSMTPD='-go away'
172.16-17.:allow,X=plain
192.168.0.0/16:allow,RELAYCLIENT=""
192.168.7.0/24:deny
::1:allow,RELAYCLIENT=""
[2001:db8::/32]:allow
2001:db8:1::/48:deny
""")
    assert match(rules, "10.1.2.3") == ("10.1.2.3", True, {"RELAYCLIENT": ""})
    assert match(rules, "10.1.2.4") == ("10.1.2.", False, {})
    assert match(rules, "10.1.3.4") == ("10.1.", True, {"RBLSMTPD": ""})
    assert match(rules, "10.7.3.4") == ("10.", True, {})
    assert match(rules, "11.0.0.1") == ("", False, {})
    assert match(rules, "10.9.9.50")[0] == "10.9.9.1-50"  # type: ignore[index]
    assert match(rules, "10.9.9.50")[2]["RBLSMTPD"] == "-go away"  # type: ignore[index]
    assert match(rules, "10.9.9.51")[0] == "10."  # type: ignore[index]
    assert match(rules, "172.17.0.1") == ("172.16-17.", True, {"X": "plain"})
    assert match(rules, "172.18.0.1")[0] == ""  # type: ignore[index]
    assert match(rules, "192.168.1.1")[0] == "192.168.0.0/16"  # type: ignore[index]
    assert match(rules, "192.168.7.1")[1] is False  # type: ignore[index]
    assert match(rules, "::1")[0] == "::1"  # type: ignore[index]
    assert match(rules, "2001:db8::9")[0] == "[2001:db8::/32]"  # type: ignore[index]
    assert match(rules, "2001:db8:1::9")[1] is False  # type: ignore[index]
    assert match(rules, "2001:db9::1") == ("", False, {})
    assert match(rules, "::ffff:10.1.2.3")[0] == "10.1.2.3"  # type: ignore[index]


def test_first_line_wins_for_the_same_address() -> None:
    rules = RuleSet("1.2.3.4:deny\n1.2.3.4:allow,RELAYCLIENT=\"\"\n")
    assert match(rules, "1.2.3.4") == ("1.2.3.4", False, {})


def test_no_rule_matches() -> None:
    assert RuleSet("127.:allow\n").match(parse_ip("8.8.8.8")) is None


@pytest.mark.parametrize("line", [
    "1.2.3:allow",                 # incomplete address: a prefix needs its dot
    "1.2.3.4",                     # no instruction
    "1.2.3.4:permit",
    "1.2.3.256:allow",
    "1.2.3.9-4:allow",
    "1.2-3.4.5:allow",
    "1.2.3.4:allow,RELAYCLIENT=\"unterminated",
    "1.2.3.4:allow,=x",
    "1.2.3.4:allow;RELAYCLIENT=\"\"",
    "10.0.0.1/8:allow",            # host bits set
    "=mail.example.com:allow",
])
def test_bad_lines_name_their_line(line: str) -> None:
    with pytest.raises(RuleError) as err:
        parse("127.:allow\n" + line + "\n")
    assert err.value.line == 2


def test_defaults_relay_only_loopback() -> None:
    rules = RuleSet(DEFAULT_RULES)
    assert match(rules, "127.0.0.1") == ("127.", True, {"RELAYCLIENT": ""})
    assert match(rules, "1.2.3.4") == ("", True, {})


def test_settings_refuse_an_open_relay_default() -> None:
    from mailyard.core.errors import SettingsError

    for open_relay in (':allow,RELAYCLIENT=""\n', '0.0.0.0/0:allow,RELAYCLIENT=""\n:allow\n',
                       '::/0:allow,RELAYCLIENT=""\n'):
        with pytest.raises(SettingsError):
            Settings.load(default_rules=open_relay)
    # relaying for many networks, not for everyone, is no open relay
    Settings.load(default_rules='0-126.:allow,RELAYCLIENT=""\n2000::/3:allow,RELAYCLIENT=""\n')
    assert Settings.load().grpc_port == 50055


def test_a_mapped_network_is_the_ipv4_network_it_carries() -> None:
    """A host whose tcpserver listened on a dual-stack socket saw IPv4 clients as
    ::ffff:a.b.c.d and may write its rules so; clients are looked up as IPv4 here (a mapped
    address is the IPv4 one, as for a single-address rule), so '::ffff:192.0.2.0/120' was an
    IPv6 network no client is looked up in: its deny let 192.0.2.7 in, and '::ffff:0:0/96'
    with RELAYCLIENT passed the open relay check."""
    from mailyard.core.openrelay import open_relay

    rules = RuleSet('::ffff:192.0.2.0/120:deny\n[::ffff:198.0.0.0/104]:allow,RELAYCLIENT=""\n'
                    ':allow\n')
    assert match(rules, "192.0.2.7") == ("::ffff:192.0.2.0/120", False, {})
    assert match(rules, "::ffff:192.0.2.7")[1] is False  # type: ignore[index]
    assert match(rules, "198.51.100.1")[0] == "[::ffff:198.0.0.0/104]"  # type: ignore[index]
    assert match(rules, "2001:db8::1")[0] == ""  # type: ignore[index]
    assert open_relay(parse('::ffff:0:0/96:allow,RELAYCLIENT=""\n'))


@pytest.mark.parametrize(("field", "value"), [
    ("lease_ttl", 1e12), ("lease_ttl", float("inf")), ("auth_fail_window", 1e300),
    ("cram_ttl", 1e300), ("lease_purge_interval", float("inf"))])
def test_settings_refuse_times_past_their_use(field: str, value: float) -> None:
    """Times that cannot work are refused at start, naming the setting: LEASE_TTL past a
    Timestamp's range (1e12 s: year 33,700) loaded, and every lease grant, a mailbox login's
    too, answered UNKNOWN (ValueError making the Timestamp); AUTH_FAIL_WINDOW or CRAM_TTL
    of 1e300 s made a bucket TTL nats-server cannot hold, and relay-auth stopped at start
    with 'BucketNotFoundError'."""
    from mailyard.core.errors import SettingsError

    with pytest.raises(SettingsError) as err:
        Settings.load(**{field: value})
    assert field.upper() in str(err.value)
