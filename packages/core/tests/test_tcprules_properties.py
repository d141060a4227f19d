"""tcp.smtp (tcprules syntax) under hostile input: any text parses or raises RuleError naming
the line, never anything else; the indexed lookup agrees with a plain most-specific scan."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.core.relaypolicy import client_address, lease_key
from mailyard.core.tcprules import RuleError, RuleSet, parse, parse_ip

octet = st.integers(0, 255).map(str)
prefix = st.lists(octet, min_size=0, max_size=3).map(lambda p: ".".join(p) + "." if p else "")
# what a socket, a bridge or an API client may name a client with
client_text = (st.ip_addresses().map(str) | st.ip_addresses(v=4).map(lambda a: f"::ffff:{a}")
               | st.tuples(st.ip_addresses(v=6), st.text(min_size=1, max_size=12)).map(
                   lambda p: f"{p[0]}%{p[1]}")
               | st.text("0123456789abcdef:.%[] ", max_size=60) | st.text(max_size=40))
hostile = st.text(st.characters(codec="utf-8"), max_size=120) | st.text(
    "0123456789.:-,=/\"' \tallowdenyRELAYCLIENT#\n", max_size=80)


@settings(max_examples=300, deadline=None)
@given(hostile)
def test_any_text_parses_or_names_the_bad_line(text: str) -> None:
    try:
        rules = parse(text)
    except RuleError as exc:
        assert 1 <= exc.line <= max(1, text.count("\n") + 1) and str(exc).startswith("line ")
        return
    for rule in rules:
        assert isinstance(rule.allow, bool)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in rule.env.items())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(prefix, st.booleans()), min_size=1, max_size=8),
       st.ip_addresses(v=4))
def test_lookup_is_the_most_specific_prefix(rules: list[tuple[str, bool]],
                                            ip: ipaddress.IPv4Address) -> None:
    text = "\n".join(f"{p}:{'allow' if allow else 'deny'}" for p, allow in rules)
    ruleset = RuleSet(text)
    # tcpserver: the longest matching prefix wins; of equal ones, the first line
    matching = [(p, allow) for p, allow in rules if str(ip).startswith(p)]
    rule = ruleset.match(ip)
    if not matching:
        assert rule is None
        return
    longest = max(len(p) for p, _ in matching)
    expected = next(allow for p, allow in matching if len(p) == longest)
    assert rule is not None and rule.allow == expected


def test_found_lines_end_only_at_lf() -> None:
    """Found by the property test: \\x1e made str.splitlines() number a line 2 that an
    operator sees as line 1."""
    try:
        parse("\x1e0")
    except RuleError as exc:
        assert exc.line == 1
    else:
        raise AssertionError("a line without :allow / :deny was accepted")
    assert len(parse("127.:allow\r\n:deny\r\n")) == 2


@settings(max_examples=300, deadline=None)
@given(client_text)
def test_every_client_address_parse_ip_takes_has_its_keys(text: str) -> None:
    """An IPv6 zone ('fe80::1%eth0', how getpeername names a link-local peer) was taken by
    parse_ip, and its key raised (ipaddress cannot write a scoped address out in full):
    AUTH from such a client ended in a traceback (bda7682)."""
    try:
        ip = parse_ip(text)
    except ValueError:
        return
    assert client_address(text) == (ip, lease_key(ip)) and parse_ip(str(ip)) == ip
    assert RuleSet(f"{ip}:deny\n:allow\n").match(ip) is not None
