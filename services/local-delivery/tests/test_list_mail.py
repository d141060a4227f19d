"""What a list copy carries (RFC 2369 / 2919 fields, Precedence: list) and the loop guard
on them (ezmlm's Mailing-List check), through the worker, NATS and the spool."""

from __future__ import annotations

import asyncio

from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.api.mail.v1.delivery_pb2 import OUTCOME_DELIVERED, OUTCOME_FAILED
from mailyard.api.mail.v1.envelope_pb2 import Envelope
from mailyard.core import srs
from mailyard.core.directory import SETTINGS_KEY
from mailyard.core.ids import new_queue_id
from mailyard.core.srs_keys import SrsSecrets

from .conftest import Env

BODY = b"From: author@sender.test\r\nSubject: hello\r\n\r\nbody\r\n"
SENDER = "author@sender.test"


async def test_a_list_copy_carries_the_list_fields(env: Env) -> None:
    """Copies went out as they came: no List-Id to filter on, no List-Unsubscribe, and no
    Precedence: list, so vacation programs elsewhere answered the list."""
    await env.domain("example.com")
    await env.mailing_list("news@example.com", "owner@example.com", "m@remote.test")
    await env._put(SETTINGS_KEY, pb.Settings(recipient_delimiter="-"))
    await env.start()
    await env.job(SENDER, ["news@example.com"], BODY)
    assert (await env.result()).results[0].outcome == OUTCOME_DELIVERED
    _, data = await env.todo()
    assert data == (b"Delivered-To: news@example.com\r\n"
                    b"List-Id: <news.example.com>\r\n"
                    b"List-Post: <mailto:news@example.com>\r\n"
                    b"List-Help: <mailto:news-owner@example.com?subject=help>\r\n"
                    b"List-Unsubscribe: <mailto:news-owner@example.com?subject=unsubscribe>\r\n"
                    b"List-Owner: <mailto:news-owner@example.com>\r\n"
                    b"Precedence: list\r\n" + BODY)


async def test_a_message_that_already_went_through_the_list_is_not_posted_again(
        env: Env) -> None:
    """A member's forward (or another list) that brought a copy back: posted again, round
    and round for as long as the Delivered-To lines were not the same (another host's
    forward drops them). The list's own List-Id, or ezmlm's Mailing-List: naming it, stops
    it; another list's fields do not."""
    await env.domain("example.com")
    await env.mailbox("m@example.com")
    await env.mailing_list("news@example.com", "owner@example.com", "m@example.com")
    await env.start()
    for header in (b"List-Id: News <news.example.com>\r\n",
                   b"list-id:\r\n  <NEWS.example.com>\r\n",
                   b"Mailing-List: contact news-help@example.com; run by ezmlm\r\n"):
        await env.job(SENDER, ["news@example.com"], header + BODY)
        [rr] = (await env.result()).results
        assert (rr.outcome, rr.enhanced_code) == (OUTCOME_FAILED, "5.4.6"), header
        assert "news@example.com" in rr.reply
    assert await env.todo_count() == 0
    await env.job(SENDER, ["news@example.com"], b"List-Id: <other.example.com>\r\n" + BODY)
    assert (await env.result()).results[0].outcome == OUTCOME_DELIVERED
    _, data = await env.todo()
    assert data.startswith(b"Delivered-To: news@example.com\r\nList-Id: <news.example.com>\r\n")
    assert data.endswith(b"List-Id: <other.example.com>\r\n" + BODY)


async def test_who_may_post_is_the_lists_posting_policy(env: Env) -> None:
    """Anyone on the Internet could post to every list. "members": the members (envelope
    sender or From:), the owner and the posters; "announce": the owner and the posters;
    anyone else's post bounces 5.7.2 and reaches nobody. Unset stays open."""
    await env.domain("example.com")
    await env.mailing_list("news@example.com", "owner@example.com", "Joe@Remote.test",
                           "ann@remote.test", posting=pb.POSTING_POLICY_MEMBERS,
                           posters=["editor@remote.test"])
    await env.mailing_list("ads@example.com", "owner@example.com", "joe@remote.test",
                           posting=pb.POSTING_POLICY_ANNOUNCE, posters=["editor@remote.test"])
    await env.mailing_list("open@example.com", "owner@example.com", "joe@remote.test")
    await env.start()

    async def post(sender: str, to: str, head: bytes = b"") -> tuple[int, str, str]:
        await env.job(sender, [to], head + b"Subject: hi\r\n\r\nbody\r\n")
        [rr] = (await env.result()).results
        return rr.outcome, rr.enhanced_code, rr.reply

    refused = await post("spammer@else.test", "news@example.com")
    assert refused[:2] == (OUTCOME_FAILED, "5.7.2")
    assert "news@example.com" in refused[2] and "news+owner@example.com" in refused[2]
    assert (await post("author@sender.test", "ads@example.com",
                       b"From: Joe <joe@remote.test>\r\n"))[:2] == (OUTCOME_FAILED, "5.7.2")
    assert await env.todo_count() == 0
    for sender, to, head in (("joe@remote.test", "news@example.com", b""),
                             ("bounces+x@remote.test", "news@example.com",
                              b"From: \"Ann\" <ANN@remote.test>\r\n"),
                             ("editor@remote.test", "news@example.com", b""),
                             ("owner@example.com", "ads@example.com", b""),
                             ("x@y.test", "ads@example.com", b"From: editor@remote.test\r\n"),
                             ("spammer@else.test", "open@example.com", b"")):
        assert (await post(sender, to, head))[0] == OUTCOME_DELIVERED, (sender, to)
        await env.todo()


