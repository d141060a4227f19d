"""BATV (mailyard.core.batv): the user behind the tag in each form seen in the field, and
any local part, however hostile, gives a part of itself without raising."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.core import batv


@pytest.mark.parametrize(("local", "user"), [
    ("prvs=1234abcdef=joe", "joe"),
    ("PRVS=1234ABCDEF=Joe", "Joe"),
    ("prvs=joe=1234abcdef", "joe"),              # the order of early implementations
    ("prvs=newsletter=1234abcdef", "newsletter"),
    ("prvs=1234abcdef=newsletter", "newsletter"),  # postgrey's 10-alphanumeric test fails here
    ("msprvs1=19123AbCdEfGh=bounces-joe", "bounces-joe"),
    ("btv1==0f45a4d6a8f==joe", "joe"),
    ("prvs=1234abcdef=bounce-1-bob=example.org", "bounce-1-bob=example.org"),
    # no BATV, or nothing behind the tag: the local part as it is
    ("joe", "joe"), ("prvs", "prvs"), ("prvs=", "prvs="), ("prvs=1234abcdef", "prvs=1234abcdef"),
    ("prvs=1234abcdef=", "prvs=1234abcdef="), ("btv1====", "btv1===="), ("prvsx=a=b", "prvsx=a=b"),
    ("xprvs=a=b", "xprvs=a=b"),
])
def test_the_user_behind_the_tag(local: str, user: str) -> None:
    assert batv.original_local(local) == user


hostile = st.one_of(
    st.text(max_size=80),
    st.builds(lambda p, r: p + r,
              st.sampled_from(["prvs=", "PRVS=", "msprvs1=", "btv1=", "btv1==", "prvs9="]),
              st.text("=0123456789abcdefXYZ+-.@", max_size=40)))


@settings(max_examples=500, deadline=200)
@given(hostile)
def test_any_local_part_gives_a_part_of_itself(local: str) -> None:
    user = batv.original_local(local)
    assert user in local and (user or not local)
    if not local.lower().startswith(("prvs", "msprvs", "btv")):
        assert user == local
