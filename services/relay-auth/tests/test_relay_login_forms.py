"""Logins as vpopmail's vchkpw took them: `user%domain` for `user@domain`, bare names in the
default domain, always made canonical before the throttle, the login cache and the lease."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailyard.api.directory.v1 import directory_pb2 as dpb
from mailyard.api.relayauth.v1 import relayauth_pb2 as pb
from mailyard.core import bus
from mailyard.core.control import ControlView
from mailyard.core.directory import DirectoryView, domain_key
from mailyard.core.errors import SettingsError
from mailyard.relay_auth.auth import Authenticator, _canonical
from mailyard.relay_auth.pool import PasswordPool
from mailyard.relay_auth.settings import Settings
from mailyard.relay_auth.throttle import Throttle

USER, PASSWORD = "joe@example.org", "pw-joe-1"


def auth(user: str, password: str, ip: str = "192.0.2.30",
         protocol: str = "") -> pb.AuthenticateRequest:
    return pb.AuthenticateRequest(mechanism="PLAIN", username=user, password=password,
                                  client_ip=ip, protocol=protocol)


async def seed_domain(js: Any, name: str) -> None:
    kv = await bus.ensure_kv(js, bus.KV_DIRECTORY)
    await kv.put(domain_key(name), dpb.Domain(name=name).SerializeToString())


async def test_percent_stands_for_at_before_a_hosted_domain(
        start_relay: Any, js: Any, seed_mailbox: Any) -> None:
    await seed_domain(js, "example.org")
    await seed_mailbox(js, USER, PASSWORD)
    await seed_mailbox(js, "a%b@example.org", "pw-ab-1")
    relay = await start_relay()
    for login in ("joe%example.org", "Joe%Example.ORG"):
        ok = await relay.stub.Authenticate(auth(login, PASSWORD))
        assert ok.result == pb.AUTH_RESULT_OK and ok.user == USER, login
    # "%" in a real local part: with "@" nothing is rewritten; without, the last "%" splits
    for login in ("a%b@example.org", "a%b%example.org"):
        ok = await relay.stub.Authenticate(auth(login, "pw-ab-1"))
        assert ok.result == pb.AUTH_RESULT_OK and ok.user == "a%b@example.org", login
    # a domain not hosted here is no domain part: "joe%elsewhere.test" names nobody
    await seed_mailbox(js, "joe@elsewhere.test", PASSWORD)
    other = await relay.stub.Authenticate(auth("joe%elsewhere.test", PASSWORD))
    assert other.result == pb.AUTH_RESULT_BAD_CREDENTIALS


async def test_a_mailbox_login_with_percent_leases_the_canonical_user(
        start_relay: Any, js: Any, seed_mailbox: Any) -> None:
    await seed_domain(js, "example.org")
    await seed_mailbox(js, USER, PASSWORD)
    relay = await start_relay()
    ok = await relay.stub.Authenticate(auth("joe%example.org", PASSWORD, ip="192.0.2.31",
                                            protocol="pop3"))
    assert ok.result == pb.AUTH_RESULT_OK and ok.lease.user == USER


async def test_percent_and_at_logins_are_one_user_for_the_throttle(
        start_relay: Any, js: Any, seed_mailbox: Any) -> None:
    await seed_domain(js, "example.org")
    await seed_mailbox(js, USER, PASSWORD)
    relay = await start_relay(auth_fail_limit_pair=2, auth_fail_limit_ip=100,
                              auth_fail_limit_user=100, auth_delay_base=0)
    for _ in range(2):
        bad = await relay.stub.Authenticate(auth("joe%example.org", "guess", ip="192.0.2.32"))
        assert bad.result == pb.AUTH_RESULT_BAD_CREDENTIALS
    blocked = await relay.stub.Authenticate(auth(USER, PASSWORD, ip="192.0.2.32"))
    assert blocked.result == pb.AUTH_RESULT_THROTTLED


def _cache(result: str) -> float:
    from prometheus_client import REGISTRY
    return REGISTRY.get_sample_value("mailyard_relay_auth_cache_total",
                                     {"result": result}) or 0.0


async def test_every_form_of_a_login_is_one_entry_of_the_login_cache(
        start_relay: Any, js: Any, seed_mailbox: Any) -> None:
    """A client that logs in as "joe%example.org" after "joe@example.org" (or as "joe")
    is answered from the login cache: it keys on the canonical user, not the text."""
    await seed_domain(js, "example.org")
    await seed_mailbox(js, USER, PASSWORD)
    control = await bus.ensure_kv(js, bus.KV_CONTROL)
    await control.put("defaultdomain", b"example.org\n")
    relay = await start_relay()
    first = await relay.stub.Authenticate(auth(USER, PASSWORD))
    assert first.result == pb.AUTH_RESULT_OK
    hits = _cache("hit")
    for login in ("joe%example.org", "JOE/example.org", "joe"):
        ok = await relay.stub.Authenticate(auth(login, PASSWORD))
        assert ok.result == pb.AUTH_RESULT_OK and ok.user == USER, login
    assert _cache("hit") - hits == 3


async def test_other_separators_are_the_postmasters_choice(
        start_relay: Any, js: Any, seed_mailbox: Any) -> None:
    await seed_domain(js, "example.org")
    await seed_mailbox(js, USER, PASSWORD)
    default = await start_relay()
    ok = await default.stub.Authenticate(auth("joe/example.org", PASSWORD))
    assert ok.result == pb.AUTH_RESULT_OK and ok.user == USER
    relay = await start_relay(login_separators="%:")
    for login in ("joe%example.org", "joe:example.org"):
        ok = await relay.stub.Authenticate(auth(login, PASSWORD))
        assert ok.result == pb.AUTH_RESULT_OK and ok.user == USER, login
    off = await start_relay(login_separators="")
    refused = await off.stub.Authenticate(auth("joe%example.org", PASSWORD))
    assert refused.result == pb.AUTH_RESULT_BAD_CREDENTIALS


_POOL = PasswordPool(1, 0)
_VIEW = DirectoryView()
_VIEW.data[domain_key("example.org")] = dpb.Domain(name="example.org").SerializeToString()
_AUTH = Authenticator(_VIEW, Throttle(10, 5, 900), 300, _POOL, None, separators="%/")
_CONTROL = ControlView()
_CONTROL.data["defaultdomain"] = b"Example.ORG\n"
_DEFAULT = Authenticator(_VIEW, Throttle(10, 5, 900), 300, _POOL, None, separators="%/",
                         control=_CONTROL)


@settings(max_examples=500, deadline=1000)
@given(st.text(alphabet=st.sampled_from("aZ%@/.-ä\x00 \u2028xn--") | st.characters(),
               max_size=40))
@example("%example.org")
@example("a%")
@example("a%%example.org")
@example("x%\udcff")
def test_any_login_text_maps_to_one_name_or_none(text: str) -> None:
    """A client's login is hostile input: it never raises, a name with "@" is only the
    directory's form of itself, and a rewritten one names a hosted domain."""
    plain, user = _canonical(text), _AUTH.login(text)
    if "@" in plain or not plain:
        assert user == plain
    elif user != plain:
        local, _, domain = user.partition("@")
        assert domain == "example.org" and local
        assert plain in (f"{local}%{domain}", f"{local}/{domain}")
    # with a default domain: every name without "@" is a name in a hosted domain
    with_default = _DEFAULT.login(text)
    if "@" in plain or not plain:
        assert with_default == plain
    else:
        assert with_default.endswith("@example.org") and with_default.partition("@")[0]
        assert with_default == (user if user != plain else _canonical(f"{plain}@example.org"))


