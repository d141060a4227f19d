"""DirectoryView's answers on the hot path (smtp-ingress asks accepts() at every RCPT)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mailyard.api.directory.v1 import directory_pb2 as dpb
from mailyard.core.directory import DirectoryView, domain_key, record_key

MEMBERS = 40_000  # about 1 MB: as big as one record may be (nats-server's max_payload)


@contextmanager
def _unparsable(view: DirectoryView, key: str) -> Iterator[None]:
    """The view's copy of the record `key` made bytes no parser takes: an answer that still
    comes out right did not parse the record (the cost measured in bench, not asserted)."""
    kept = view.data[key]
    view.data[key] = b"\xff\xff not a record"
    try:
        yield
    finally:
        view.data[key] = kept


async def test_rcpt_to_a_big_list_parses_no_list(js: Any) -> None:
    """accepts() decided by parsing the whole list and copying every member into a
    Resolution: 6 ms per RCPT to a list of 40,000, on smtp-ingress's event loop (100 RCPTs
    to it held every session 0.6 s), against 6 us for a mailbox."""
    view = DirectoryView()
    await view.start(js)
    kv = view.kv
    assert kv is not None
    await kv.put(domain_key("example.test"), dpb.Domain(name="example.test").SerializeToString())
    await kv.put(record_key("mailbox", "joe@example.test"),
                 dpb.Mailbox(address="joe@example.test").SerializeToString())
    members = [f"member{i:05d}@example.org" for i in range(MEMBERS)]
    await kv.put(record_key("list", "big@example.test"), dpb.MailingList(
        address="big@example.test", owner="joe@example.test",
        members=members).SerializeToString())
    for _ in range(200):
        if view.mailing_list("big@example.test") is not None:
            break
        await asyncio.sleep(0.02)
    try:
        assert view.accepts("BIG@example.test") and not view.accepts("nobody@example.test")
        with _unparsable(view, record_key("list", "big@example.test")):
            assert view.accepts("big@example.test")
        # the same answer as resolve() for every catch-all
        for action in dpb.CatchAllAction.values():
            await kv.put(domain_key("example.test"), dpb.Domain(
                name="example.test", catch_all=action).SerializeToString())
            for _ in range(200):
                if view.domain("example.test").catch_all == action:  # type: ignore[union-attr]
                    break
                await asyncio.sleep(0.02)
            for address in ("nobody@example.test", "joe@example.test", "big@example.test",
                            "x@elsewhere.test"):
                kind = view.resolve(address).kind
                assert view.accepts(address) == (kind not in (
                    dpb.RESOLUTION_KIND_UNKNOWN, dpb.RESOLUTION_KIND_NOT_LOCAL,
                    dpb.RESOLUTION_KIND_BOUNCE)), (action, address)
    finally:
        await view.stop()


async def test_rcpt_to_a_big_lists_subscribe_address_parses_no_list(
        js: Any) -> None:
    """Whether a list takes subscriptions by mail was read by parsing its record at every
    RCPT to one of its command addresses: 0.5 ms for a list of 40,000, on smtp-ingress's
    event loop, as often as a client cared to send RCPT TO:<news-subscribe@>. The view now
    keeps those lists' keys as the records change; the answer follows a change."""
    view = DirectoryView()
    await view.start(js)
    kv = view.kv
    assert kv is not None
    await kv.put(domain_key("example.test"), dpb.Domain(name="example.test").SerializeToString())
    await kv.put(record_key("mailbox", "joe@example.test"),
                 dpb.Mailbox(address="joe@example.test").SerializeToString())
    big = dpb.MailingList(address="big@example.test", owner="joe@example.test",
                          members=[f"member{i:05d}@example.org" for i in range(MEMBERS)],
                          subscription=dpb.SUBSCRIPTION_POLICY_CONFIRM)
    await kv.put(record_key("list", "big@example.test"), big.SerializeToString())

    async def until(accepted: bool) -> None:
        for _ in range(200):
            if view.accepts("big+subscribe@example.test") == accepted:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"accepts() never became {accepted}")

    try:
        await until(True)
        with _unparsable(view, record_key("list", "big@example.test")):
            assert view.accepts("big+subscribe@example.test")
        assert not view.accepts("big+help@example.test")
        big.subscription = dpb.SUBSCRIPTION_POLICY_CLOSED
        await kv.put(record_key("list", "big@example.test"), big.SerializeToString())
        await until(False)
        await kv.delete(record_key("list", "big@example.test"))
        await until(False)
    finally:
        await view.stop()
