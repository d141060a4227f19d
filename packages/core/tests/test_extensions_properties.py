"""Address extensions split under hostile local parts: the base is what precedes the first
delimiter, never empty, never holding a delimiter, and a local part with none (or one only
in the first place) has no base; the setting's check takes exactly what it documents."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.core import extensions

delimiter_sets = st.text(st.sampled_from(sorted(extensions.ALLOWED)), max_size=4)
locals_ = st.text(st.characters(codec="utf-8"), max_size=80) | st.text(
    "ab.+-_=~", max_size=20)


@settings(max_examples=500, deadline=200)
@given(locals_, delimiter_sets)
def test_the_base_is_the_part_before_the_first_delimiter(local: str, delimiters: str) -> None:
    base = extensions.base(local, delimiters)
    positions = [i for i, c in enumerate(local) if c in delimiters]
    if not positions or positions[0] == 0:
        assert base is None
        return
    assert base == local[:positions[0]]
    assert base and not any(c in delimiters for c in base)
    assert local.startswith(base) and local[len(base)] in delimiters


@settings(max_examples=300, deadline=200)
@given(st.text(st.characters(codec="utf-8"), max_size=12))
def test_a_setting_is_taken_exactly_when_it_is_a_few_distinct_allowed_characters(
        text: str) -> None:
    fine = (len(text) <= extensions.MAX_DELIMITERS and len(set(text)) == len(text)
            and set(text) <= extensions.ALLOWED)
    assert (extensions.problem(text) is None) == fine


def test_examples() -> None:
    assert extensions.base("joe+news", "+") == "joe"
    assert extensions.base("first-last+tag", "+-") == "first"   # the first, as Postfix
    assert extensions.base("+news", "+") is None                # nothing to deliver to
    assert extensions.base("joe+", "+") == "joe"
    assert extensions.base("joe.news", "+") is None
    assert extensions.base("joe+news", "") is None