async def test_a_bare_name_is_in_the_default_domain(
        start_relay: Any, js: Any, seed_mailbox: Any, eventually: Any) -> None:
    """vpopmail's default domain: on a host with control/defaultdomain, "joe" is
    joe@<that domain>, for the check, the throttle and the lease alike; without it a bare
    name is no mailbox, as before."""
    await seed_domain(js, "example.org")
    await seed_mailbox(js, USER, PASSWORD)
    relay = await start_relay(auth_fail_limit_pair=2, auth_fail_limit_ip=100,
                              auth_fail_limit_user=100, auth_delay_base=0)
    off = await relay.stub.Authenticate(auth("joe", PASSWORD))
    assert off.result == pb.AUTH_RESULT_BAD_CREDENTIALS
    control = await bus.ensure_kv(js, bus.KV_CONTROL)
    await control.put("defaultdomain", b"Example.ORG\n")

    async def bare_login() -> pb.AuthenticateResponse | None:
        reply = await relay.stub.Authenticate(auth("Joe", PASSWORD, ip="192.0.2.40",
                                                   protocol="imap"))
        return reply if reply.result == pb.AUTH_RESULT_OK else None

    ok = await eventually(bare_login)
    assert ok.user == USER and ok.lease.user == USER
    for _ in range(2):
        bad = await relay.stub.Authenticate(auth("joe", "guess", ip="192.0.2.41"))
        assert bad.result == pb.AUTH_RESULT_BAD_CREDENTIALS
    blocked = await relay.stub.Authenticate(auth("joe%example.org", PASSWORD, ip="192.0.2.41"))
    assert blocked.result == pb.AUTH_RESULT_THROTTLED
    # a name with a hosted domain after "%" is that domain's, not the default's
    await seed_domain(js, "example.net")
    await seed_mailbox(js, "joe@example.net", "pw-net-1")
    net = await relay.stub.Authenticate(auth("joe%example.net", "pw-net-1"))
    assert net.result == pb.AUTH_RESULT_OK and net.user == "joe@example.net"
    await control.delete("defaultdomain")

    async def bare_refused() -> bool:
        reply = await relay.stub.Authenticate(auth("joe", PASSWORD, ip="192.0.2.42"))
        return reply.result == pb.AUTH_RESULT_BAD_CREDENTIALS

    await eventually(bare_refused)


@pytest.mark.parametrize("value", ["a", "0", "@", ".", "-", "_", " ", "%\t", "\u00e9"])
def test_a_separator_that_would_split_ordinary_names_is_refused(value: str) -> None:
    """A letter, digit, ".", "-" or "_" would split plain names ("jo.example.org" is not
    jo@example.org); "@" always separates. Refused at start, in one line."""
    with pytest.raises(SettingsError, match=r"MAILYARD_RELAYAUTH_LOGIN_SEPARATORS: .*login "
                       r"separators must be punctuation"):
        Settings.load(login_separators=value)
    assert Settings.load(login_separators="%/:").login_separators == "%/:"
