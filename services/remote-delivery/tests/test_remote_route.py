"""smtproutes parsing and choice (qmail's lookup order)."""

from __future__ import annotations

from mailyard.core.smtproutes import choose, format_line, parse, parse_line
from mailyard.remote_delivery.lookup import order

TABLE = """
# comment
example.com:relay.example.net
.example.com:sub-relay.example.net:2525
example.org:
:smarthost.example.net:587 tls=must auth=mailer:/run/secrets/smarthost
lit.test:[127.0.0.1]:2526 tls=none
bad line without colon
"""


def test_qmail_lookup_order() -> None:
    routes = parse(TABLE)
    assert choose(routes, "example.com").host == "relay.example.net"  # type: ignore[union-attr]
    sub = choose(routes, "a.b.example.com")
    assert sub is not None and (sub.host, sub.port) == ("sub-relay.example.net", 2525)
    mx = choose(routes, "example.org")
    assert mx is not None and mx.uses_mx
    default = choose(routes, "elsewhere.test")
    assert default is not None and default.host == "smarthost.example.net"
    assert (default.port, default.tls, default.auth_user) == (587, "must", "mailer")
    assert default.auth_password_file == "/run/secrets/smarthost"  # noqa: S105
    lit = choose(routes, "LIT.test.")
    assert lit is not None and (lit.host, lit.port, lit.tls) == ("127.0.0.1", 2526, "none")


def test_no_default_means_mx() -> None:
    assert choose(parse("example.com:relay.test"), "other.test") is None


def test_secrets_are_never_inline() -> None:
    for line in (":h auth=user:secret", ":h auth=user", ":h tls=sometimes", ":h:99999"):
        assert parse(line) == {}
    assert parse_line(":h auth=u:/etc/pw").auth_password_file == "/etc/pw"  # noqa: S105


def test_format_line() -> None:
    assert format_line("example.com", "relay.test", 2525) == "example.com:relay.test:2525"
    assert format_line(".example.com", "::1") == ".example.com:[::1]"


def test_equal_preferences_are_shuffled_but_order_kept() -> None:
    records = [(20, "c"), (10, "a"), (10, "b"), (30, "d")]
    seen = set()
    for _ in range(200):
        ordered = order(records)
        assert [p for p, _ in ordered] == [10, 10, 20, 30]
        seen.add(tuple(h for _, h in ordered[:2]))
    assert seen == {("a", "b"), ("b", "a")}
