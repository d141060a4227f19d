"""Dovecot's dict protocol as the bridge parses it: hostile lines never crash the parser
(only ProtocolError), escaping round-trips, and the socket server closes on garbage but
answers lookups in order."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailyard.core.errors import SettingsError
from mailyard.mail_access import dictproto
from mailyard.mail_access.dictserver import DictServer


@given(st.binary(max_size=300))
def test_any_line_parses_or_is_refused(line: bytes) -> None:
    try:
        request = dictproto.parse(line)
    except dictproto.ProtocolError:
        return
    assert isinstance(request, dictproto.Hello | dictproto.Lookup)


# Lines shaped like requests (a command letter, tab-separated fields), so the field checks are
# reached: ASCII digits, other scripts' digits and superscripts (str.isdigit() is true for
# each), escapes.
_field = st.text(st.sampled_from("0123456789\u0663\u00b2\u00b3\u2460\x01t"))
_request = st.tuples(st.sampled_from("HLX"), st.lists(_field, max_size=6)).map(
    lambda t: (t[0] + "\t".join(t[1])).encode())


@given(_request)
def test_any_request_shaped_line_parses_or_is_refused(line: bytes) -> None:
    try:
        request = dictproto.parse(line)
    except dictproto.ProtocolError:
        return
    assert isinstance(request, dictproto.Hello | dictproto.Lookup)


@given(st.text())
def test_escape_round_trips_and_leaves_no_separator(text: str) -> None:
    escaped = dictproto.escape(text)
    assert "\t" not in escaped and "\n" not in escaped
    assert dictproto.unescape(escaped) == text


def test_what_dovecot_2_3_sends() -> None:
    assert dictproto.parse(b"H3\t2\t0\t\tmailyard") == dictproto.Hello(3, 2, "mailyard")
    key = "shared/passdb/pop3/127.0.0.1/a@b.test/pa\tss"
    lookup = dictproto.parse(b"L" + dictproto.escape(key).encode() + b"\ta@b.test")
    assert lookup == dictproto.Lookup(key, "a@b.test")
    # A Latin-1 password: answered (by the bridge: not found), not a reason to hang up.
    assert dictproto.parse(b"Lk/p\xe4ss\tu") == dictproto.Lookup("k/p\udce4ss", "u")
    for bad in (b"", b"H9\t0", b"Hx\t0", b"L", b"Ifoo", b"L\x01z",
                b"L" + b"k" * (dictproto.MAX_LINE + 1)):
        with pytest.raises(dictproto.ProtocolError):
            dictproto.parse(bad)


async def test_server_answers_in_order_and_drops_bad_clients(tmp_path: Path) -> None:
    async def answer(key: str) -> bytes:
        if key == "slow":
            await asyncio.sleep(0.05)
        return dictproto.found(key)

    server = DictServer(tmp_path / "auth.sock", answer)
    await server.start()
    try:
        assert (tmp_path / "auth.sock").stat().st_mode & 0o777 == 0o600
        reader, writer = await asyncio.open_unix_connection(tmp_path / "auth.sock")
        writer.write(b"H3\t2\t0\t\tmailyard\nLslow\tu\nLfast\tu\n")
        assert await reader.readline() == b"Oslow\n"
        assert await reader.readline() == b"Ofast\n"
        writer.write(b"Xnonsense\n")
        assert await reader.read() == b""  # closed, no answer
        writer.close()

        reader, writer = await asyncio.open_unix_connection(tmp_path / "auth.sock")
        writer.write(b"Lkey\n")  # a lookup before hello
        assert await reader.read() == b""
        writer.close()
    finally:
        await server.stop()
    assert not (tmp_path / "auth.sock").exists()


async def test_a_file_where_the_socket_goes_is_not_removed(tmp_path: Path) -> None:
    """A stale socket of a killed bridge is replaced; anything else at AUTH_SOCKET (a typo
    naming a real file) is not deleted: the bridge refuses to start and says why."""
    async def answer(key: str) -> bytes:
        return dictproto.NOT_FOUND

    path = tmp_path / "auth.sock"
    path.write_bytes(b"precious")
    with pytest.raises(SettingsError, match="exists and is not a socket"):
        await DictServer(path, answer).start()
    assert path.read_bytes() == b"precious"

    path.unlink()
    stale = DictServer(path, answer)
    await stale.start()
    assert stale.server is not None
    stale.server.close()  # killed: its socket stays behind
    await stale.server.wait_closed()
    assert path.exists()
    server = DictServer(path, answer)
    await server.start()
    await server.stop()
