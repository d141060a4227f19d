# ruff: noqa: S106  (fixed test passwords)
"""Alias domains (vaddaliasdomain): a Domain record naming its real domain; what the
directory refuses, and what every service reads through DirectoryView."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.core import bus
from mailyard.core.directory import domain_key

from .conftest import code_of, wait_until


async def refused(call: Any, request: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call(request)
    return code_of(exc)


async def test_an_alias_domain_answers_as_its_real_domain(example: Any, reader: Any) -> None:
    await example.AddMailbox(pb.AddMailboxRequest(address="joe@example.com",
                                                  password="correct horse"))
    await example.AddAlias(pb.AddAliasRequest(address="info@example.com",
                                              targets=["joe@example.com"]))
    added = await example.AddDomain(pb.AddDomainRequest(name="Bücher.Example",
                                                        alias_of="EXAMPLE.com."))
    assert (added.name, added.alias_of) == ("xn--bcher-kva.example", "example.com")
    await wait_until(reader, lambda: reader.is_local_domain("bücher.example"))
    joe = reader.resolve("Joe@BÜCHER.example")
    assert (joe.kind, joe.address, joe.resolved, joe.mailbox) == (
        pb.RESOLUTION_KIND_MAILBOX, "joe@xn--bcher-kva.example", "joe@example.com",
        "joe@example.com")
    info = reader.resolve("info@xn--bcher-kva.example")
    assert (info.kind, list(info.targets)) == (pb.RESOLUTION_KIND_ALIAS, ["joe@example.com"])
    assert reader.accepts("joe@bücher.example") and not reader.accepts("ann@bücher.example")
    login = reader.login_mailbox("JOE@bücher.example")
    assert login is not None and login.address == "joe@example.com"
    # the real domain's catch-all answers for the alias domain too
    await example.SetCatchAll(pb.SetCatchAllRequest(
        domain="example.com", action=pb.CATCH_ALL_ACTION_DELIVER, target="joe@example.com"))
    caught = (await example.Resolve(pb.AddressRequest(address="ann@bücher.example")))
    assert (caught.kind, caught.mailbox) == (pb.RESOLUTION_KIND_CATCH_ALL, "joe@example.com")
    listed = await example.ListDomains(pb.ListDomainsRequest())
    assert [(d.name, d.alias_of) for d in listed.domains] == [
        ("example.com", ""), ("xn--bcher-kva.example", "example.com")]


async def test_what_makes_no_sense_is_refused(example: Any) -> None:
    add = example.AddDomain
    await add(pb.AddDomainRequest(name="alias.test", alias_of="example.com"))
    pre = grpc.StatusCode.FAILED_PRECONDITION
    assert await refused(add, pb.AddDomainRequest(name="x.test", alias_of="missing.test")
                         ) == pre
    # one level only
    assert await refused(add, pb.AddDomainRequest(name="x.test", alias_of="alias.test")
                         ) == pre
    assert await refused(add, pb.AddDomainRequest(name="x.test", alias_of="x.test")
                         ) == grpc.StatusCode.INVALID_ARGUMENT
    assert await refused(add, pb.AddDomainRequest(name="x.test", alias_of="bad_name")
                         ) == grpc.StatusCode.INVALID_ARGUMENT
    # named like a domain that exists, real or alias
    for name in ("Example.com", "alias.test"):
        assert await refused(add, pb.AddDomainRequest(name=name, alias_of="example.com")
                             ) == grpc.StatusCode.ALREADY_EXISTS
    # nothing lives in an alias domain, and its catch-all is the real domain's
    assert await refused(example.AddMailbox, pb.AddMailboxRequest(
        address="joe@alias.test", password="correct horse")) == pre
    assert await refused(example.AddAlias, pb.AddAliasRequest(
        address="info@alias.test", targets=["joe@example.com"])) == pre
    assert await refused(example.AddList, pb.AddListRequest(
        address="team@alias.test", owner="joe@example.com")) == pre
    assert await refused(example.SetCatchAll, pb.SetCatchAllRequest(
        domain="alias.test", action=pb.CATCH_ALL_ACTION_BOUNCE)) == pre


async def test_deleting_a_real_domain_needs_its_alias_domains_to_go_too(
        example: Any, reader: Any) -> None:
    await example.AddDomain(pb.AddDomainRequest(name="a.test", alias_of="example.com"))
    await example.AddDomain(pb.AddDomainRequest(name="b.test", alias_of="example.com"))
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await example.DeleteDomain(pb.DeleteDomainRequest(name="example.com"))
    assert code_of(exc) == grpc.StatusCode.FAILED_PRECONDITION
    assert "a.test, b.test" in (exc.value.details() or "")
    # an alias domain goes alone, and takes nothing of its real domain with it
    await example.DeleteDomain(pb.DeleteDomainRequest(name="a.test"))
    await wait_until(reader, lambda: not reader.is_local_domain("a.test"))
    assert reader.is_local_domain("example.com") and reader.is_local_domain("b.test")
    await example.DeleteDomain(pb.DeleteDomainRequest(name="example.com", with_aliases=True))
    await wait_until(reader, lambda: not reader.data)
    assert not reader.is_local_domain("b.test")
    # the name is free again, for a real domain
    again = await example.AddDomain(pb.AddDomainRequest(name="b.test"))
    assert again.alias_of == ""


async def test_an_alias_domain_of_a_real_domain_gone_is_not_local(
        example: Any, reader: Any, js: Any) -> None:
    """A real domain deleted under its alias (another replica, in the same moment): the
    alias answers for nothing, so it is not local (no 550 for every address, no queue loop
    between local and remote)."""
    await example.AddDomain(pb.AddDomainRequest(name="alias.test", alias_of="example.com"))
    kv = await bus.ensure_kv(js, bus.KV_DIRECTORY)
    await kv.delete(domain_key("example.com"))
    await wait_until(reader, lambda: not reader.is_local_domain("example.com"))
    assert not reader.is_local_domain("alias.test")
    assert reader.resolve("joe@alias.test").kind == pb.RESOLUTION_KIND_NOT_LOCAL


async def test_a_target_naming_itself_through_an_alias_domain_is_refused(example: Any
                                                                         ) -> None:
    """info@example.com -> info@alias.test is info@ itself: it looped on every message
    (bounced 5.4.6) where info@example.com -> Info@example.com was refused at once."""
    await example.AddMailbox(pb.AddMailboxRequest(address="joe@example.com",
                                                  password="correct horse"))
    await example.AddDomain(pb.AddDomainRequest(name="alias.test", alias_of="example.com"))
    bad = grpc.StatusCode.INVALID_ARGUMENT
    assert await refused(example.AddAlias, pb.AddAliasRequest(
        address="info@example.com", targets=["a@x.org", "INFO@Alias.Test"])) == bad
    assert await refused(example.SetForward, pb.SetForwardRequest(
        address="joe@example.com", targets=["joe@alias.test"])) == bad
    assert await refused(example.AddList, pb.AddListRequest(
        address="team@example.com", owner="joe@example.com", members=["team@alias.test"])
    ) == bad
    await example.AddList(pb.AddListRequest(address="team@example.com",
                                            owner="joe@example.com"))
    assert await refused(example.AddListMember, pb.ListMemberRequest(
        list="team@alias.test", member="team@example.com")) == bad
    # another address of the alias domain is fine
    await example.AddAlias(pb.AddAliasRequest(address="info@example.com",
                                              targets=["joe@alias.test"]))


async def test_a_record_asked_for_in_an_alias_domain_is_named_in_its_real_domain(
        example: Any) -> None:
    """vpasswd joe@alias worked on vpopmail; here the answer was a bare "no mailbox
    joe@alias.test" while mail to that address reached joe@example.com's mailbox."""
    await example.AddMailbox(pb.AddMailboxRequest(address="joe@example.com",
                                                  password="correct horse"))
    await example.AddDomain(pb.AddDomainRequest(name="alias.test", alias_of="example.com"))
    calls = [(example.SetPassword, pb.SetPasswordRequest(address="joe@alias.test",
                                                         password="battery staple")),
             (example.SetQuota, pb.SetQuotaRequest(address="Joe@alias.test", quota_bytes=1)),
             (example.DeleteMailbox, pb.AddressRequest(address="joe@alias.test")),
             (example.DeleteAlias, pb.AddressRequest(address="joe@alias.test")),
             (example.GetList, pb.AddressRequest(address="joe@alias.test"))]
    for call, request in calls:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call(request)
        assert code_of(exc) == grpc.StatusCode.NOT_FOUND
        assert "alias.test is an alias domain: the record is joe@example.com's" in (
            exc.value.details() or ""), call


async def test_a_catch_all_target_in_an_alias_domain_is_its_mailbox(example: Any) -> None:
    """catchall set example.com joe@alias.test was refused as "not a mailbox" although
    joe@alias.test is joe@example.com's mailbox; it is stored as the mailbox's own address,
    so deleting that mailbox is still refused while it is the catch-all."""
    await example.AddMailbox(pb.AddMailboxRequest(address="joe@example.com",
                                                  password="correct horse"))
    await example.AddDomain(pb.AddDomainRequest(name="alias.test", alias_of="example.com"))
    domain = await example.SetCatchAll(pb.SetCatchAllRequest(
        domain="example.com", action=pb.CATCH_ALL_ACTION_DELIVER, target="Joe@Alias.test"))
    assert domain.catch_all_target == "joe@example.com"
    assert await refused(example.DeleteMailbox, pb.AddressRequest(address="joe@example.com")
                         ) == grpc.StatusCode.FAILED_PRECONDITION
