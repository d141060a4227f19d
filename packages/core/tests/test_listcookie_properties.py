"""The list command addresses and their cookies (mailyard.core.listcookie) under hostile
input: any extension parses to a command or None, never an exception; what the confirmation
address carries parses back to the same command; a cookie is valid only for what it was made
for, and only within ten days."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.core import listcookie
from mailyard.core.listcookie import SUBSCRIBE, UNSUBSCRIBE, Command, parse

alnum = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=10)
user = st.lists(alnum, min_size=1, max_size=3).map("-".join) | alnum.map(
    lambda a: a + "=x")
host = st.lists(alnum, min_size=2, max_size=4).map(".".join)
address = st.tuples(user, host).map("@".join)
action = st.sampled_from((SUBSCRIBE, UNSUBSCRIBE))
hostile = (st.text(st.characters(codec="utf-8"), max_size=80)
           | st.text("subnc.=-@x0f", max_size=40))
now = st.integers(10**9, 4 * 10**9)
secret = st.binary(min_size=16, max_size=32)
LIST = "news@example.com"


@settings(max_examples=300, deadline=500)
@given(hostile)
def test_any_extension_is_a_command_or_none(text: str) -> None:
    command = parse(text)
    if command is not None:
        assert command.action in (SUBSCRIBE, UNSUBSCRIBE)
        assert command.address == "" or command.address.count("@") == 1
        assert not command.cookie or listcookie.well_formed(command.cookie)


@settings(max_examples=200, deadline=500)
@given(secret, action, address, now)
def test_a_confirmation_address_reads_back_and_its_cookie_is_valid(
        key: bytes, act: str, who: str, t: int) -> None:
    cookie = listcookie.make(key, LIST, act, who, t)
    confirm = listcookie.confirm_address(LIST, "-", act, who, cookie)
    local = confirm.rpartition("@")[0]
    assert parse(local[len("news-"):]) == Command(act, who, cookie)
    assert listcookie.valid([b"other" * 4, key], LIST, act, who, cookie, t + 9 * 86400)
    assert parse(f"{act}-{who.replace('@', '=')}") == Command(act, who)


@settings(max_examples=200, deadline=500)
@given(secret, action, address, now, hostile)
def test_a_cookie_is_good_only_for_what_it_was_made_for(
        key: bytes, act: str, who: str, t: int, forged: str) -> None:
    cookie = listcookie.make(key, LIST, act, who, t)
    other = UNSUBSCRIBE if act == SUBSCRIBE else SUBSCRIBE
    assert not listcookie.valid([key], LIST, other, who, cookie, t)
    assert not listcookie.valid([key], "ads@example.com", act, who, cookie, t)
    assert not listcookie.valid([key], LIST, act, "x" + who, cookie, t)
    assert not listcookie.valid([key], LIST, act, who, cookie, t + 10 * 86400 + 1)
    assert not listcookie.valid([key], LIST, act, who, cookie, t - 3600)
    assert not listcookie.valid([], LIST, act, who, cookie, t)
    assert forged == cookie or not listcookie.valid([key], LIST, act, who, forged, t)


def test_return_and_ezmlms_verp_forms_of_it() -> None:
    from mailyard.core.listaddresses import is_return

    for extension in ("return", "return-12-bob=remote.test", "return-12-", "return+7"):
        assert is_return(extension), extension
    for extension in ("returns", "returned-1", "retur", "", "owner", "xreturn"):
        assert not is_return(extension), extension


@given(st.text(max_size=40), st.sampled_from("-+"))
def test_anything_after_return_and_a_delimiter_is_a_return(tail: str, delimiter: str) -> None:
    from mailyard.core.listaddresses import is_return

    assert is_return("return" + delimiter + tail)


@given(st.text(max_size=40))
def test_no_other_extension_is_a_return(extension: str) -> None:
    from mailyard.core.listaddresses import is_return

    if is_return(extension):
        assert extension == "return" or extension[:7] in ("return-", "return+")
