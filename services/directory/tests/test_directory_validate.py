"""What operators type is checked before anything is written."""

from __future__ import annotations

import string

import idna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.directory import validate
from mailyard.directory.errors import Refused


@pytest.mark.parametrize(("raw", "expected"), [
    ("Example.COM", "example.com"),
    ("example.com.", "example.com"),
    ("Bücher.example", "xn--bcher-kva.example"),
    ("localhost", "localhost"),
])
def test_domains_become_lowercase_a_labels(raw: str, expected: str) -> None:
    assert validate.domain(raw) == expected


@pytest.mark.parametrize("raw", ["", "-bad.com", "bad-.com", "a..b", "a b.com", "1.2.3.4",
                                 "x" * 64 + ".com", "under_score.com", "a/b.com",
                                 "example\n.com", "a\n.b\n.com"])
def test_bad_domains_are_refused(raw: str) -> None:
    with pytest.raises(Refused):
        validate.domain(raw)


# A domain becomes a KV key, a folder on the mail volume and part of Delivered-To: lines and
# RCPT commands, so whatever is accepted is letters, digits, hyphens and dots only.
_LABELISH = st.text(alphabet=string.ascii_letters + string.digits + "-", min_size=1,
                   max_size=8)
_DOMAINISH = st.lists(st.tuples(_LABELISH, st.sampled_from(["", "", "\n", "\r", " ", "_"])
                                ).map("".join), min_size=1, max_size=4).map(".".join)


@settings(max_examples=500, deadline=None)
@given(st.one_of(_DOMAINISH, st.text(max_size=40)))
def test_an_accepted_domain_is_a_plain_host_name(raw: str) -> None:
    try:
        name = validate.domain(raw)
    except Refused:
        return
    assert name and set(name) <= set(string.ascii_lowercase + string.digits + "-."), name


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=string.ascii_letters + "\n\r\t .@<>", max_size=30))
def test_an_accepted_address_or_target_has_no_space_or_line_break(raw: str) -> None:
    for check in (validate.address, validate.target):
        try:
            value = check(raw)
        except Refused:
            continue
        assert not any(c.isspace() or c in "<>" for c in value), value


# IDNA 2003 (Python's codec, which every reader used) maps four characters away that
# IDNA 2008 keeps: "straße.de" became strasse.de, another registered domain than the
# xn--strae-oqa.de the world sends its mail to, so that mail never matched. Every reader
# now computes the IDNA 2008 name (core.addresses.to_ascii_domain).
@pytest.mark.parametrize(("raw", "ace"), [("straße.de", "xn--strae-oqa.de"),
                                          ("STRAẞE.de", "xn--strae-oqa.de"),
                                          ("ευχαριστώς.gr", "xn--mxahn5agfhds9e.gr")])
def test_a_domain_is_stored_under_its_idna_2008_name(raw: str, ace: str) -> None:
    assert validate.domain(raw) == validate.domain(ace) == ace
    assert validate.target(f"joe@{raw}") == f"joe@{ace}"


@pytest.mark.parametrize("raw", ["a\u200db.example", "a\u200cb.example"])
def test_a_joiner_without_its_context_is_refused(raw: str) -> None:
    with pytest.raises(Refused, match="not a valid domain name"):
        validate.domain(raw)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.text(alphabet="abcü-ßẞςσΣé\u200c\u200d", min_size=1, max_size=6),
                min_size=1, max_size=3).map(".".join))
def test_an_accepted_unicode_domain_is_the_idna_2008_name(raw: str) -> None:
    try:
        name = validate.domain(raw)
    except Refused:
        return
    try:
        idna_2008 = idna.encode(raw, uts46=True, transitional=False).decode()
    except idna.IDNAError:  # stricter about hyphens ("ab--c"): no name to compare with
        return
    assert name == idna_2008


@pytest.mark.parametrize(("raw", "expected"), [
    ("Joe@Example.com", "joe@example.com"),
    ("joe.smith+tag@example.com", "joe.smith+tag@example.com"),
    ("jörg@Bücher.example", "jörg@xn--bcher-kva.example"),
    ("joe@ Example.com", "joe@example.com"),
    ("joe@\texample.com.", "joe@example.com"),
])
def test_addresses_are_canonical(raw: str, expected: str) -> None:
    assert validate.address(raw) == expected


