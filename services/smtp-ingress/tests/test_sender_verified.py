"""sender_verified.verified: SPF for MAIL FROM, or DKIM aligned (organizational domain)
with the envelope sender's domain; anything else, or hostile input, is not verified."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailyard.smtp_ingress.dkim_verify import DkimResult
from mailyard.smtp_ingress.sender_verified import unverified, verified
from mailyard.smtp_ingress.spf_check import SpfResult


def spf(result: str, domain: str, identity: str = "mailfrom") -> SpfResult:
    return SpfResult(result, domain, identity)


def test_spf_for_mail_from_verifies_and_helo_does_not() -> None:
    assert verified("a@x.example", spf("pass", "x.example"), [])
    assert verified("a@X.Example.", spf("pass", "x.example"), [])
    assert not verified("a@x.example", spf("pass", "helo.example", "helo"), [])
    assert not verified("a@x.example", spf("softfail", "x.example"), [])
    assert not verified("a@x.example", spf("pass", "other.example"), [])
    assert not verified("a@x.example", None, [])


def test_dkim_aligned_with_the_senders_organizational_domain() -> None:
    assert verified("a@x.example", None, [DkimResult("pass", "x.example")])
    assert verified("a@mail.x.example", None, [DkimResult("pass", "x.example")])
    assert verified("a@x.example", None, [DkimResult("pass", "news.x.example")])
    assert verified("a@x.co.uk", None, [DkimResult("pass", "mail.x.co.uk")])
    assert not verified("a@x.co.uk", None, [DkimResult("pass", "y.co.uk")])  # a suffix
    assert not verified("a@x.example", None, [DkimResult("fail", "x.example")])
    assert not verified("a@x.example", None, [DkimResult("pass", "y.example"),
                                              DkimResult("temperror", "x.example")])


def test_an_idn_sender_matches_its_a_label() -> None:
    assert verified("j\u00f6rg@b\u00fccher.example", spf("pass", "xn--bcher-kva.example"), [])
    assert verified("a@xn--bcher-kva.example", None,
                    [DkimResult("pass", "b\u00fccher.example")])


def test_the_null_sender_has_nothing_to_bounce_to() -> None:
    assert verified("", None, [])


@given(st.text(max_size=80), st.text(max_size=40), st.text(max_size=40))
def test_hostile_addresses_and_domains_give_an_answer(sender: str, spf_domain: str,
                                                      d: str) -> None:
    assert verified(sender, spf("pass", spf_domain), [DkimResult("pass", d)]) in (True, False)


def test_only_a_sender_known_not_verified_is_marked() -> None:
    """A DNS timeout, or no SPF check at all, leaves the sender unmarked: a resolver outage
    must not silence every bounce."""
    assert unverified("a@x.example", spf("fail", "x.example"), [])
    assert unverified("a@x.example", spf("none", "x.example"), [DkimResult("fail", "x.example")])
    assert not unverified("a@x.example", spf("pass", "x.example"), [])
    assert not unverified("a@x.example", spf("temperror", "x.example"), [])
    assert not unverified("a@x.example", None, [])
    assert not unverified("a@x.example", spf("none", "x.example"),
                          [DkimResult("temperror", "x.example")])
    assert not unverified("", spf("none", "helo.example", "helo"), [])
