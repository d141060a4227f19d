"""A mailbox's vacation message (Mailbox.autoresponse) through gRPC, the HTTP API and the
`mailyard vacation` commands: stored where local-delivery reads it, and refused when a
subject or body could carry a header into the reply."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest

from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.api.directory.v1 import directory_pb2_grpc
from mailyard.cli.qmail_import.apply import Applier, Options
from mailyard.cli.qmail_import.plan import Sources, build
from mailyard.core import auth, bus
from mailyard.core.directory import DirectoryView
from mailyard.core.grpcserver import GrpcServer, service_name
from mailyard.directory.directory_service import DirectoryService
from mailyard.directory.store import KVStore
from mailyard.testing.grpccalls import status_of
from tests.qmail_tree import build as build_tree

from .conftest import code_of, wait_until
from .test_directory_cli import directory, run  # noqa: F401  (the fixture)
from .test_directory_http import Call, api  # noqa: F401  (the fixture)

Stub = directory_pb2_grpc.DirectoryStub


def _auto(**fields: Any) -> pb.Autoresponse:
    return pb.Autoresponse(enabled=True, **fields)


async def test_set_get_clear_autoresponse(example: Stub, reader: DirectoryView) -> None:
    await example.AddMailbox(pb.AddMailboxRequest(address="joe@example.com", password="x" * 9))
    auto = _auto(subject="Away  ", body="Back on Monday.\r\nJoe\r\n")
    auto.start.FromDatetime(datetime(2030, 7, 1, tzinfo=UTC))
    auto.end.FromDatetime(datetime(2030, 7, 15, tzinfo=UTC))
    mailbox = await example.SetAutoresponse(pb.SetAutoresponseRequest(
        address="Joe@Example.com", autoresponse=auto))
    assert mailbox.address == "joe@example.com" and mailbox.password_hash == "*"  # noqa: S105 (redacted)
    stored = mailbox.autoresponse
    assert (stored.subject, stored.body) == ("Away", "Back on Monday.\nJoe\n")
    assert stored.end.ToDatetime(tzinfo=UTC) == datetime(2030, 7, 15, tzinfo=UTC)

    got = await example.GetAutoresponse(pb.AddressRequest(address="joe@example.com"))
    assert got == stored
    await wait_until(reader, lambda: (m := reader.mailbox("joe@example.com")) is not None
                     and m.HasField("autoresponse"))
    assert reader.mailbox("joe@example.com").autoresponse == stored  # type: ignore[union-attr]

    cleared = await example.ClearAutoresponse(pb.AddressRequest(address="joe@example.com"))
    assert not cleared.HasField("autoresponse")
    assert await example.GetAutoresponse(pb.AddressRequest(address="joe@example.com")
                                         ) == pb.Autoresponse()


@pytest.mark.parametrize(("fields", "words"), [
    ({"subject": "Away\r\nBcc: victim@example.net", "body": "x"}, "subject"),
    ({"subject": "Away\x1b[2J", "body": "x"}, "subject"),
    ({"subject": "x" * 999, "body": "x"}, "subject"),
    ({"subject": "Away", "body": "a\x00b"}, "body"),
    ({"subject": "Away", "body": "x" * 70_000}, "body"),
    ({"subject": "Away", "body": ""}, "body"),
])
async def test_set_autoresponse_refuses_what_could_break_the_reply(
        example: Stub, fields: dict[str, str], words: str) -> None:
    await example.AddMailbox(pb.AddMailboxRequest(address="joe@example.com", password="x" * 9))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await example.SetAutoresponse(pb.SetAutoresponseRequest(
            address="joe@example.com", autoresponse=_auto(**fields)))
    assert code_of(info) == grpc.StatusCode.INVALID_ARGUMENT
    assert words in (info.value.details() or "")


async def test_autoresponse_end_before_start_and_unknown_mailbox(example: Stub) -> None:
    await example.AddMailbox(pb.AddMailboxRequest(address="joe@example.com", password="x" * 9))
    auto = _auto(body="x")
    auto.start.FromDatetime(datetime(2030, 7, 15, tzinfo=UTC))
    auto.end.FromDatetime(datetime(2030, 7, 1, tzinfo=UTC))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await example.SetAutoresponse(pb.SetAutoresponseRequest(address="joe@example.com",
                                                                autoresponse=auto))
    assert code_of(info) == grpc.StatusCode.INVALID_ARGUMENT
    assert "end" in (info.value.details() or "")
    for call in (example.SetAutoresponse(pb.SetAutoresponseRequest(
                     address="ann@example.com", autoresponse=_auto(body="x"))),
                 example.ClearAutoresponse(pb.AddressRequest(address="ann@example.com")),
                 example.GetAutoresponse(pb.AddressRequest(address="ann@example.com"))):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert code_of(info) == grpc.StatusCode.NOT_FOUND


async def test_a_read_token_sees_a_vacation_over_grpc_as_over_http(
        js: Any, tmp_path: Path) -> None:
    """GET /api/users/{address}/vacation is the read role's (a look, and ListMailboxes
    shows the same field to it), but its gRPC twin GetAutoresponse was the admin's alone:
    `mailyard vacation show` with a read token got PERMISSION_DENIED."""
    tokens = auth.write_table(tmp_path / "tokens")
    view = DirectoryView()
    await view.start(js)
    server = GrpcServer("127.0.0.1", 0, [(
        directory_pb2_grpc.add_DirectoryServicer_to_server,
        DirectoryService(KVStore(js, bus.KV_DIRECTORY), view),
        service_name(pb, "Directory"))], tmp_path / "tokens")
    await server.start()
    try:
        address = f"127.0.0.1:{server.port}"
        async with auth.aio_channel(address, tokens["admin"]) as admin_channel, \
                auth.aio_channel(address, tokens["read"]) as read_channel:
            admin, read = Stub(admin_channel), Stub(read_channel)
            await admin.AddDomain(pb.AddDomainRequest(name="example.com"))
            await admin.AddMailbox(pb.AddMailboxRequest(address="joe@example.com",
                                                        password="x" * 9))
            await admin.SetAutoresponse(pb.SetAutoresponseRequest(
                address="joe@example.com", autoresponse=_auto(body="Away.\n")))
            got = await read.GetAutoresponse(pb.AddressRequest(address="joe@example.com"))
            assert got.body == "Away.\n"
            assert await status_of(read.ClearAutoresponse(pb.AddressRequest(
                address="joe@example.com"))) == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await server.stop(0)
        await view.stop()


def test_vacation_over_http(api: tuple[Call, dict[str, str]]) -> None:  # noqa: F811
    call, tokens = api
    assert call("POST", "/domains", {"name": "example.com"})[0] == 201
    assert call("POST", "/users", {"address": "joe@example.com", "password": "x" * 9})[0] == 201
    status, body = call("PUT", "/users/joe@example.com/vacation", {
        "subject": "Away", "body": "Back soon.\n", "start": "2030-07-01T00:00:00Z",
        "end": "2030-07-15T00:00:00+02:00"})
    assert status == 200, body
    assert body["autoresponse"] == {"enabled": True, "subject": "Away", "body": "Back soon.\n",
                                    "start": "2030-07-01T00:00:00Z",
                                    "end": "2030-07-14T22:00:00Z"}
    assert call("GET", "/users/joe@example.com/vacation", token=tokens["read"]) == (
        200, body["autoresponse"])
    status, err = call("PUT", "/users/joe@example.com/vacation",
                       {"subject": "a\nBcc: x@example.net", "body": "x"})
    assert status == 400 and "subject" in err["detail"]
    assert call("PUT", "/users/joe@example.com/vacation", {"body": "x"},
                token=tokens["read"])[0] == 403
    status, page = call("GET", "/users?domain=example.com", token=tokens["read"])
    assert status == 200 and page["mailboxes"][0]["autoresponse"] == body["autoresponse"]
    status, body = call("DELETE", "/users/joe@example.com/vacation")
    assert status == 200 and "autoresponse" not in body
    assert call("GET", "/users/ann@example.com/vacation")[0] == 404


def test_vacation_commands(directory: str, capsys: Any,  # noqa: F811
                           monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    run(capsys, "domain", "add", "example.com")
    run(capsys, "user", "add", "joe@example.com", "--password-stdin", stdin="a long secret\n",
        monkeypatch=monkeypatch)
    text = tmp_path / "away.txt"
    text.write_text("Back on Monday.\nJoe\n")
    code, out, err = run(capsys, "vacation", "set", "joe@example.com", "--subject", "Away",
                         "--body-file", str(text), "--until", "2030-07-15")
    assert (code, err) == (0, "")
    assert out == ("joe@example.com\ton\tsubject=Away\tuntil=2030-07-15T00:00:00Z\n"
                   "Back on Monday.\nJoe\n")
    assert run(capsys, "vacation", "show", "joe@example.com")[1] == out
    code, out, _ = run(capsys, "vacation", "set", "joe@example.com", "--body-file", "-",
                       "--off", stdin="Gone.\n", monkeypatch=monkeypatch)
    assert (code, out) == (0, "joe@example.com\toff\tsubject=(Re: original)\nGone.\n")
    with pytest.raises(SystemExit) as exited:  # argparse's usage error, no traceback
        run(capsys, "vacation", "set", "joe@example.com", "--body", "x", "--from", "next week")
    assert exited.value.code == 2 and "argument --from: not an ISO 8601" in capsys.readouterr().err
    code, _, err = run(capsys, "vacation", "set", "joe@example.com", "--body-file",
                       str(tmp_path / "missing"))
    assert code == 1 and err.startswith("mailyard: ") and "Traceback" not in err
    # user list flags it as vacation show names it: on, off (kept, not sent), its window
    run(capsys, "user", "add", "ann@example.com", "--password-stdin", stdin="a long secret\n",
        monkeypatch=monkeypatch)
    run(capsys, "vacation", "set", "ann@example.com", "--body", "Away.", "--from",
        "2030-07-01", "--until", "2030-07-15")
    assert run(capsys, "user", "list", "example.com")[1].splitlines() == [
        "ann@example.com\tquota=none\tvacation=on\tvacation_from=2030-07-01T00:00:00Z"
        "\tvacation_until=2030-07-15T00:00:00Z\tmaildir=example.com/ann/Maildir",
        "joe@example.com\tquota=none\tvacation=off\tmaildir=example.com/joe/Maildir"]
    assert run(capsys, "vacation", "clear", "joe@example.com")[:2] == (
        0, "joe@example.com\tnone\n")
    assert "vacation" not in run(capsys, "user", "list", "example.com")[1].splitlines()[1]
    assert run(capsys, "vacation", "show", "joe@example.com")[1] == "joe@example.com\tnone\n"
    code, _, err = run(capsys, "vacation", "show", "bob@example.com")
    assert code == 1 and "NOT_FOUND" in err


def test_qmail_import_sets_and_clears_the_vacation_message(directory: str,  # noqa: F811
                                                           tmp_path: Path) -> None:
    tree = build_tree(tmp_path / "old")
    d = tree.domain_dir("example.test")
    tree.write("joe/.qmail", "|qmail-autoresponder ./autoresponse\n./Maildir/\n", d)
    tree.write("joe/autoresponse/message.txt", "Subject: Out of office\n\nAway.\n", d)
    sources = Sources(qmail_dir=tree.qmail, vpopmail_dir=tree.vpopmail, tcp_smtp=None,
                      open_smtp=tmp_path / "no-open-smtp")
    out = io.StringIO()
    Applier(build(sources, now=tree.now), Options(mail_dir=tmp_path / "mail"), out).run()
    assert "vacation joe@example.test: set\n" in out.getvalue()
    stub = directory_pb2_grpc.DirectoryStub(grpc.insecure_channel(directory))
    assert stub.GetAutoresponse(pb.AddressRequest(address="joe@example.test")) == \
        pb.Autoresponse(enabled=True, subject="Out of office", body="Away.\n")

    tree.write("joe/.qmail", "./Maildir/\n", d)  # turned off on the old host since
    out = io.StringIO()
    Applier(build(sources, now=tree.now), Options(mail_dir=tmp_path / "mail"), out).run()
    assert "vacation joe@example.test: cleared\n" in out.getvalue()
    assert stub.GetAutoresponse(pb.AddressRequest(address="joe@example.test")
                                ) == pb.Autoresponse()


async def test_text_with_no_break_spaces_and_emoji_sequences_is_taken(example: Stub) -> None:
    # NBSP (pasted from word processors, Latin-1 message files), ZWJ and variation selectors
    # (emoji sequences) are text; only what ends a line or controls a terminal is refused
    await example.AddMailbox(pb.AddMailboxRequest(address="joe@example.com", password="x" * 9))
    subject, body = "Férias\u00a0🏖\ufe0f", "Olá,\u00a0volto segunda. 👨\u200d👩\u200d👧\n"
    mailbox = await example.SetAutoresponse(pb.SetAutoresponseRequest(
        address="joe@example.com", autoresponse=_auto(subject=subject, body=body)))
    assert (mailbox.autoresponse.subject, mailbox.autoresponse.body) == (subject, body)
    for bad in ("a\u2028b", "a\x85b", "a\x1b[2Jb"):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await example.SetAutoresponse(pb.SetAutoresponseRequest(
                address="joe@example.com", autoresponse=_auto(subject=bad, body="x")))
        assert code_of(info) == grpc.StatusCode.INVALID_ARGUMENT
