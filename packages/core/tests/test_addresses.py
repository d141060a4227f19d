"""to_ascii_domain: the A-label every service computes for DNS, routes and directory keys;
normalise_local: the form local parts are matched in."""

from __future__ import annotations

import unicodedata

import idna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.core.addresses import normalise_local, to_ascii_domain
from mailyard.core.directory import canonical


# IDNA 2003 (Python's "idna" codec) maps these away; IDNA 2008, the registries, browsers and
# other MTAs keep them. Mail for joe@straße.de went to the MX of strasse.de, another domain.
@pytest.mark.parametrize(("name", "a_label"), [
    ("straße.de", "xn--strae-oqa.de"),
    ("STRAẞE.de", "xn--strae-oqa.de"),
    ("σοφός.gr", "xn--0xagbn4a.gr"),  # final sigma kept (IDNA 2003: xn--0xahbl4a)
    ("Bücher.Example.", "xn--bcher-kva.example."),
    ("\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45\u3002com", "example.com"),  # full width
])
def test_a_unicode_name_is_its_idna_2008_a_label(name: str, a_label: str) -> None:
    assert to_ascii_domain(name) == a_label


@given(st.text(alphabet=st.characters(codec="ascii"), max_size=80))
def test_an_ascii_name_is_only_lowered(name: str) -> None:
    assert to_ascii_domain(name) == name.lower()


@given(st.text(min_size=1, max_size=40).filter(lambda s: not s.isascii()))
def test_a_unicode_name_is_idna_2008_or_itself_lowered(name: str) -> None:
    try:
        expected = idna.encode(name, uts46=True, transitional=False).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        expected = name
    assert to_ascii_domain(name) == expected.lower()


# -- local parts: matched lower-cased and, when not ASCII, in NFC (RFC 6530 section 10.1) ----

NFC_NFD = [("jos\u00e9", "jose\u0301"), ("J\u00f6rg", "jo\u0308rg"), ("\u00c5sa", "A\u030asa"),
           ("\uac00\ub098", "\u1100\u1161\u1102\u1161")]  # Hangul syllables and their jamo


@pytest.mark.parametrize(("composed", "decomposed"), NFC_NFD)
def test_composed_and_decomposed_local_parts_are_one_address(composed: str,
                                                             decomposed: str) -> None:
    assert normalise_local(decomposed) == normalise_local(composed) == composed.lower()
    assert canonical(f"{decomposed}@Example.COM") == f"{composed.lower()}@example.com"


@settings(deadline=500)
@given(st.text(max_size=64))
def test_normalise_local_is_idempotent_and_nfc(local: str) -> None:
    once = normalise_local(local)
    assert normalise_local(once) == once
    assert unicodedata.is_normalized("NFC", once)


@settings(deadline=500)
@given(st.text(max_size=64))
def test_every_normal_form_of_a_local_part_is_one_address(local: str) -> None:
    forms = {unicodedata.normalize(f, local) for f in ("NFC", "NFD")}
    assert len({normalise_local(form) for form in forms}) == 1


@settings(deadline=500)
@given(st.text(alphabet=st.characters(codec="ascii"), max_size=64))
def test_an_ascii_local_part_is_only_lowered(local: str) -> None:
    assert normalise_local(local) == local.lower()
