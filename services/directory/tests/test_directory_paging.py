"""The directory's listings in pages (AIP-158) over real gRPC: every record exactly once and
in order, changes between pages repeat or skip nothing else, a listing past gRPC's 4 MiB
comes in pages, and a bad page_size / page_token is INVALID_ARGUMENT."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.core import bus
from mailyard.core.directory import domain_key, record_key

from .conftest import Replica, code_of, wait_until


async def _put_all(js: Any, records: dict[str, bytes]) -> None:
    """What the directory writes, straight into the bucket (thousands in a second)."""
    kv = await bus.ensure_kv(js, bus.KV_DIRECTORY)
    items = list(records.items())
    for start in range(0, len(items), 500):
        await asyncio.gather(*(kv.put(k, v) for k, v in items[start:start + 500]))


async def _seed(js: Any, svc: Replica, records: dict[str, bytes]) -> None:
    await _put_all(js, records)
    await wait_until(svc.view, lambda: all(k in svc.view.data for k in records))


async def _mailboxes(js: Any, svc: Replica, domain: str, count: int) -> list[str]:
    """`count` mailboxes of `domain` (with the domain): their addresses in listing order."""
    addresses = [f"user{n}@{domain}" for n in range(count)]
    records = {domain_key(domain): pb.Domain(name=domain).SerializeToString()}
    records.update({record_key("mailbox", a): pb.Mailbox(address=a).SerializeToString()
                    for a in addresses})
    await _seed(js, svc, records)
    return sorted(addresses, key=lambda a: record_key("mailbox", a))


Call = Callable[[str, int], Awaitable[tuple[list[str], str]]]


def _lister(svc: Replica, kind: str, domain: str = "") -> Call:
    """One page of a listing as (names, next_page_token)."""
    d = svc.directory

    async def call(token: str, size: int) -> tuple[list[str], str]:
        if kind == "domain":
            got = await d.ListDomains(pb.ListDomainsRequest(page_size=size, page_token=token))
            return [x.name for x in got.domains], got.next_page_token
        if kind == "mailbox":
            m = await d.ListMailboxes(pb.ListMailboxesRequest(domain=domain, page_size=size,
                                                              page_token=token))
            return [x.address for x in m.mailboxes], m.next_page_token
        if kind == "alias":
            a = await d.ListAliases(pb.ListAliasesRequest(domain=domain, page_size=size,
                                                          page_token=token))
            return [x.address for x in a.aliases], a.next_page_token
        lists = await d.ListLists(pb.ListListsRequest(domain=domain, page_size=size,
                                                      page_token=token))
        return [x.address for x in lists.lists], lists.next_page_token

    return call


async def _walk(call: Call, size: int) -> list[list[str]]:
    pages: list[list[str]] = []
    token = ""
    while True:
        names, token = await call(token, size)
        pages.append(names)
        if not token:
            return pages


async def test_mailboxes_in_pages_every_one_once_in_order(js: Any, svc: Replica) -> None:
    expected = await _mailboxes(js, svc, "example.com", 3000)
    others = await _mailboxes(js, svc, "other.org", 50)
    pages = await _walk(_lister(svc, "mailbox", "example.com"), 100)
    assert [len(p) for p in pages] == [100] * 30
    assert [a for p in pages for a in p] == expected
    # every domain: both, in key order; no page_size is 1000 a page
    pages = await _walk(_lister(svc, "mailbox"), 0)
    assert [len(p) for p in pages] == [1000, 1000, 1000, 50]
    assert sorted(a for p in pages for a in p) == sorted(expected + others)
    assert len(pages[0]) == len(set(pages[0]))
    # a page_size past the maximum is the maximum (AIP-158), not an error
    names, token = await _lister(svc, "mailbox", "example.com")("", 1_000_000)
    assert names == expected[:1000] and token


async def test_domains_aliases_and_lists_in_pages(js: Any, svc: Replica) -> None:
    domains = [f"d{n:04d}.example" for n in range(1500)]
    records = {domain_key(d): pb.Domain(name=d).SerializeToString() for d in domains}
    aliases = [f"a{n}@d0001.example" for n in range(250)]
    lists = [f"l{n}@d0002.example" for n in range(250)]
    records.update({record_key("alias", a): pb.Alias(address=a, targets=["x@y.org"]
                                                      ).SerializeToString() for a in aliases})
    records.update({record_key("list", x): pb.MailingList(address=x, owner="o@y.org"
                                                           ).SerializeToString() for x in lists})
    await _seed(js, svc, records)
    pages = await _walk(_lister(svc, "domain"), 100)
    assert [d for p in pages for d in p] == sorted(domains)  # by name, as before paging
    assert len(pages) == 15
    pages = await _walk(_lister(svc, "alias", "d0001.example"), 100)
    assert [a for p in pages for a in p] == sorted(aliases,
                                                   key=lambda a: record_key("alias", a))
    pages = await _walk(_lister(svc, "list"), 100)
    assert [x for p in pages for x in p] == sorted(lists, key=lambda x: record_key("list", x))
    assert [len(p) for p in pages] == [100, 100, 50]


async def test_changes_between_pages_skip_and_repeat_nothing(js: Any, svc: Replica) -> None:
    """Mailboxes added and deleted behind and ahead of the walk between its pages."""
    expected = await _mailboxes(js, svc, "example.com", 2000)
    call = _lister(svc, "mailbox", "example.com")
    seen, token = await call("", 100)
    kv = await bus.ensure_kv(js, bus.KV_DIRECTORY)
    gone_behind, gone_ahead = expected[50], expected[1500]
    added = ["zz-new@example.com", "aa-new@example.com", "user0x@example.com"]
    for address in added:
        await kv.put(record_key("mailbox", address),
                     pb.Mailbox(address=address).SerializeToString())
    await kv.delete(record_key("mailbox", gone_behind))
    await kv.delete(record_key("mailbox", gone_ahead))
    # so is the last one seen: the walk goes on after it all the same
    await kv.delete(record_key("mailbox", seen[-1]))
    await wait_until(svc.view, lambda: record_key("mailbox", gone_ahead) not in svc.view.data
                     and all(record_key("mailbox", a) in svc.view.data for a in added))
    while token:
        names, token = await call(token, 100)
        seen.extend(names)
    assert len(seen) == len(set(seen))
    ahead_of = record_key("mailbox", expected[99])
    new_ahead = [a for a in added if record_key("mailbox", a) > ahead_of]
    assert sorted(seen) == sorted([a for a in expected if a != gone_ahead] + new_ahead)
    assert seen == sorted(seen, key=lambda a: record_key("mailbox", a))


async def test_a_listing_past_4_mib_comes_in_pages(js: Any, svc: Replica) -> None:
    """Ten lists of 30,000 members (6.6 MB in all) were one answer: RESOURCE_EXHAUSTED."""
    members = [f"member{n:05d}@lists.example.org" for n in range(30_000)]
    lists = [f"big{n}@example.com" for n in range(10)]
    records = {domain_key("example.com"): pb.Domain(name="example.com").SerializeToString()}
    records.update({record_key("list", x): pb.MailingList(address=x, owner="o@example.com",
                                                          members=members).SerializeToString()
                    for x in lists})
    await _seed(js, svc, records)
    pages = await _walk(_lister(svc, "list", "example.com"), 0)
    assert sorted(x for p in pages for x in p) == sorted(lists)
    assert len(pages) > 1


@pytest.mark.parametrize("page_size, page_token", [
    (-1, ""), (0, "not a token"), (0, "!!!!"), (0, "x" * 100_000),
    (0, "bWFpbGJveC4"),  # "mailbox." itself
    (0, "ZG9tYWluLmV4YW1wbGUuY29t"),  # a ListDomains token: "domain.example.com"
])
async def test_a_bad_page_size_or_token_is_invalid_argument(
        example: Any, page_size: int, page_token: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await example.ListMailboxes(pb.ListMailboxesRequest(page_size=page_size,
                                                            page_token=page_token))
    assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_" in (exc.value.details() or "")


async def test_a_token_of_another_domain_is_invalid_argument(js: Any, svc: Replica) -> None:
    await _mailboxes(js, svc, "example.com", 20)
    await _mailboxes(js, svc, "other.org", 20)
    _, token = await _lister(svc, "mailbox", "example.com")("", 5)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await _lister(svc, "mailbox", "other.org")(token, 5)
    assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await _lister(svc, "alias", "example.com")(token, 5)
    assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT
