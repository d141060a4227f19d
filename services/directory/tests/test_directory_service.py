# ruff: noqa: S105, S106  (fixed test passwords)
"""Every Directory RPC over real gRPC, records checked in JetStream KV through a separate
DirectoryView (what smtp-ingress, relay-auth and local-delivery read)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from argon2 import PasswordHasher

from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.api.directory.v1 import directory_pb2_grpc as pb_grpc
from mailyard.core import bus
from mailyard.core.directory import domain_key, record_key

from .conftest import Replica, code_of, wait_until

PASSWORD = "correct horse"


async def add_mailbox(stub: pb_grpc.DirectoryStub, address: str, **kw: Any) -> pb.Mailbox:
    return await stub.AddMailbox(pb.AddMailboxRequest(address=address, password=PASSWORD, **kw))


# -- domains ----------------------------------------------------------------------------------

async def test_add_domain_normalises_and_refuses_duplicates(dirstub: Any, reader: Any) -> None:
    domain = await dirstub.AddDomain(pb.AddDomainRequest(name="Bücher.Example"))
    assert domain.name == "xn--bcher-kva.example"
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await dirstub.AddDomain(pb.AddDomainRequest(name="XN--BCHER-KVA.example."))
    assert code_of(exc) == grpc.StatusCode.ALREADY_EXISTS
    await wait_until(reader, lambda: reader.is_local_domain("bücher.example"))
    listed = await dirstub.ListDomains(pb.ListDomainsRequest())
    assert [d.name for d in listed.domains] == ["xn--bcher-kva.example"]


@pytest.mark.parametrize("name", ["", "-x.com", "a..b", "1.2.3.4", "bad_name.com",
                                  # quoted whole, the refusal would pass gRPC's 16 KiB
                                  # limit on status details: RESOURCE_EXHAUSTED instead
                                  "x" * 20_000, "a" * 40_000 + ".com"])
async def test_add_domain_validates(dirstub: Any, name: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await dirstub.AddDomain(pb.AddDomainRequest(name=name))
    assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT


async def test_delete_domain_removes_everything_in_it(example: Any, reader: Any) -> None:
    await example.AddDomain(pb.AddDomainRequest(name="other.org"))
    await add_mailbox(example, "joe@example.com")
    await add_mailbox(example, "joe@other.org")
    await example.AddAlias(pb.AddAliasRequest(address="info@example.com",
                                              targets=["joe@example.com"]))
    await example.AddList(pb.AddListRequest(address="team@example.com",
                                            owner="joe@example.com", members=["a@x.org"]))
    response = await example.DeleteDomain(pb.DeleteDomainRequest(name="EXAMPLE.com"))
    assert response.deleted
    await wait_until(reader, lambda: not reader.is_local_domain("example.com")
                     and not reader.records("mailbox", "example.com")
                     and not reader.records("alias", "example.com")
                     and not reader.records("list", "example.com"))
    assert reader.mailbox("joe@other.org") is not None
    listed = await example.ListDomains(pb.ListDomainsRequest())
    assert [d.name for d in listed.domains] == ["other.org"]
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await example.DeleteDomain(pb.DeleteDomainRequest(name="example.com"))
    assert code_of(exc) == grpc.StatusCode.NOT_FOUND
    # and it can be added again, empty
    await example.AddDomain(pb.AddDomainRequest(name="example.com"))
    assert not (await example.ListMailboxes(pb.ListMailboxesRequest(domain="example.com"))
                ).mailboxes


# -- mailboxes --------------------------------------------------------------------------------

async def test_add_mailbox_writes_an_argon2id_record(example: Any, reader: Any) -> None:
    answer = await add_mailbox(example, "Joe@Example.com", quota_bytes=5000,
                               quota_messages=7)
    assert answer.address == "joe@example.com"
    assert answer.password_hash == "*"          # never handed out
    assert answer.cram_md5_secret == ""
    await wait_until(reader, lambda: reader.mailbox("joe@example.com") is not None)
    stored = reader.mailbox("JOE@example.com")
    assert stored is not None
    assert stored.password_hash.startswith("$argon2id$")
    assert PasswordHasher().verify(stored.password_hash, PASSWORD)
    assert PASSWORD not in stored.SerializeToString().decode(errors="replace")
    assert stored.maildir == "example.com/joe/Maildir"
    assert (stored.quota_bytes, stored.quota_messages) == (5000, 7)
    assert stored.cram_md5_secret == ""


async def test_cram_md5_is_opt_in(example: Any, reader: Any) -> None:
    answer = await add_mailbox(example, "ann@example.com", enable_cram_md5=True)
    assert answer.cram_md5_secret == "*"
    await wait_until(reader, lambda: reader.mailbox("ann@example.com") is not None)
    stored = reader.mailbox("ann@example.com")
    assert stored is not None and stored.cram_md5_secret == PASSWORD.encode().hex()


async def test_add_mailbox_refusals(example: Any) -> None:
    cases = [
        (pb.AddMailboxRequest(address="joe@nowhere.org", password=PASSWORD),
         grpc.StatusCode.FAILED_PRECONDITION),
        (pb.AddMailboxRequest(address="joe@example.com"), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.AddMailboxRequest(address="joe@example.com", password="short"),
         grpc.StatusCode.INVALID_ARGUMENT),
        (pb.AddMailboxRequest(address="../x@example.com", password=PASSWORD),
         grpc.StatusCode.INVALID_ARGUMENT),
        (pb.AddMailboxRequest(address="joe", password=PASSWORD),
         grpc.StatusCode.INVALID_ARGUMENT),
    ]
    for request, code in cases:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await example.AddMailbox(request)
        assert code_of(exc) == code, request
    await add_mailbox(example, "joe@example.com")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await add_mailbox(example, "JOE@example.com")
    assert code_of(exc) == grpc.StatusCode.ALREADY_EXISTS


async def test_names_do_not_collide_across_kinds(example: Any) -> None:
    await add_mailbox(example, "joe@example.com")
    await example.AddAlias(pb.AddAliasRequest(address="info@example.com", targets=["a@x.org"]))
    await example.AddList(pb.AddListRequest(address="team@example.com", owner="a@x.org"))
    for name in ("joe", "info", "team"):
        address = f"{name}@example.com"
        for call in (example.AddAlias(pb.AddAliasRequest(address=address, targets=["b@x.org"])),
                     example.AddList(pb.AddListRequest(address=address, owner="a@x.org")),
                     add_mailbox(example, address)):
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await call
            assert code_of(exc) == grpc.StatusCode.ALREADY_EXISTS
            assert "already exists as" in (exc.value.details() or "")


async def test_password_quota_and_delete(example: Any, reader: Any) -> None:
    await add_mailbox(example, "joe@example.com")
    answer = await example.SetPassword(pb.SetPasswordRequest(
        address="joe@example.com", password="another secret", enable_cram_md5=True))
    assert answer.password_hash == "*" and answer.cram_md5_secret == "*"
    await wait_until(reader, lambda: bool(reader.mailbox("joe@example.com").cram_md5_secret))
    stored = reader.mailbox("joe@example.com")
    assert PasswordHasher().verify(stored.password_hash, "another secret")
    await example.SetPassword(pb.SetPasswordRequest(address="joe@example.com",
                                                    password="third secret"))
    await wait_until(reader, lambda: not reader.mailbox("joe@example.com").cram_md5_secret)

    answer = await example.SetQuota(pb.SetQuotaRequest(address="joe@example.com",
                                                       quota_bytes=1 << 30, quota_messages=9))
    assert (answer.quota_bytes, answer.quota_messages) == (1 << 30, 9)
    for bad in (pb.SetPasswordRequest(address="joe@example.com", password="x"),
                pb.SetPasswordRequest(address="nobody@example.com", password=PASSWORD)):
        with pytest.raises(grpc.aio.AioRpcError):
            await example.SetPassword(bad)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await example.SetQuota(pb.SetQuotaRequest(address="nobody@example.com"))
    assert code_of(exc) == grpc.StatusCode.NOT_FOUND

    assert (await example.DeleteMailbox(pb.AddressRequest(address="joe@example.com"))).deleted
    await wait_until(reader, lambda: reader.mailbox("joe@example.com") is None)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await example.DeleteMailbox(pb.AddressRequest(address="joe@example.com"))
    assert code_of(exc) == grpc.StatusCode.NOT_FOUND
    # a deleted name can be taken again (the KV tombstone is the CAS base)
    await add_mailbox(example, "joe@example.com")


async def test_gecos_is_kept_and_changed(example: Any, reader: Any) -> None:
    answer = await add_mailbox(example, "joe@example.com", gecos="  Jürgen Müller ")
    assert answer.gecos == "Jürgen Müller"
    answer = await example.SetGecos(pb.SetGecosRequest(address="joe@example.com",
                                                       gecos="Joe User"))
    assert answer.gecos == "Joe User"
    await wait_until(reader, lambda: reader.mailbox("joe@example.com").gecos == "Joe User")
    for bad in ("line\nbreak", "tab\there", "x" * 257):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await example.SetGecos(pb.SetGecosRequest(address="joe@example.com", gecos=bad))
        assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await add_mailbox(example, "ann@example.com", gecos=bad)
        assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await example.SetGecos(pb.SetGecosRequest(address="nobody@example.com", gecos="x"))
    assert code_of(exc) == grpc.StatusCode.NOT_FOUND


async def test_list_mailboxes(example: Any) -> None:
    await example.AddDomain(pb.AddDomainRequest(name="other.org"))
    for address in ("b@example.com", "a@example.com", "c@other.org"):
        await add_mailbox(example, address)
    listed = await example.ListMailboxes(pb.ListMailboxesRequest(domain="example.com"))
    assert sorted(m.address for m in listed.mailboxes) == ["a@example.com", "b@example.com"]
    assert all(m.password_hash == "*" for m in listed.mailboxes)
    everything = await example.ListMailboxes(pb.ListMailboxesRequest())
    assert len(everything.mailboxes) == 3
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await example.ListMailboxes(pb.ListMailboxesRequest(domain="nowhere.org"))
    assert code_of(exc) == grpc.StatusCode.NOT_FOUND


# -- aliases, forwards, catch-all, lists, resolution -------------------------------------------

async def test_aliases(example: Any) -> None:
    alias = await example.AddAlias(pb.AddAliasRequest(
        address="Info@example.com", targets=["Joe@Remote.ORG", "ann@example.com"]))
    assert alias.address == "info@example.com"
    assert list(alias.targets) == ["Joe@remote.org", "ann@example.com"]
    for bad in (pb.AddAliasRequest(address="x@example.com"),
                pb.AddAliasRequest(address="x@example.com", targets=["not an address"]),
                pb.AddAliasRequest(address="x@example.com", targets=["x@example.com"])):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await example.AddAlias(bad)
        assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT
    listed = await example.ListAliases(pb.ListAliasesRequest(domain="example.com"))
    assert [a.address for a in listed.aliases] == ["info@example.com"]
    resolution = await example.Resolve(pb.AddressRequest(address="INFO@example.com"))
    assert resolution.kind == pb.RESOLUTION_KIND_ALIAS
    assert list(resolution.targets) == ["Joe@remote.org", "ann@example.com"]
    await example.DeleteAlias(pb.AddressRequest(address="info@example.com"))
    assert not (await example.ListAliases(pb.ListAliasesRequest())).aliases
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await example.DeleteAlias(pb.AddressRequest(address="info@example.com"))
    assert code_of(exc) == grpc.StatusCode.NOT_FOUND


async def test_a_huge_target_list_is_checked_in_one_pass(example: Any) -> None:
    """300,000 targets (3.6 MB, within gRPC's 4 MiB): the duplicate check looked each one up
    in the targets kept so far, minutes of the directory's event loop (40,000 took 10 s);
    now each call is refused at once, as no KV record holds that much."""
    await add_mailbox(example, "joe@example.com")
    targets = [f"{n:x}@x.io" for n in range(300_000)]
    for call in (example.AddAlias(pb.AddAliasRequest(address="all@example.com",
                                                     targets=targets), timeout=120),
                 example.SetForward(pb.SetForwardRequest(address="joe@example.com",
                                                         targets=targets), timeout=120),
                 example.AddList(pb.AddListRequest(address="big@example.com",
                                                   owner="joe@example.com", members=targets),
                                 timeout=120)):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call
        assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT
        assert "max_payload" in (exc.value.details() or "")


async def test_a_request_no_record_can_hold_is_refused_before_its_addresses_are_read(
        example: Any) -> None:
    """Too large for any record, a request is refused before anything else is looked at:
    not a domain's record (here one not hosted, which would be NOT_FOUND after the check),
    nor 300,000 addresses checked one by one on the event loop while other calls' KV reads
    wait behind them (seen as UNAVAILABLE "nats: timeout" in those calls under load)."""
    targets = [f"{n:x}@x.io" for n in range(300_000)]
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await example.AddAlias(pb.AddAliasRequest(address="all@not-hosted.example",
                                                  targets=targets), timeout=120)
    assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_payload" in (exc.value.details() or "")


async def test_a_record_just_under_max_payload_is_refused_and_nats_stays(
        example: Any) -> None:
    """nats-py checks a message's value against max_payload, nats-server the value and its
    headers: a list of 1 MiB less 20 bytes passed the first, and the server closed the
    directory's connection (UNAVAILABLE, then "connection closed" for the next call)."""
    mlist = pb.MailingList(address="big@example.com", owner="o@example.com")
    # as many members as fit in 1 MiB less 20 bytes, counted once (each is 22 bytes on the
    # wire): ByteSize() after each append took the test 25 s of its 26
    each = pb.MailingList(members=["m0000000@example.org"]).ByteSize()
    count = (1_048_576 - 20 - mlist.ByteSize()) // each
    mlist.members.extend(f"m{n:07d}@example.org" for n in range(count))
    assert 1_048_576 - 60 < mlist.ByteSize() <= 1_048_576 - 20
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await example.AddList(pb.AddListRequest(address=mlist.address, owner=mlist.owner,
                                                members=mlist.members), timeout=30)
    assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_payload" in (exc.value.details() or "")
    await example.AddDomain(pb.AddDomainRequest(name="after.example"), timeout=30)


async def test_forwards(example: Any) -> None:
    await add_mailbox(example, "joe@example.com")
    mailbox = await example.SetForward(pb.SetForwardRequest(
        address="joe@example.com", targets=["joe@remote.org"], keep_copy=True))
    assert list(mailbox.forward_to) == ["joe@remote.org"] and mailbox.keep_copy
    resolution = await example.Resolve(pb.AddressRequest(address="joe@example.com"))
    assert resolution.kind == pb.RESOLUTION_KIND_MAILBOX
    assert resolution.mailbox == "joe@example.com"
    assert list(resolution.targets) == ["joe@remote.org"]
    mailbox = await example.ClearForward(pb.AddressRequest(address="joe@example.com"))
    assert not mailbox.forward_to and not mailbox.keep_copy
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await example.SetForward(pb.SetForwardRequest(address="joe@example.com"))
    assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await example.SetForward(pb.SetForwardRequest(address="nobody@example.com",
                                                      targets=["a@x.org"]))
    assert code_of(exc) == grpc.StatusCode.NOT_FOUND


async def test_catch_all(example: Any) -> None:
    async def resolve(address: str) -> pb.Resolution:
        result: pb.Resolution = await example.Resolve(pb.AddressRequest(address=address))
        return result

    assert (await resolve("nobody@example.com")).kind == pb.RESOLUTION_KIND_UNKNOWN
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await example.SetCatchAll(pb.SetCatchAllRequest(
            domain="example.com", action=pb.CATCH_ALL_ACTION_DELIVER, target="joe@example.com"))
    assert code_of(exc) == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await example.SetCatchAll(pb.SetCatchAllRequest(
            domain="example.com", action=pb.CATCH_ALL_ACTION_DELIVER))
    assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT
    await add_mailbox(example, "joe@example.com")
    domain = await example.SetCatchAll(pb.SetCatchAllRequest(
        domain="example.com", action=pb.CATCH_ALL_ACTION_DELIVER, target="Joe@example.com"))
    assert domain.catch_all_target == "joe@example.com"
    resolution = await resolve("nobody@example.com")
    assert resolution.kind == pb.RESOLUTION_KIND_CATCH_ALL
    assert resolution.mailbox == "joe@example.com"
    for action, kind in ((pb.CATCH_ALL_ACTION_BOUNCE, pb.RESOLUTION_KIND_BOUNCE),
                         (pb.CATCH_ALL_ACTION_DELETE, pb.RESOLUTION_KIND_DELETE),
                         (pb.CATCH_ALL_ACTION_UNSPECIFIED, pb.RESOLUTION_KIND_UNKNOWN)):
        domain = await example.SetCatchAll(pb.SetCatchAllRequest(
            domain="example.com", action=action, target="ignored@example.com"))
        assert domain.catch_all == action and domain.catch_all_target == ""
        assert (await resolve("nobody@example.com")).kind == kind
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await example.SetCatchAll(pb.SetCatchAllRequest(domain="nowhere.org",
                                                        action=pb.CATCH_ALL_ACTION_BOUNCE))
    assert code_of(exc) == grpc.StatusCode.NOT_FOUND
    assert (await resolve("a@nowhere.org")).kind == pb.RESOLUTION_KIND_NOT_LOCAL


async def test_a_self_reference_in_another_case_is_refused(example: Any) -> None:
    """Local parts are matched lower-cased (vpopmail), but targets keep the case they are
    given: "info@ -> Info@", "joe@ forwards to JOE@" and "team@ has the member Team@" were
    stored, and every message to them was then accepted at RCPT and bounced as a loop."""
    await add_mailbox(example, "joe@example.com")
    await example.AddList(pb.AddListRequest(address="team@example.com",
                                            owner="joe@example.com"))
    for call in (example.AddAlias(pb.AddAliasRequest(address="info@example.com",
                                                     targets=["Info@example.com"])),
                 example.SetForward(pb.SetForwardRequest(address="joe@example.com",
                                                         targets=["JOE@example.com."])),
                 example.AddList(pb.AddListRequest(address="all@example.com",
                                                   owner="joe@example.com",
                                                   members=["ALL@Example.com"])),
                 example.AddListMember(pb.ListMemberRequest(list="team@example.com",
                                                            member="Team@example.com")),
                 # its own owner: list mail went out from the list, so every auto-reply
                 # and member's bounce went to all members again
                 example.AddList(pb.AddListRequest(address="help@example.com",
                                                   owner="Help@example.com",
                                                   members=["joe@example.com"]))):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call
        assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT
    assert not (await example.ListAliases(pb.ListAliasesRequest())).aliases
    resolution = await example.Resolve(pb.AddressRequest(address="joe@example.com"))
    assert not resolution.targets
    assert not (await example.GetList(pb.AddressRequest(address="team@example.com"))).members


async def test_a_catch_all_mailbox_is_not_deleted_from_under_its_domain(
        example: Any, reader: Any) -> None:
    """A catch-all delivering to a mailbox that no longer exists made every address of the
    domain pass RCPT (accepts() saw the catch-all) and then bounce 5.1.1 at delivery:
    backscatter for all the spam a catch-all domain gets. The mailbox, or the domain
    holding it, is refused while it is some domain's catch-all."""
    await example.AddDomain(pb.AddDomainRequest(name="other.org"))
    await add_mailbox(example, "joe@example.com")
    await add_mailbox(example, "ann@other.org")
    await example.SetCatchAll(pb.SetCatchAllRequest(
        domain="example.com", action=pb.CATCH_ALL_ACTION_DELIVER, target="joe@example.com"))
    await example.SetCatchAll(pb.SetCatchAllRequest(
        domain="other.org", action=pb.CATCH_ALL_ACTION_DELIVER, target="Joe@example.com"))
    for call in (example.DeleteMailbox(pb.AddressRequest(address="JOE@example.com")),
                 example.DeleteDomain(pb.DeleteDomainRequest(name="example.com"))):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call
        assert code_of(exc) == grpc.StatusCode.FAILED_PRECONDITION
        assert "other.org" in (exc.value.details() or "")
    await wait_until(reader, lambda: reader.accepts("nobody@other.org"))
    assert reader.mailbox("joe@example.com") and reader.is_local_domain("example.com")
    await example.SetCatchAll(pb.SetCatchAllRequest(domain="other.org",
                                                    action=pb.CATCH_ALL_ACTION_BOUNCE))
    with pytest.raises(grpc.aio.AioRpcError) as exc:  # its own domain's catch-all
        await example.DeleteMailbox(pb.AddressRequest(address="joe@example.com"))
    assert code_of(exc) == grpc.StatusCode.FAILED_PRECONDITION
    # a domain deleted with its own catch-all mailbox goes as a whole
    assert (await example.DeleteDomain(pb.DeleteDomainRequest(name="example.com"))).deleted
    await example.SetCatchAll(pb.SetCatchAllRequest(
        domain="other.org", action=pb.CATCH_ALL_ACTION_DELIVER, target="ann@other.org"))
    await example.SetCatchAll(pb.SetCatchAllRequest(domain="other.org",
                                                    action=pb.CATCH_ALL_ACTION_UNSPECIFIED))
    assert (await example.DeleteMailbox(pb.AddressRequest(address="ann@other.org"))).deleted


async def test_mailing_lists(example: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await example.AddList(pb.AddListRequest(address="team@example.com"))
    assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT
    mlist = await example.AddList(pb.AddListRequest(
        address="team@example.com", owner="owner@example.com", members=["a@x.org"]))
    assert mlist.owner == "owner@example.com"
    mlist = await example.AddListMember(pb.ListMemberRequest(list="team@example.com",
                                                             member="b@x.org"))
    mlist = await example.AddListMember(pb.ListMemberRequest(list="team@example.com",
                                                             member="b@x.org"))
    assert list(mlist.members) == ["a@x.org", "b@x.org"]
    mlist = await example.DeleteListMember(pb.ListMemberRequest(list="team@example.com",
                                                                member="a@x.org"))
    assert list(mlist.members) == ["b@x.org"]
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await example.DeleteListMember(pb.ListMemberRequest(list="team@example.com",
                                                            member="a@x.org"))
    assert code_of(exc) == grpc.StatusCode.NOT_FOUND
    resolution = await example.Resolve(pb.AddressRequest(address="team@example.com"))
    assert resolution.kind == pb.RESOLUTION_KIND_LIST
    assert list(resolution.targets) == ["b@x.org"]
    got = await example.GetList(pb.AddressRequest(address="TEAM@example.com"))
    assert (got.address, got.owner, list(got.members)) == (
        "team@example.com", "owner@example.com", ["b@x.org"])
    listed = await example.ListLists(pb.ListListsRequest(domain="example.com"))
    assert [m.address for m in listed.lists] == ["team@example.com"]
    assert list(listed.lists[0].members) == ["b@x.org"]
    assert [m.address for m in (await example.ListLists(pb.ListListsRequest())).lists] == [
        "team@example.com"]
    for call, code in ((example.GetList(pb.AddressRequest(address="none@example.com")),
                        grpc.StatusCode.NOT_FOUND),
                       (example.GetList(pb.AddressRequest(address="no at sign")),
                        grpc.StatusCode.INVALID_ARGUMENT),
                       (example.ListLists(pb.ListListsRequest(domain="nowhere.org")),
                        grpc.StatusCode.NOT_FOUND)):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call
        assert code_of(exc) == code
    assert (await example.DeleteList(pb.AddressRequest(address="team@example.com"))).deleted
    assert not (await example.ListLists(pb.ListListsRequest())).lists
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await example.AddListMember(pb.ListMemberRequest(list="team@example.com",
                                                         member="c@x.org"))
    assert code_of(exc) == grpc.StatusCode.NOT_FOUND


async def test_resolve_refuses_garbage(dirstub: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await dirstub.Resolve(pb.AddressRequest(address="no at sign"))
    assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT


# -- two replicas -----------------------------------------------------------------------------

async def test_concurrent_writers_never_lose_an_update(replica_factory: Any, reader: Any
                                                       ) -> None:
    import asyncio

    one: Replica = await replica_factory()
    two: Replica = await replica_factory()
    await one.directory.AddDomain(pb.AddDomainRequest(name="example.com"))
    await wait_until(two.view, lambda: two.view.is_local_domain("example.com"))
    await two.directory.AddList(pb.AddListRequest(address="team@example.com",
                                                  owner="o@example.com"))
    members = [f"m{i}@x.org" for i in range(40)]
    await asyncio.gather(*(
        (one if i % 2 else two).directory.AddListMember(
            pb.ListMemberRequest(list="team@example.com", member=m))
        for i, m in enumerate(members)))
    await wait_until(reader, lambda: len(reader.mailing_list("team@example.com").members) == 40)
    assert sorted(reader.mailing_list("team@example.com").members) == sorted(members)

    # the same new name on both replicas at once: exactly one wins
    results = await asyncio.gather(
        one.directory.AddDomain(pb.AddDomainRequest(name="race.org")),
        two.directory.AddDomain(pb.AddDomainRequest(name="race.org")),
        return_exceptions=True)
    failures = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(failures) == 1 and failures[0].code() == grpc.StatusCode.ALREADY_EXISTS


async def test_changes_are_counted_by_kind(example: Any) -> None:
    from prometheus_client import REGISTRY

    def count(kind: str) -> float:
        return REGISTRY.get_sample_value("mailyard_directory_changes_total",
                                         {"kind": kind}) or 0.0

    before = {kind: count(kind) for kind in ("mailbox", "forward", "catchall")}
    await add_mailbox(example, "joe@example.com")
    await example.SetForward(pb.SetForwardRequest(address="joe@example.com",
                                                  targets=["a@x.org"]))
    await example.SetCatchAll(pb.SetCatchAllRequest(domain="example.com",
                                                    action=pb.CATCH_ALL_ACTION_BOUNCE))
    with pytest.raises(grpc.aio.AioRpcError):  # refused: not counted
        await add_mailbox(example, "joe@example.com")
    assert {kind: count(kind) - value for kind, value in before.items()} == {
        "mailbox": 1, "forward": 1, "catchall": 1}


async def test_delete_domain_finishes_when_the_caller_goes_away(
        example: Any, reader: Any, js: Any) -> None:
    """`mailyard domain del` interrupted (Ctrl-C, a deadline) cancels the call: the sweep of
    the domain's records went with it, and a later `domain add` brought the rest back."""
    kv = await js.key_value(bus.KV_DIRECTORY)
    count = 2000
    for start in range(0, count, 500):
        await asyncio.gather(*(kv.put(record_key("mailbox", f"u{n}@example.com"), pb.Mailbox(
            address=f"u{n}@example.com").SerializeToString())
            for n in range(start, start + 500)))
    await wait_until(reader, lambda: len(reader.records("mailbox", "example.com")) == count)
    gone = asyncio.Event()
    reader.on_change(lambda key, value: gone.set() if key == domain_key("example.com")
                     and value is None else None)
    call = example.DeleteDomain(pb.DeleteDomainRequest(name="example.com"))
    await asyncio.wait_for(gone.wait(), 30)  # the domain record goes first, then the sweep
    call.cancel()
    await wait_until(reader, lambda: not reader.records("mailbox", "example.com"), 60)
    await example.AddDomain(pb.AddDomainRequest(name="example.com"))
    assert not (await example.ListMailboxes(pb.ListMailboxesRequest(domain="example.com"))
                ).mailboxes

async def test_a_write_without_nats_is_unavailable(dirstub: Any, nats_server: Any,
                                                   tmp_path: Any) -> None:
    """The bus gone: a retryable UNAVAILABLE (HTTP 503) saying so, not UNKNOWN (500)."""
    nats_server.stop()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await dirstub.AddDomain(pb.AddDomainRequest(name="example.com"), timeout=30)
        assert code_of(exc) == grpc.StatusCode.UNAVAILABLE, exc.value.details()
        assert "directory" in (exc.value.details() or "")
    finally:
        nats_server.start(tmp_path / "nats2.log")  # back, same port and store
    for _ in range(30):  # the retry the status invites succeeds once the client is back
        try:
            added = await dirstub.AddDomain(pb.AddDomainRequest(name="example.com"), timeout=30)
            break
        except grpc.aio.AioRpcError as again:
            assert again.code() == grpc.StatusCode.UNAVAILABLE, again.details()
    assert added.name == "example.com"


async def test_a_lists_posting_policy_is_set_and_kept(example: Any, reader: Any) -> None:
    """Who may post (open, members, announce) and the posters, at AddList and with
    SetListPosting; a policy the proto does not define or a bad poster is refused."""
    mlist = await example.AddList(pb.AddListRequest(
        address="news@example.com", owner="owner@example.com", members=["a@x.org"],
        posting=pb.POSTING_POLICY_MEMBERS, posters=["Editor@X.org"]))
    assert (mlist.posting, list(mlist.posters)) == (pb.POSTING_POLICY_MEMBERS, ["Editor@x.org"])
    mlist = await example.SetListPosting(pb.SetListPostingRequest(
        address="News@example.com", posting=pb.POSTING_POLICY_ANNOUNCE))
    assert (mlist.posting, list(mlist.posters), list(mlist.members)) == (
        pb.POSTING_POLICY_ANNOUNCE, [], ["a@x.org"])
    await wait_until(reader, lambda: reader.mailing_list("news@example.com").posting
                     == pb.POSTING_POLICY_ANNOUNCE)
    for call, code in (
            (example.SetListPosting(pb.SetListPostingRequest(address="news@example.com",
                                                             posting=7)),  # type: ignore[arg-type]
             grpc.StatusCode.INVALID_ARGUMENT),
            (example.AddList(pb.AddListRequest(address="x@example.com", owner="o@x.org",
                                               posters=["not an address"])),
             grpc.StatusCode.INVALID_ARGUMENT),
            (example.SetListPosting(pb.SetListPostingRequest(address="none@example.com")),
             grpc.StatusCode.NOT_FOUND)):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call
        assert code_of(exc) == code
