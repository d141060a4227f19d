"""Property tests for the address parser (syntax.py), the first thing hostile input meets:
it never fails in any other way than a SyntaxProblem carrying a reply; what it accepts has
no control characters, and its domain is always what follows the last @ outside quotes, so
no quoting, %-hack or bang path can choose a route."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.smtp_ingress import replies as R
from mailyard.smtp_ingress.syntax import (
    ROUTING_CHARS,
    SyntaxProblem,
    parse_address,
    parse_params,
    split_path,
)

ADDRESS_REPLIES = {R.BAD_ADDRESS, R.BAD_RECIPIENT, R.ADDRESS_TOO_LONG,
                   R.ADDRESS_NOT_BRACKETED, R.ADDRESS_UNTERMINATED}
_ATEXT = st.text(st.sampled_from("abcXYZ019!#$%&'*+/=?^_`{|}~-"), min_size=1, max_size=12)
_LOCAL = st.lists(_ATEXT, min_size=1, max_size=3).map(".".join)
_LABEL = st.text(st.sampled_from("abcXYZ019"), min_size=1, max_size=10)
_DOMAIN = st.lists(_LABEL, min_size=1, max_size=4).map(".".join)
_HOSTILE = st.text(st.sampled_from('<>@"\\%!:,.[] \x00\r\n\t\x7fa\u00e9\U0001f600'),
                   max_size=40)


@settings(max_examples=200, deadline=None)
@given(raw=st.one_of(st.text(max_size=80), _HOSTILE), allow_empty=st.booleans())
def test_any_text_parses_or_gets_a_reply(raw: str, allow_empty: bool) -> None:
    try:
        path = parse_address(raw, allow_empty=allow_empty)
    except SyntaxProblem as exc:
        assert str(exc) in ADDRESS_REPLIES
        return
    assert not any(ord(c) < 32 or ord(c) == 127 for c in path.address)
    assert len(path.address.encode()) <= 320
    if path.domain:
        # the domain is what follows the last @ (a quoted local part may hold more @s)
        assert path.address.rpartition("@")[2].lower().rstrip(".") == path.domain
        assert path.address == f"{path.local}@{path.address.rpartition('@')[2]}"
    assert path.routing_local == any(c in path.local for c in ROUTING_CHARS)
    assert path.ascii == path.address.isascii()


@given(local=_LOCAL, domain=_DOMAIN)
def test_plain_addresses_round_trip(local: str, domain: str) -> None:
    path = parse_address(f"{local}@{domain}", allow_empty=False)
    assert (path.address, path.local, path.domain) == (f"{local}@{domain}", local,
                                                      domain.lower())


@given(local=_LOCAL, domain=_DOMAIN, escaped=st.booleans())
def test_a_quoted_dot_atom_is_the_plain_address(local: str, domain: str, escaped: bool
                                                 ) -> None:
    """A quoted "joe"@ or "j\\oe"@ is joe@ (RFC 5321 4.1.2): one form for the directory."""
    quoted = "".join(f"\\{c}" for c in local) if escaped else local
    assert parse_address(f'"{quoted}"@{domain}', allow_empty=False) == parse_address(
        f"{local}@{domain}", allow_empty=False)


@given(local=_LOCAL, domain=_DOMAIN, trick=st.sampled_from(["%", "!", "@"]),
       other=_DOMAIN)
def test_routing_tricks_never_move_the_domain(local: str, domain: str, trick: str,
                                              other: str) -> None:
    """user%other@domain, other!user@domain, "user@other"@domain: the domain stays."""
    for raw in (f"{local}{trick}{other}@{domain}", f'"{local}{trick}{other}"@{domain}'):
        try:
            path = parse_address(raw, allow_empty=False)
        except SyntaxProblem:
            continue
        assert path.domain == domain.lower() and path.routing_local


@settings(max_examples=150, deadline=None)
@given(text=st.one_of(st.text(max_size=60), _HOSTILE))
def test_split_path_and_params_never_crash(text: str) -> None:
    try:
        inside, rest = split_path(text)
    except SyntaxProblem as exc:
        assert str(exc) in ADDRESS_REPLIES
    else:
        assert text.lstrip(" ").startswith("<") and ">" in text
        assert len(inside) + len(rest) < len(text)
    params = parse_params(text)
    assert all(key == key.upper() for key in params)


@given(local=_LOCAL, domain=_DOMAIN,
       params=st.dictionaries(st.sampled_from(["SIZE", "BODY", "SMTPUTF8"]),
                              st.text(st.sampled_from("0189ABIT"), max_size=6), max_size=3))
def test_path_with_parameters(local: str, domain: str, params: dict[str, str]) -> None:
    words = " ".join(f"{k}={v}" if v else k for k, v in params.items())
    inside, rest = split_path(f"<{local}@{domain}> {words}")
    assert inside == f"{local}@{domain}" and parse_params(rest) == params


def _is_domain(name: str) -> bool:
    """The rule _DOMAIN stands for, label by label: letters, digits, non-ASCII and hyphens,
    never a hyphen first; one final dot allowed."""
    labels = (name[:-1] if name.endswith(".") else name).split(".")
    return all(label and label[0] != "-" and all(not c.isascii() or c.isalnum() or c == "-"
                                                 for c in label) for label in labels)


@settings(max_examples=300, deadline=None)
@given(name=st.text(st.sampled_from("aZ9-.!\u00e9"), min_size=1, max_size=250))
def test_the_domain_check_is_the_label_rule_in_one_pass(name: str) -> None:
    # long names that fail at the end once took exponential time (test_input.py has one)
    try:
        parse_address(f"x@{name}", allow_empty=False)
        accepted = True
    except SyntaxProblem as exc:
        assert str(exc) == R.BAD_ADDRESS
        accepted = False
    assert accepted == _is_domain(name)
