"""The author behind a sender's BATV tag and SRS wrapping (mailyard.core.sender_author), in
either order; and any string gives an answer without raising (senders are hostile)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.core import batv, srs
from mailyard.core.sender_author import author


@pytest.mark.parametrize(("sender", "expected"), [
    ("", ""), ("postmaster", "postmaster"), ("Ann@Remote.Test", "Ann@Remote.Test"),
    ("prvs=0123a1b2c3=ann@remote.test", "ann@remote.test"),
    ("SRS0=HhHh=TT=remote.test=ann@fwd.test", "ann@remote.test"),
    ("SRS1=GgGg=fwd.test==HhHh=TT=remote.test=ann@second.test", "ann@remote.test"),
    ("SRS0=HhHh=TT=remote.test=prvs=0123a1b2c3=ann@fwd.test", "ann@remote.test"),
    ("prvs=0123a1b2c3=SRS0=HhHh=TT=remote.test=ann@fwd.test", "ann@remote.test"),
    ("prvs=0123a1b2c3=bounce-1-bob=example.org@lists.test", "bounce-1-bob=example.org@lists.test"),
])
def test_the_author(sender: str, expected: str) -> None:
    assert author(sender) == expected


@settings(max_examples=500, deadline=200)
@given(st.one_of(st.text(max_size=100),
                 st.text("SRSsrs01=+-prvsbtv@.0123456789abcdef\"\\ ", max_size=60)))
def test_any_sender_gives_an_author(sender: str) -> None:
    found = author(sender)
    assert ("@" in found) == ("@" in sender)
    local = sender.rpartition("@")[0]
    if "@" in sender and not srs.is_srs(batv.original_local(local)):
        # no SRS: the domain stays, the local part is the one behind a tag (or itself)
        assert found == f"{batv.original_local(local)}@{sender.rpartition('@')[2]}"
