"""Records written before local parts were matched in NFC: moved to their NFC key at start
(renormalise), against the test's real nats-server, as `python -m mailyard.directory` runs
it before serving."""

from __future__ import annotations

import base64
from typing import Any

from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.core import bus
from mailyard.core.directory import DirectoryView, record_key
from mailyard.directory.renormalise import renormalise
from mailyard.directory.store import KVStore


def _as_typed(kind: str, local: str, domain: str = "example.com") -> str:
    """The key the directory wrote before NFC matching: the local part as typed."""
    enc = [base64.urlsafe_b64encode(t.encode()).decode().rstrip("=") for t in (domain, local)]
    return f"{kind}.{enc[0]}.{enc[1]}"


async def test_a_record_moves_and_a_taken_nfc_address_is_left_to_the_postmaster(
        js: Any) -> None:
    kv = await bus.ensure_kv(js, bus.KV_DIRECTORY)
    # an imported mailbox (no maildir field: its path is made from its address)
    await kv.put(_as_typed("mailbox", "zo\u0308e"),
                 pb.Mailbox(address="zo\u0308e@example.com").SerializeToString())
    # both forms added as two mailboxes: which is the real one is not ours to say
    await kv.put(_as_typed("mailbox", "jose\u0301"),
                 pb.Mailbox(address="jose\u0301@example.com", maildir="a/Maildir")
                 .SerializeToString())
    await kv.put(_as_typed("mailbox", "jos\u00e9"),
                 pb.Mailbox(address="jos\u00e9@example.com", maildir="b/Maildir")
                 .SerializeToString())
    await kv.put(_as_typed("list", "e\u0301quipe"), pb.MailingList(
        address="e\u0301quipe@example.com", members=["x@y.test"]).SerializeToString())
    view = DirectoryView()
    await view.start(js)
    try:
        assert await renormalise(KVStore(js, bus.KV_DIRECTORY), view) == 2
        moved = pb.Mailbox.FromString(
            (await kv.get(record_key("mailbox", "z\u00f6e@example.com"))).value)
        assert (moved.address, moved.maildir) == ("z\u00f6e@example.com",
                                                  "example.com/zo\u0308e/Maildir")
        listed = pb.MailingList.FromString(
            (await kv.get(record_key("list", "\u00e9quipe@example.com"))).value)
        assert list(listed.members) == ["x@y.test"]
        kept = pb.Mailbox.FromString((await kv.get(_as_typed("mailbox", "jose\u0301"))).value)
        assert kept.maildir == "a/Maildir"  # left where it was, logged
        assert await renormalise(KVStore(js, bus.KV_DIRECTORY), view) == 0  # done once
    finally:
        await view.stop()
