"""The day's bound of confirmation requests counts the mailbox an address reaches, computed
from an address anyone can ask for: it never raises, is the same for every spelling of one
mailbox (case, "+" sub-address, U-label or A-label, a final dot) and a fixed point."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailyard.local_delivery.subscribe_limit import address_key, mailbox

PART = st.text(alphabet=st.sampled_from(list("aZ09.-+=_é\u00df\u0130")) |
               st.characters(blacklist_categories=("Cs",)), max_size=30)


@settings(max_examples=400, deadline=2000)
@given(PART, PART, PART.filter(lambda d: "@" not in d))  # as listcookie's user=host gives
@example("victim", "1", "bücher.example")
@example("+", "", "")
def test_every_spelling_of_a_mailbox_is_one(local: str, tag: str, domain: str) -> None:
    address = f"{local}@{domain}"
    box = mailbox(address)
    assert mailbox(box) == box
    assert address_key(address) == address_key(box)
    if local and "+" not in local and "@" not in local + tag:
        assert mailbox(f"{local}+{tag}@{domain}") == box
        assert mailbox(f"{local}@{domain}.") == box or domain.endswith(".")


def test_known_spellings() -> None:
    assert {mailbox(a) for a in ("Victim@Bücher.example", "victim+x@xn--bcher-kva.example.",
                                 "victim+@BÜCHER.EXAMPLE")} == {"victim@xn--bcher-kva.example"}
    assert mailbox("first-last@else.test") != mailbox("first@else.test")
