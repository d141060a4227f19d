"""SRS (mailyard.core.srs): addresses as libsrs2/postsrsd write them, reversed only with our
secret and within 21 days; and under hostile local parts the parser either reverses or
raises SrsError, nothing else."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.core import srs
from mailyard.core.srs import SrsError

SECRET = b"s3cret"
OLD = b"older secret"
NOW = 1_780_000_000.0  # a fixed day
DAY = 86400


def test_srs0_is_the_shevek_form_and_reverses() -> None:
    address = srs.forward("joe@paypal.test", "fwd.test", [SECRET], NOW)
    local, _, domain = address.rpartition("@")
    tag, digest, stamp, orig_domain, orig_local = local.split("=")
    assert (tag, orig_domain, orig_local, domain) == ("SRS0", "paypal.test", "joe", "fwd.test")
    day = int(NOW // DAY) % 1024
    assert stamp == "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[day >> 5] + \
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[day & 31]
    mac = hmac.new(SECRET, f"{stamp}paypal.testjoe".lower().encode(), hashlib.sha1).digest()
    assert digest == base64.b64encode(mac).decode()[:4]
    assert srs.reverse(address, [SECRET], NOW) == "joe@paypal.test"
    # the hash is compared without case (an MTA that lower-cases local parts)
    assert srs.reverse(address.lower(), [SECRET], NOW) == "joe@paypal.test"


def test_forged_expired_and_rotated() -> None:
    address = srs.forward("joe@paypal.test", "fwd.test", [SECRET], NOW)
    with pytest.raises(SrsError, match="hash"):
        srs.reverse(address, [b"another"], NOW)
    forged = address.replace("paypal.test", "victim.test")
    with pytest.raises(SrsError, match="hash"):
        srs.reverse(forged, [SECRET], NOW)
    assert srs.reverse(address, [SECRET], NOW + 21 * DAY) == "joe@paypal.test"
    with pytest.raises(SrsError, match="expired"):
        srs.reverse(address, [SECRET], NOW + 22 * DAY)
    # made under the previous secret: still reversed after a new one is put in front
    assert srs.reverse(address, [b"newer", SECRET], NOW) == "joe@paypal.test"


def test_srs1_for_a_reforwarded_srs0_address() -> None:
    first = srs.forward("joe@paypal.test", "a.test", [OLD], NOW)
    second = srs.forward(first, "b.test", [SECRET], NOW)
    assert second.startswith("SRS1=") and second.endswith("=a.test==" + first[5:].split(
        "@")[0] + "@b.test")
    assert srs.reverse(second, [SECRET], NOW) == first
    third = srs.forward(second, "c.test", [b"third"], NOW)
    assert third.startswith("SRS1=") and "=a.test==" in third and third.endswith("@c.test")
    assert srs.reverse(third, [b"third"], NOW) == first
    with pytest.raises(SrsError):
        srs.reverse(second, [OLD], NOW)


def test_prefix_test() -> None:
    assert srs.is_srs("SRS0=abcd") and srs.is_srs("srs1+x") and srs.is_srs("Srs0-x")
    assert not srs.is_srs("srs0") and not srs.is_srs("joe") and not srs.is_srs("srs2=x")


local_chars = st.text(st.characters(codec="utf-8"), max_size=80)
hostile = st.one_of(
    local_chars,
    st.text("SRS01=+-abcdAB@.\"\\ ", max_size=40),
    st.builds(lambda p, s, r: p + s + r, st.sampled_from(["SRS0", "srs1", "SRS1", "sRs0"]),
              st.sampled_from("=+-"), st.text("=ABCDEFabc234@.x-+", max_size=40)))


@settings(max_examples=500, deadline=200)
@given(hostile)
def test_hostile_local_parts_reverse_or_raise_srs_error(local: str) -> None:
    try:
        original = srs.reverse(f"{local}@fwd.test", [SECRET], NOW)
    except SrsError:
        return
    assert isinstance(original, str) and "@" in original


@settings(max_examples=200, deadline=200)
@given(st.from_regex(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,30}", fullmatch=True),
       st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9]{1,10}){0,3}", fullmatch=True))
def test_every_sender_comes_back(local: str, domain: str) -> None:
    address = srs.forward(f"{local}@{domain}", "fwd.test", [SECRET], NOW)
    assert srs.is_srs(address.rpartition("@")[0])
    back = srs.reverse(address, [SECRET], NOW)
    if srs.is_srs(local) and local[:4].lower() == "srs0":
        assert back == f"SRS0{local[4:]}@{domain}"
    elif not srs.is_srs(local):
        assert back == f"{local}@{domain}"


@settings(max_examples=500, deadline=200)
@given(hostile)
def test_the_original_local_part_of_any_local_part_is_a_tail_of_it(local: str) -> None:
    """original_local() reads hostile local parts (any sender's) without raising, and
    answers a tail of the local part, the whole one when it is no SRS address."""
    original = srs.original_local(local)
    assert local.endswith(original) and (original or not local)
    if not srs.is_srs(local):
        assert original == local


@settings(max_examples=200, deadline=200)
@given(st.from_regex(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,30}", fullmatch=True))
def test_the_original_local_part_survives_srs0_and_srs1(local: str) -> None:
    if srs.is_srs(local):
        return
    first = srs.forward(f"{local}@paypal.test", "fwd.test", [OLD], NOW)
    second = srs.forward(first, "ours.test", [SECRET], NOW)
    for address in (first, second, second.lower()):
        assert srs.original_local(address.rpartition("@")[0]) in (local, local.lower())


@settings(max_examples=500, deadline=200)
@given(hostile, st.sampled_from(["fwd.test", "", "x@y.test"]))
def test_the_original_address_of_any_address(local: str, domain: str) -> None:
    """original() reads any address (a greylisted or answered sender's) without raising:
    the address itself when no SRS, else the author's local part at its domain."""
    address = f"{local}@{domain}"
    original = srs.original(address)
    if srs.original_local(address.rpartition("@")[0]) == address.rpartition("@")[0]:
        assert original == address
    else:
        assert original.startswith(srs.original_local(address.rpartition("@")[0]) + "@")


@settings(max_examples=200, deadline=200)
@given(st.from_regex(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,30}", fullmatch=True),
       st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9]{1,10}){0,3}", fullmatch=True),
       st.floats(NOW, NOW + 3000 * DAY))
def test_the_original_address_survives_srs0_and_srs1(local: str, domain: str, now: float
                                                     ) -> None:
    """Whichever day and secret made it, a forward and a re-forward give back the author."""
    if srs.is_srs(local):
        return
    first = srs.forward(f"{local}@{domain}", "fwd.test", [OLD], now)
    second = srs.forward(first, "ours.test", [SECRET], now)
    for address in (first, second):
        assert srs.original(address) == f"{local}@{domain}"
    assert srs.original(second.lower()) == f"{local}@{domain}".lower()


def test_the_original_address_of_an_srs0_without_a_domain_is_at_the_forwarder() -> None:
    assert srs.original("SRS0=AbCd=2A==joe@fwd.test") == "joe@fwd.test"
    assert srs.original("SRS0=AbCd=2A=orig.test=joe=x@fwd.test") == "joe=x@orig.test"
    assert srs.original("joe@orig.test") == "joe@orig.test"
    assert srs.original("SRS0=AbCd@fwd.test") == "SRS0=AbCd@fwd.test"
