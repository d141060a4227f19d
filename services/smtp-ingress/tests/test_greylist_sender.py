"""The sender greylisting keys its triplet by (greylist_sender.key_sender): the one behind
its SRS, BATV and VERP rewriting; and any string, hostile or not, gives a key without
raising (the sender is the client's choice)."""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mailyard.core import batv, srs
from mailyard.smtp_ingress.greylist_sender import key_sender

SECRET = b"their secret"
NOW = 1_780_000_000.0
# not starting with "=": btv1==TAG==user has separators to spare, so "=" after a tag is one
_LOCAL = st.from_regex(r"[A-Za-z0-9.!#$%&'*+/?^_`{|}~-][A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{0,29}",
                       fullmatch=True)
_DOMAIN = st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9]{1,10}){0,3}", fullmatch=True)
_TAG = st.from_regex(r"[0-9]{4}[0-9a-f]{6}", fullmatch=True)


def test_examples() -> None:
    assert key_sender("") == ""
    assert key_sender("Joe@Orig.Test") == "joe@orig.test"
    assert key_sender("SRS0=AbCd=2A=orig.test=Joe@fwd.test") == "joe@orig.test"
    assert key_sender("prvs=1234abcdef=joe@orig.test") == "joe@orig.test"
    assert key_sender("prvs=1234abcdef=SRS0=AbCd=2A=orig.test=joe@fwd.test") == "joe@orig.test"
    assert key_sender("bounce-12345-bob=example.org@lists.test") == \
        "bounce-#-bob=example.org@lists.test"
    assert key_sender("joe+list-12@lists.test") == "joe@lists.test"
    assert key_sender("msg12345_7@lists.test") == "msg#_#@lists.test"


@settings(max_examples=500, deadline=200)
@given(st.one_of(st.text(max_size=100),
                 st.text("SRSsrs01=+-prvsbtv@.#0123456789abcdef\"\\ ", max_size=60)))
def test_any_sender_gives_a_key(sender: str) -> None:
    key = key_sender(sender)
    assert isinstance(key, str)
    local, at, _ = key.rpartition("@")
    if at:
        assert not any(c.isascii() and c.isdigit() for c in local) and "+" not in local
    else:
        assert key == sender.lower()


@settings(max_examples=300, deadline=200)
@given(_LOCAL, _DOMAIN, st.floats(NOW, NOW + 1000 * 86400), _TAG)
def test_srs_and_batv_leave_the_key_as_it_was(local: str, domain: str, now: float,
                                              tag: str) -> None:
    """Whatever day, forwarder or tag: the author's own key."""
    assume(not srs.is_srs(local) and batv.original_local(local) == local)
    sender = f"{local}@{domain}"
    first = srs.forward(sender, "fwd.test", [SECRET], now)
    second = srs.forward(first, "ours.test", [b"ours"], now)
    for rewritten in (first, second, f"prvs={tag}={local}@{domain}",
                      srs.forward(f"prvs={tag}={local}@{domain}", "fwd.test", [SECRET], now)):
        assert key_sender(rewritten) == key_sender(sender), rewritten


@settings(max_examples=300, deadline=200)
@given(st.text("abcxyz.-_=", max_size=10), st.text("abcxyz.-_=", max_size=10),
       st.from_regex(r"[0-9]{1,12}", fullmatch=True), st.from_regex(r"[0-9]{1,12}", fullmatch=True),
       _DOMAIN)
def test_a_number_in_the_local_part_leaves_the_key_as_it_was(
        before: str, after: str, one: str, other: str, domain: str) -> None:
    assert key_sender(f"{before}{one}{after}@{domain}") == \
        key_sender(f"{before}{other}{after}@{domain}")
