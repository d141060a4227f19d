# ruff: noqa: S106  (fixed test passwords)
"""Address extensions (recipient_delimiter): joe+news@ is joe@ when no joe+news@ exists;
the setting is one directory record every service watches."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from mailyard.api.directory.v1 import directory_pb2 as pb

from .conftest import code_of, wait_until


async def test_an_extension_reaches_the_address_without_it(example: Any, reader: Any
                                                           ) -> None:
    await example.AddMailbox(pb.AddMailboxRequest(address="joe@example.com",
                                                  password="correct horse"))
    await example.AddMailbox(pb.AddMailboxRequest(address="joe+exact@example.com",
                                                  password="correct horse"))
    await example.AddAlias(pb.AddAliasRequest(address="info@example.com",
                                              targets=["joe@example.com"]))
    await example.AddList(pb.AddListRequest(address="team@example.com",
                                            owner="joe@example.com", members=["a@x.org"]))
    await example.AddDomain(pb.AddDomainRequest(name="alias.test", alias_of="example.com"))
    await wait_until(reader, lambda: reader.is_local_domain("alias.test"))
    assert (await example.GetSettings(pb.GetSettingsRequest())).recipient_delimiter == "+"

    def resolved(address: str) -> tuple[int, str, str]:
        res = reader.resolve(address)
        return res.kind, res.address, res.resolved

    assert resolved("Joe+News@example.com") == (
        pb.RESOLUTION_KIND_MAILBOX, "joe+news@example.com", "joe@example.com")
    assert reader.resolve("joe+news@example.com").mailbox == "joe@example.com"
    # the exact address always wins
    assert resolved("joe+exact@example.com") == (
        pb.RESOLUTION_KIND_MAILBOX, "joe+exact@example.com", "joe+exact@example.com")
    assert resolved("info+x@example.com")[0] == pb.RESOLUTION_KIND_ALIAS
    # a list's extension is one of its command addresses, never posted (team-subscribe@
    # with qmail's "-"); -owner and -request are its owner
    assert resolved("team+x@alias.test") == (
        pb.RESOLUTION_KIND_LIST_COMMAND, "team+x@alias.test", "team@example.com")
    assert not reader.accepts("team+subscribe@example.com")
    assert reader.list_command("team+subscribe@alias.test") == (
        "team@example.com", "team+owner@alias.test")
    assert reader.resolve("team+request@alias.test").targets == ["joe@example.com"]
    assert reader.accepts("team+owner@example.com") and reader.accepts("team@alias.test")
    # nothing before the delimiter, or no such base: unknown (no catch-all set)
    for address in ("+joe@example.com", "ann+x@example.com", "joe-x@example.com"):
        assert not reader.accepts(address), address
    # a catch-all comes after the stripped form, as Postfix's @domain after user@domain
    await example.SetCatchAll(pb.SetCatchAllRequest(
        domain="example.com", action=pb.CATCH_ALL_ACTION_BOUNCE))
    # the view hears of the catch-all a moment later (asserted at once, a loaded machine
    # failed this in session 19's make test: ann+x@ still resolved as unknown)
    await wait_until(reader, lambda: resolved("ann+x@example.com")[0] != pb.RESOLUTION_KIND_UNKNOWN)
    assert resolved("joe+x@example.com")[0] == pb.RESOLUTION_KIND_MAILBOX
    assert resolved("ann+x@example.com")[0] == pb.RESOLUTION_KIND_BOUNCE

    # qmail's "-" as well; then off
    settings = await example.SetRecipientDelimiter(
        pb.SetRecipientDelimiterRequest(recipient_delimiter="-+"))
    assert settings.recipient_delimiter == "-+"
    await wait_until(reader, lambda: reader.delimiters == "-+")
    assert resolved("joe-x@example.com")[0] == pb.RESOLUTION_KIND_MAILBOX
    assert (await example.Resolve(pb.AddressRequest(address="joe-x+y@example.com"))
            ).resolved == "joe@example.com"
    await example.SetRecipientDelimiter(pb.SetRecipientDelimiterRequest())
    await wait_until(reader, lambda: reader.delimiters == "")
    assert (await example.GetSettings(pb.GetSettingsRequest())).recipient_delimiter == ""
    assert resolved("joe+x@example.com")[0] == pb.RESOLUTION_KIND_BOUNCE
    assert resolved("joe+exact@example.com")[0] == pb.RESOLUTION_KIND_MAILBOX


@pytest.mark.parametrize("value", [".", "@", " ", "a", "++", "+-=_~#$%&", "\x00", "é"])
async def test_a_delimiter_that_cannot_separate_an_extension_is_refused(
        dirstub: Any, value: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await dirstub.SetRecipientDelimiter(
            pb.SetRecipientDelimiterRequest(recipient_delimiter=value))
    assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT
    assert (await dirstub.GetSettings(pb.GetSettingsRequest())).recipient_delimiter == "+"