async def test_a_refused_post_from_an_unverified_sender_is_discarded_not_bounced(
        env: Env) -> None:
    """smtp-ingress refuses a post itself when the list is all it is for; reached through
    an alias, or with other recipients, it was taken and the refusal bounced here to an
    envelope sender anyone can forge (backscatter). When neither SPF nor DKIM verified the
    sender (Envelope.sender_unverified) the post is discarded with the refusal recorded;
    a verified sender (or mail from before the flag) still gets its bounce."""
    await env.domain("example.com")
    await env.mailbox("bob@example.com")
    await env.mailing_list("news@example.com", "owner@example.com", "joe@remote.test",
                           posting=pb.POSTING_POLICY_MEMBERS)
    await env.alias("info@example.com", "news@example.com")
    await env.start()

    async def post(to: list[str], unverified: bool) -> list[tuple[int, str, str]]:
        stored = await env.spool.commit(Envelope(
            queue_id=new_queue_id(), sender="spammer@else.test", recipients=to,
            sender_unverified=unverified), BODY)
        await env.job("spammer@else.test", to, BODY, stored=stored)
        return [(rr.outcome, rr.enhanced_code, rr.reply)
                for rr in (await env.result()).results]

    for to in (["info@example.com"], ["news@example.com", "bob@example.com"]):
        results = await post(to, unverified=True)
        assert results[0][:2] == (OUTCOME_DELIVERED, "2.0.0"), to
        assert results[0][2].startswith("discarded, not bounced") and \
            "only members" in results[0][2], results[0][2]
        assert all(outcome == OUTCOME_DELIVERED for outcome, _, _ in results)
        results = await post(to, unverified=False)
        assert results[0][:2] == (OUTCOME_FAILED, "5.7.2"), to
    assert await env.todo_count() == 0  # no copy to the members either way
    assert len(env.messages("bob@example.com")) == 2


async def test_a_forward_keeps_the_unverified_mark(env: Env) -> None:
    """A forward's copy to another of our addresses keeps Envelope.sender_unverified, so a
    list it reaches there does not bounce it either."""
    await env.domain("example.com")
    await env.alias("fwd@example.com", "x@remote.test")
    await env.start()
    for unverified in (True, False):
        stored = await env.spool.commit(Envelope(
            queue_id=new_queue_id(), sender="a@else.test", recipients=["fwd@example.com"],
            sender_unverified=unverified), BODY)
        await env.job("a@else.test", ["fwd@example.com"], BODY, stored=stored)
        assert (await env.result()).results[0].outcome == OUTCOME_DELIVERED
        envelope, _ = await env.todo()
        assert envelope.sender_unverified is unverified


async def test_an_announce_list_without_an_owner_is_not_open_to_every_sender(
        env: Env) -> None:
    """A list from before owners were required sends from the poster; the policy took that
    stand-in for the owner, so whoever posted to such an announce-only list was its owner
    and got through."""
    await env.domain("example.com")
    await env.mailing_list("old@example.com", "", "joe@remote.test",
                           posting=pb.POSTING_POLICY_ANNOUNCE, posters=["ed@remote.test"])
    await env.start()
    await env.job("stranger@else.test", ["old@example.com"], BODY)
    [rr] = (await env.result()).results
    assert (rr.outcome, rr.enhanced_code) == (OUTCOME_FAILED, "5.7.2")
    await env.job("ed@remote.test", ["old@example.com"], BODY)
    assert (await env.result()).results[0].outcome == OUTCOME_DELIVERED
    sender = (await env.todo())[0].sender  # the poster, from an SRS address as a forward
    assert srs.reverse(sender, await SrsSecrets(env.js).get()) == "ed@remote.test"


