"""A list's posting policy at the end of DATA (data_list_posting), over real SMTP: a
non-member's post to a members-only list is refused 550 5.7.2 by us, where it used to be
taken and bounced by local-delivery to an envelope sender anyone can forge (backscatter);
members (by envelope sender or From:), the owner and an open list are taken, and so is a
message also addressed elsewhere (local-delivery then refuses the list's copy)."""

from __future__ import annotations

from typing import Any

from ingress_helpers import committed, session, wait_for

from mailyard.api.directory.v1 import directory_pb2 as dpb
from mailyard.core import bus
from mailyard.core.directory import domain_key, record_key
from mailyard.smtp_ingress import replies as R
from mailyard.smtp_ingress.metrics import REJECTIONS
from mailyard.smtp_ingress.server import Ingress

MEMBERS_ONLY = R.list_post_refused(
    "Sorry, only members of news@example.org may post to it; write to "
    "news+owner@example.org. (#5.7.2)")


async def _lists(local: Ingress, js: Any) -> None:
    kv = await bus.ensure_kv(js, bus.KV_DIRECTORY)
    await kv.put(domain_key("alias.test"),
                 dpb.Domain(name="alias.test", alias_of="example.org").SerializeToString())
    await kv.put(record_key("list", "news@example.org"), dpb.MailingList(
        address="news@example.org", owner="alice@example.org",
        members=["Member@Remote.test", "bob@example.org"],
        posting=dpb.POSTING_POLICY_MEMBERS).SerializeToString())
    await kv.put(record_key("list", "ann@example.org"), dpb.MailingList(
        address="ann@example.org", owner="alice@example.org", members=["bob@example.org"],
        posting=dpb.POSTING_POLICY_ANNOUNCE, posters=["editor@remote.test"]
    ).SerializeToString())
    await kv.put(record_key("list", "open@example.org"), dpb.MailingList(
        address="open@example.org", owner="alice@example.org",
        members=["bob@example.org"]).SerializeToString())
    await wait_for(lambda: all(local.directory.accepts(a) for a in (
        "news@example.org", "ann@example.org", "open@example.org", "news@alias.test")))


async def send(local: Ingress, sender: str, rcpts: list[str], head: str = "") -> str:
    client = await session(local.ports["smtp"])
    try:
        assert await client.cmd(f"MAIL FROM:<{sender}>") == R.MAIL_OK
        for rcpt in rcpts:
            assert await client.cmd(f"RCPT TO:<{rcpt}>") == R.RCPT_OK, rcpt
        assert await client.cmd("DATA") == R.GO_AHEAD
        return await client.cmd(f"{head}Subject: hi\r\n\r\nbody\r\n.")
    finally:
        await client.close()


async def test_a_non_members_post_is_refused_at_data_not_bounced(local: Ingress,
                                                                 js: Any) -> None:
    await _lists(local, js)
    before = REJECTIONS.labels("list_posting")._value.get()
    for sender, rcpts, head in (
            ("spammer@evil.test", ["news@example.org"], ""),
            ("spammer@evil.test", ["News@Alias.Test"], ""),         # through an alias domain
            ("", ["news@example.org"], "From: x@evil.test\r\n"),    # <> and a stranger
            ("member@remote.test", ["ann@example.org"], "")):      # announce: not a poster
        reply = await send(local, sender, rcpts, head)
        if rcpts == ["ann@example.org"]:
            assert reply == R.list_post_refused(
                "Sorry, only the owner of ann@example.org may post to it; write to "
                "ann+owner@example.org. (#5.7.2)")
        else:
            assert reply == MEMBERS_ONLY, (sender, rcpts)
    assert REJECTIONS.labels("list_posting")._value.get() == before + 4
    assert committed(local) == []  # nothing taken: no bounce can follow
    # the view follows the list's policy: opened, then removed, the list guards nothing
    kv = await bus.ensure_kv(js, bus.KV_DIRECTORY)
    await kv.put(record_key("list", "news@example.org"), dpb.MailingList(
        address="news@example.org", owner="alice@example.org").SerializeToString())
    await wait_for(lambda: len(local.directory.guarded_lists) == 1)
    assert (await send(local, "spammer@evil.test", ["news@example.org"])).startswith("250 ")
    await kv.delete(record_key("list", "ann@example.org"))
    await wait_for(lambda: not local.directory.guarded_lists)


async def test_members_owners_posters_and_mixed_recipients_are_taken(local: Ingress,
                                                                     js: Any) -> None:
    await _lists(local, js)
    taken = [
        ("MEMBER@remote.test", ["news@example.org"], ""),       # a member, any case
        ("bounces+x=y@mailer.test", ["news@example.org"],       # a member by From:
         "From: Member <member@remote.test>\r\n"),
        ("alice@example.org", ["news@example.org", "ann@example.org"], ""),  # the owner
        ("editor@remote.test", ["ann@example.org"], ""),        # announce: a poster
        ("spammer@evil.test", ["open@example.org"], ""),        # open list
        # mixed: the reply is for every recipient; local-delivery refuses the list's copy
        ("spammer@evil.test", ["news@example.org", "bob@example.org"], ""),
    ]
    for sender, rcpts, head in taken:
        reply = await send(local, sender, rcpts, head)
        assert reply.startswith("250 ok "), (sender, rcpts, reply)
    assert len(committed(local)) == len(taken)