@pytest.mark.parametrize("raw", ["joe", "@example.com", "a/b@example.com", "../x@example.com",
                                 ".joe@example.com", "jo..e@example.com", "jo e@example.com",
                                 "joe@bad_domain", "x" * 65 + "@example.com",
                                 "joe@example\n.com"])
def test_bad_addresses_are_refused(raw: str) -> None:
    with pytest.raises(Refused):
        validate.address(raw)


def test_targets_keep_the_local_part_and_drop_duplicates() -> None:
    assert validate.targets(["Joe@Remote.ORG", "Joe@remote.org", "ann@x.org"]) == [
        "Joe@remote.org", "ann@x.org"]
    with pytest.raises(Refused):
        validate.targets([])


@pytest.mark.parametrize("name", ["", ".hidden", "a b", "../etc", "a..b", "trailing.",
                                  "düsseldorf", "a/b"])
def test_bad_control_names(name: str) -> None:
    with pytest.raises(Refused):
        validate.control_name(name)


def test_control_text_checks_known_files() -> None:
    assert validate.control_text("databytes", "20000000") == "20000000\n"
    assert validate.control_text("smtproutes", ":relay.example:25") == ":relay.example:25\n"
    assert validate.control_text("rcpthosts", ".example.com\nexample.com\n")
    for bad in ("0", "-1", "abc", "1 2", "", "10\n20"):
        with pytest.raises(Refused, match="positive integer"):
            validate.control_text("concurrencyremote", bad)
    with pytest.raises(Refused):
        validate.control_text("rcpthosts", "not a domain\n")


def test_sender_check_policies() -> None:
    assert validate.control_text("spfpolicy", "reject") == "reject\n"
    assert validate.control_text("dmarcpolicy", "tag\n") == "tag\n"
    for name, bad in (("spfpolicy", "rejct"), ("dmarcpolicy", ""), ("dmarcpolicy", "tag\nreject")):
        with pytest.raises(Refused, match=f"control/{name} must be one of"):
            validate.control_text(name, bad)


def test_greylist_files() -> None:
    assert validate.control_text("greylist", "300") == "300\n"
    assert validate.control_text("greylistexempt", "192.0.2.0/24\n2001:db8::/32\n")
    with pytest.raises(Refused, match="positive integer"):
        validate.control_text("greylist", "soon")
    # smtp-ingress starts a triplet over when it is not retried within a day, so a delay of
    # a day or more let no new sender through ever: refused, not stored
    assert validate.control_text("greylist", "86399") == "86399\n"
    for bad in ("86400", "90000", "999999999999"):
        with pytest.raises(Refused, match="below 86400"):
            validate.control_text("greylist", bad)
    with pytest.raises(Refused, match="not a network"):
        validate.control_text("greylistexempt", "192.0.2.0/24\nmail.example.com\n")


def test_rspamd_url() -> None:
    assert validate.control_text("rspamd", "http://127.0.0.1:11333") == "http://127.0.0.1:11333\n"
    for bad in ("127.0.0.1:11333", "http://a b", "ftp://x", "http://x/\nhttp://y/"):
        with pytest.raises(Refused, match="control/rspamd must be one URL"):
            validate.control_text("rspamd", bad)


def test_defaultdomain_is_one_domain() -> None:
    """vpopmail's default domain for bare login names: one domain name, nothing else."""
    assert validate.known_control_name("defaultdomain") == "defaultdomain"
    assert validate.control_text("defaultdomain", "example.com") == "example.com\n"
    assert validate.control_text("defaultdomain", "Bücher.example\n") == "Bücher.example\n"
    for bad in ("", "not a domain", "example.com\nexample.org", "joe@example.com",
                "192.0.2.1"):
        with pytest.raises(Refused, match="control/defaultdomain"):
            validate.control_text("defaultdomain", bad)
