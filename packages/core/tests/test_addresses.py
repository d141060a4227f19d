"""to_ascii_domain: the A-label every service computes for DNS, routes and directory keys."""

from __future__ import annotations

import idna
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailyard.core.addresses import to_ascii_domain


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
