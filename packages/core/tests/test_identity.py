"""control/me and control/postmaster: parsing (hostile input) and the hot accessor."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailyard.core.control import ControlView
from mailyard.core.identity import Identity, hostname_problem, parse_me, parse_postmaster


def _view(**files: str) -> ControlView:
    view = ControlView()
    for name, text in files.items():
        view._apply(name, text.encode(), "PUT", 1)
    return view


@given(st.text(max_size=300))
def test_parsers_never_raise_anything_but_value_error(text: str) -> None:
    for parse in (parse_me, parse_postmaster):
        try:
            value = parse(text)
        except ValueError:
            continue
        assert value == value.strip() and value.isascii() and "\n" not in value


@pytest.mark.parametrize("name", ["mail.example\n.net", "mail\n.example.net", "a.b-\n.net"])
def test_a_label_ending_in_a_line_break_is_no_host_name(name: str) -> None:
    # `mailyard up --me` takes one value, not lines: re.match with "$" let a label end in "\n"
    assert hostname_problem(name) == f"not a valid host name: {name!r}"


@pytest.mark.parametrize("text", ["Mail.Example.NET.\n", "# ours\nmail.example.net\n",
                                  "bücher.example\n"])
def test_me_is_canonical(text: str) -> None:
    assert parse_me(text) in ("mail.example.net", "xn--bcher-kva.example")


def test_identity_follows_the_control_view() -> None:
    view = _view()
    ident = Identity(view, "localhost")
    assert (ident.me, ident.postmaster, ident.me_is_set) == (
        "localhost", "postmaster@localhost", False)
    view._apply("me", b"mail.example.net\n", "PUT", 2)
    assert (ident.me, ident.postmaster) == ("mail.example.net", "postmaster@mail.example.net")
    view._apply("postmaster", b"pm@admin.example\n", "PUT", 3)
    assert ident.postmaster == "pm@admin.example"
    view._apply("me", b"localhost\n", "PUT", 4)  # written around the validator: ignored
    assert ident.me == "localhost" and not ident.me_is_set
    view._apply("postmaster", None, "DEL", 5)
    assert ident.postmaster == "postmaster@localhost"


def test_deliverable() -> None:
    ident = Identity(_view(me="mail.example.net\n"), "fallback.example")
    hosted = {"example.com"}.__contains__
    assert not ident.deliverable("postmaster@localhost", hosted)
    assert not ident.deliverable("postmaster@mail.example.net", hosted)
    assert not ident.deliverable("postmaster@mx", hosted)
    assert ident.deliverable("postmaster@example.com", hosted)
    assert ident.deliverable("hostmaster@example.org", hosted)
    assert ident.deliverable("postmaster@mail.example.net", {"mail.example.net"}.__contains__)