async def test_a_list_with_an_owner_elsewhere_sends_its_copies_from_an_srs_address(
        env: Env) -> None:
    """A list's copies go from its owner; with the owner at another domain (owner@gmail) they
    left our IP as owner@gmail.test, failing SPF at every member's host as a forward without
    SRS does. They go from an SRS address of the list's domain now, reversing to the owner,
    so members' bounces reach the owner; an owner of our own domains, and control srs off,
    keep the owner."""
    await env.domain("example.com")
    await env.mailing_list("news@example.com", "owner@gmail.test", "m@remote.test")
    await env.mailing_list("local@example.com", "owner@example.com", "m@remote.test")
    await env.start()
    await env.job(SENDER, ["news@example.com"], BODY)
    assert (await env.result()).results[0].outcome == OUTCOME_DELIVERED
    envelope, _ = await env.todo()
    assert srs.is_srs(envelope.sender.partition("@")[0]), envelope.sender
    assert envelope.sender.endswith("@example.com"), envelope.sender
    assert srs.reverse(envelope.sender, await SrsSecrets(env.js).get()) == "owner@gmail.test"
    await env.job(SENDER, ["local@example.com"], BODY)
    assert (await env.result()).results[0].outcome == OUTCOME_DELIVERED
    assert (await env.todo())[0].sender == "owner@example.com"
    await env.control("srs", "off\n")
    await asyncio.sleep(0.5)  # the control view follows its bucket
    await env.job(SENDER, ["news@example.com"], BODY)
    assert (await env.result()).results[0].outcome == OUTCOME_DELIVERED
    assert (await env.todo())[0].sender == "owner@gmail.test"


async def test_a_member_posting_through_an_srs_forwarder_is_a_member_by_from(
        env: Env) -> None:
    """A members-only list: a member's post that reached it through a forwarder with SRS
    (envelope sender SRS0=...@forwarder) is taken by its From:; a stranger's through the
    same forwarder is not."""
    await env.domain("example.com")
    await env.mailing_list("news@example.com", "owner@example.com", "joe@remote.test",
                           posting=pb.POSTING_POLICY_MEMBERS)
    await env.start()
    forwarder = "SRS0=AbCd=TT=remote.test=joe@forwarder.test"
    await env.job(forwarder, ["news@example.com"],
                  b"From: Joe <Joe@Remote.test>\r\nSubject: hi\r\n\r\nbody\r\n")
    assert (await env.result()).results[0].outcome == OUTCOME_DELIVERED
    assert list((await env.todo())[0].recipients) == ["joe@remote.test"]
    await env.job("SRS0=AbCd=TT=else.test=x@forwarder.test", ["news@example.com"],
                  b"From: x@else.test\r\nSubject: hi\r\n\r\nbody\r\n")
    [rr] = (await env.result()).results
    assert (rr.outcome, rr.enhanced_code) == (OUTCOME_FAILED, "5.7.2")
    assert await env.todo_count() == 0


async def test_members_of_our_domains_get_the_owners_copies_from_the_owner(env: Env) -> None:
    """An owner elsewhere: the members at other domains get the copies from an SRS address,
    those of our own domains from the owner as before (no SPF check between us and us),
    so an announce-only list of ours among the members still sees its owner post, and is
    not refused 5.7.2 for an SRS sender no one is allowed as."""
    await env.domain("example.com")
    await env.mailing_list("news@example.com", "owner@gmail.test", "m@remote.test",
                           "sub@example.com")
    await env.mailing_list("sub@example.com", "owner@gmail.test", "s@remote.test",
                           posting=pb.POSTING_POLICY_ANNOUNCE)
    await env.start()
    await env.job(SENDER, ["news@example.com"], BODY)
    assert (await env.result()).results[0].outcome == OUTCOME_DELIVERED
    assert await env.todo_count() == 2  # a copy for each side
    copies = {}
    for _ in range(2):
        envelope, data = await env.todo()
        copies[tuple(envelope.recipients)] = envelope.sender, data
    assert srs.reverse(copies[("m@remote.test",)][0],
                       await SrsSecrets(env.js).get()) == "owner@gmail.test"
    sender, data = copies[("sub@example.com",)]
    assert sender == "owner@gmail.test"
    await env.job(sender, ["sub@example.com"], data)
    [rr] = (await env.result()).results
    assert rr.outcome == OUTCOME_DELIVERED, rr.reply
    envelope, _ = await env.todo()
    assert list(envelope.recipients) == ["s@remote.test"]
