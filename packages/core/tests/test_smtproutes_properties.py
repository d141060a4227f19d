"""smtproutes, the one grammar every writer and remote-delivery use, under hostile input:
whatever the text, parsing either yields routes or a RouteSyntaxError (never another
exception); what writers accept the reader reads back to the same route; the lookup picks
qmail-remote's most specific key."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.core import smtproutes
from mailyard.core.smtproutes import RouteSyntaxError, choose, format_line, parse, parse_line

alnum = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
label = alnum | st.tuples(alnum, alnum).map("-".join)
domain = st.lists(label, min_size=1, max_size=4).map(".".join)
key = st.one_of(st.just(""), domain, domain.map(lambda d: "." + d))
address = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str)
host = st.one_of(st.just(""), domain, address)
port = st.one_of(st.none(), st.integers(1, 65535))
tls = st.one_of(st.none(), st.sampled_from(smtproutes.TLS_POLICIES))
auth = st.one_of(st.just(("", "")), st.tuples(label, domain.map(lambda d: "/run/" + d)))
hostile = st.text(st.characters(codec="utf-8"), max_size=80) | st.text(":[]. \t#=/", max_size=30)


@settings(max_examples=200, deadline=None)
@given(hostile)
def test_any_text_parses_or_is_refused_cleanly(text: str) -> None:
    for line in text.splitlines() or [text]:
        if not line.split():
            continue
        try:
            route = parse_line(line)
        except RouteSyntaxError:
            continue
        assert route.port is None or 0 < route.port < 65536
        assert route.tls in (None, *smtproutes.TLS_POLICIES)
        assert " " not in route.host and ":" not in route.key
    parse(text)  # skips bad lines, never raises
    try:
        smtproutes.check(text)
    except RouteSyntaxError as exc:
        assert str(exc).startswith("line ")


@settings(max_examples=200, deadline=None)
@given(key, host, port, tls, auth)
def test_what_a_writer_formats_the_reader_reads_back(
        k: str, h: str, p: int | None, t: str | None, a: tuple[str, str]) -> None:
    if not h:
        p = None  # a port needs a host
    line = format_line(k, h, p, t, *a)
    smtproutes.check(line)  # what `mailyard route set` writes, the directory accepts
    route = parse_line(line)
    assert (route.key, route.port, route.tls, route.auth_user, route.auth_password_file) == \
        (k, p, t, *a)
    assert route.host == (str(ipaddress.ip_address(h)) if ":" in h else h)
    assert parse(line)[k] == route


@settings(max_examples=200, deadline=None)
@given(st.lists(label, min_size=1, max_size=5))
def test_most_specific_key_wins_whatever_the_line_order(labels: list[str]) -> None:
    name = ".".join(labels)
    suffixes = ["." + ".".join(labels[i:]) for i in range(1, len(labels))]
    lines = [":default.test"] + [f"{s}:via{len(s)}.test" for s in suffixes]
    # the exact domain, else the longest suffix, else the default
    expected = "default.test" if not suffixes else f"via{len(suffixes[0])}.test"
    for ordering in (lines, list(reversed(lines))):
        got = choose(parse("\n".join(ordering)), name.upper() + ".")
        assert got is not None and got.host == expected
    exact = choose(parse("\n".join([*lines, f"{name}:exact.test"])), name)
    assert exact is not None and exact.host == "exact.test"


@pytest.mark.parametrize("line", [
    "example.com:relay.test:", "example.com::25", "example.com:[::1", "example.com:[x]:25",
    "example.com:relay.test:0", "example.com:relay.test:٣", "exa_mple..com:relay.test",
    "example.com:relay.test tls=", "example.com:relay.test auth=u:rel/path", "nocolon",
    "example.com:relay.test extra",
])
def test_found_bad_lines_stay_refused(line: str) -> None:
    with pytest.raises(RouteSyntaxError):
        parse_line(line)
