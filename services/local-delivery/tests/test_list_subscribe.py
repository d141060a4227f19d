"""Subscribing to and leaving a list by mail (ezmlm's double opt-in): local-delivery answers
a list's -subscribe / -unsubscribe address with a confirmation request, and a reply to its
cookie address has the directory (its real gRPC servicer, with the token table) make the
change. Through the worker, NATS, the spool and the directory's KV."""

from __future__ import annotations

import asyncio
import email
import time
from collections.abc import AsyncIterator
from email import policy
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.api.directory.v1 import directory_pb2_grpc as pb_grpc
from mailyard.api.mail.v1.delivery_pb2 import OUTCOME_DEFERRED, OUTCOME_DELIVERED, OUTCOME_FAILED
from mailyard.api.mail.v1.envelope_pb2 import Envelope
from mailyard.core import auth, bus, listcookie
from mailyard.core.directory import SETTINGS_KEY, DirectoryView
from mailyard.core.grpcserver import GrpcServer, service_name
from mailyard.core.srs_keys import list_cookie_secrets
from mailyard.directory.directory_service import DirectoryService
from mailyard.directory.store import KVStore

from .conftest import Env

LIST = "news@example.com"
JOE = "joe@remote.test"
RETURN = "news+return@example.com"
POST = b"From: joe@remote.test\r\nSubject: hello\r\n\r\nbody\r\n"
ASK = b"From: joe@remote.test\r\nSubject: please\r\n\r\n\r\n"


@pytest.fixture
async def directory(env: Env, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """The directory's servicer on gRPC with a token table, as `mailyard up` runs it."""
    tokens = tmp_path / "tokens"
    auth.write_table(tokens)
    view = DirectoryView()
    await view.start(env.js)
    server = GrpcServer("127.0.0.1", 0, [(
        pb_grpc.add_DirectoryServicer_to_server,
        DirectoryService(KVStore(env.js, bus.KV_DIRECTORY), view,
                         cookie_secrets=list_cookie_secrets(env.js)),
        service_name(pb, "Directory"))], tokens_file=tokens)
    await server.start()
    yield {"directory_addr": f"127.0.0.1:{server.port}", "token_file": tokens, "view": view}
    await server.stop(0)
    await view.stop()


async def _setup(env: Env, directory: dict[str, Any], **fields: Any) -> None:
    await env.domain("example.com")
    await env.mailing_list(LIST, "owner@example.com", "m@remote.test", **fields)
    await env.start(directory_addr=directory["directory_addr"],
                    token_file=directory["token_file"])


async def _members(directory: dict[str, Any]) -> list[str]:
    mlist = directory["view"].mailing_list(LIST)
    return list(mlist.members)


async def _delivered(env: Env, sender: str, to: str, data: bytes) -> Any:
    await env.job(sender, [to], data)
    [rr] = (await env.result()).results
    assert rr.outcome == OUTCOME_DELIVERED, rr.reply
    return rr


async def _request(env: Env, sender: str, to: str, data: bytes = ASK) -> tuple[Any, Any]:
    await _delivered(env, sender, to, data)
    return await _request_sent(env)


async def _request_sent(env: Env) -> tuple[Any, Any]:
    """The next message local-delivery queued (its envelope, parsed)."""
    envelope, raw = await env.todo()
    return envelope, email.message_from_bytes(raw, policy=policy.SMTP)


async def _wait_members(directory: dict[str, Any], want: list[str]) -> None:
    deadline = time.monotonic() + 10
    while await _members(directory) != want and time.monotonic() < deadline:
        await _sleep()
    assert await _members(directory) == want


async def _sleep() -> None:
    await asyncio.sleep(0.05)  # the view follows the directory's writes


async def test_subscribe_confirm_welcome_next_post_then_leave(
        env: Env, directory: dict[str, Any]) -> None:
    """news+subscribe@ was refused 5.7.1 "takes no commands by mail". Now: a confirmation
    request to the sender, from the list's -owner address, Reply-To the cookie address;
    mail to that joins (a welcome note) and the next post reaches the new member with a
    List-Unsubscribe that works by mail; -unsubscribe and its confirmation leave."""
    await _setup(env, directory, subscription=pb.SUBSCRIPTION_POLICY_CONFIRM)
    envelope, request = await _request(env, "Joe@Remote.test", "news+subscribe@example.com")
    assert (envelope.sender, list(envelope.recipients)) == (RETURN, [JOE])
    assert request["From"] == "news+owner@example.com"
    assert request["Auto-Submitted"] == "auto-replied"
    confirm = str(request["Reply-To"])
    assert confirm.startswith("news+sc.") and confirm.endswith("-joe=remote.test@example.com")
    assert confirm in request.get_content()
    assert await _members(directory) == ["m@remote.test"]  # nothing yet

    envelope, welcome = await _request(env, JOE, confirm, b"Subject: Re: confirm\r\n\r\n\r\n")
    assert (envelope.sender, list(envelope.recipients)) == (RETURN, [JOE])
    assert "welcome" in welcome["Subject"]
    await _wait_members(directory, ["m@remote.test", JOE])

    await _delivered(env, "ann@else.test", LIST, POST)
    envelope, copy = await env.todo()
    assert sorted(envelope.recipients) == sorted(["m@remote.test", JOE])
    assert b"List-Unsubscribe: <mailto:news+unsubscribe@example.com>\r\n" in copy
    assert b"List-Subscribe: <mailto:news+subscribe@example.com>\r\n" in copy

    _, request = await _request(env, JOE, "news+unsubscribe@example.com")
    leave = str(request["Reply-To"])
    assert leave.startswith("news+uc.")
    envelope, goodbye = await _request(env, JOE, leave)
    assert "goodbye" in goodbye["Subject"] and envelope.sender == RETURN
    await _wait_members(directory, ["m@remote.test"])


async def test_ezmlms_subscribe_user_host_form_asks_that_address(
        env: Env, directory: dict[str, Any]) -> None:
    await _setup(env, directory, subscription=pb.SUBSCRIPTION_POLICY_CONFIRM)
    await env._put(SETTINGS_KEY, pb.Settings(recipient_delimiter="-+"))
    await _sleep()
    envelope, request = await _request(env, JOE, "news-subscribe-ann=else.test@example.com")
    assert list(envelope.recipients) == ["ann@else.test"]
    assert envelope.sender == "news-return@example.com"  # the delimiter in use
    assert str(request["Reply-To"]).startswith("news-sc.")


async def test_a_forged_or_expired_cookie_changes_nothing_and_bounces_to_nobody(
        env: Env, directory: dict[str, Any]) -> None:
    """A bad cookie changes nothing. As ezmlm-manage (sub-bad), the address it names gets a
    new request, bounded as every request is, and the sender no bounce: anyone can send
    forged cookies with a forged sender, and a bounce each is backscatter to that sender."""
    await _setup(env, directory, subscription=pb.SUBSCRIPTION_POLICY_CONFIRM)
    [secret] = await list_cookie_secrets(env.js).get()
    old = listcookie.make(secret, LIST, listcookie.SUBSCRIBE, JOE, time.time() - 11 * 86400)
    good = listcookie.make(secret, LIST, listcookie.SUBSCRIBE, JOE, time.time())
    forged = good.split(".")[0] + "." + "0" * listcookie.MAC_HEX
    victim = "victim@else.test"
    await env.job(victim, [f"news+sc.{old}-joe=remote.test@example.com"], ASK)
    [rr] = (await env.result()).results
    assert (rr.outcome, rr.enhanced_code) == (OUTCOME_DELIVERED, "2.0.0")
    assert rr.reply == "confirmation invalid or expired: a new request sent to joe@remote.test"
    envelope, request = await _request_sent(env)
    assert list(envelope.recipients) == [JOE]           # the cookie's address, not the sender
    assert "invalid or has expired" in request.get_content()
    assert str(request["Reply-To"]).startswith("news+sc.")
    # a forged one for the same address within the hour: over the bound, dropped
    await env.job(victim, [f"news+sc.{forged}-joe=remote.test@example.com"], ASK)
    [rr] = (await env.result()).results
    assert rr.outcome == OUTCOME_DELIVERED and "over the bound" in rr.reply
    # someone else's cookie for joe is not eve's: eve is asked, joe is not changed
    await env.job(JOE, [f"news+sc.{good}-eve=remote.test@example.com"], ASK)
    assert (await env.result()).results[0].outcome == OUTCOME_DELIVERED
    envelope, _ = await _request_sent(env)
    assert list(envelope.recipients) == ["eve@remote.test"]
    assert await env.todo_count() == 0
    assert await _members(directory) == ["m@remote.test"]


async def test_robots_get_no_answer(env: Env, directory: dict[str, Any]) -> None:
    """<>, MAILER-DAEMON, an Auto-Submitted or bulk message: accepted and not answered."""
    await _setup(env, directory, subscription=pb.SUBSCRIPTION_POLICY_CONFIRM)
    for sender, head in (("", b""), ("MAILER-DAEMON@else.test", b""),
                         ("owner-x@else.test", b""),
                         (JOE, b"Auto-Submitted: auto-replied\r\n"),
                         (JOE, b"Precedence: bulk\r\n")):
        rr = await _delivered(env, sender, "news+subscribe@example.com", head + ASK)
        assert "not answered" in rr.reply
    assert await env.todo_count() == 0


async def test_a_closed_list_still_refuses_commands(env: Env, directory: dict[str, Any]) -> None:
    await _setup(env, directory)
    await env.job(JOE, ["news+subscribe@example.com"], ASK)
    [rr] = (await env.result()).results
    assert (rr.outcome, rr.enhanced_code) == (OUTCOME_FAILED, "5.7.1")
    assert "takes no commands by mail" in rr.reply
    assert await env.todo_count() == 0


async def test_an_alias_to_a_command_address_is_refused_not_answered_in_its_place(
        env: Env, directory: dict[str, Any]) -> None:
    """An alias whose targets are a mailbox and a list's subscribe address: the command was
    answered in the alias's place, reported delivered, and the mailbox never got its copy.
    A command is taken only as the recipient itself; through an alias it fails as a closed
    list's does (the whole alias, as any failing target fails it)."""
    await env.mailbox("ann@example.com", maildir="example.com/ann/Maildir")
    await env.alias("both@example.com", "ann@example.com", "news+subscribe@example.com")
    await _setup(env, directory, subscription=pb.SUBSCRIPTION_POLICY_CONFIRM)
    await env.job(JOE, ["both@example.com"], ASK)
    [rr] = (await env.result()).results
    assert rr.outcome == OUTCOME_FAILED and "takes no commands by mail" in rr.reply
    assert await env.todo_count() == 0
    assert env.messages("ann@example.com") == []


def _limited() -> float:
    return REGISTRY.get_sample_value("mailyard_local_list_commands_total",
                                     {"result": "limited"}) or 0.0


async def test_confirmation_requests_to_one_address_are_bounded(
        env: Env, directory: dict[str, Any]) -> None:
    """Anyone could make us mail a confirmation request to anyone (news-subscribe-victim=
    host@, or a forged sender) as often as they liked, through every list we host: a mail
    bomb in our name. Now at most one per (list, action, address) an hour and five per
    address a day across all lists (KV `listrequests`, per-key TTLs); the others are
    accepted and dropped without an answer (answering is the abuse), counted limited."""
    await env.domain("example.com")
    lists = [f"l{n}@example.com" for n in range(7)]
    for address in lists:
        await env.mailing_list(address, "owner@example.com", "m@remote.test",
                               subscription=pb.SUBSCRIPTION_POLICY_CONFIRM)
    await env.start(directory_addr=directory["directory_addr"],
                    token_file=directory["token_file"])
    before = _limited()
    victim = "l0+subscribe-victim=else.test@example.com"
    envelope, _ = await _request(env, "eve@evil.test", victim)
    assert list(envelope.recipients) == ["victim@else.test"]
    for sender in ("eve@evil.test", "other@evil.test", "Victim@Else.test"):
        rr = await _delivered(env, sender, victim, ASK)
        # delivered (no bounce tells the asker anything); the postmaster's log says why
        assert rr.reply.startswith("confirmation request not sent: over the bound")
    assert await env.todo_count() == 0
    assert _limited() == before + 3
    # leaving is not joining: its own request in the same hour
    await _request(env, "victim@else.test", "l0+unsubscribe@example.com")
    # three more lists reach the day's five; the sixth and seventh get nothing
    for n in (1, 2, 3):
        await _request(env, "eve@evil.test", f"l{n}+subscribe-victim=else.test@example.com")
    for n in (4, 5):
        await _delivered(env, "eve@evil.test", f"l{n}+subscribe-victim=else.test@example.com",
                         ASK)
    assert await env.todo_count() == 0
    assert _limited() == before + 5
    # another address is not held back by the victim's bound
    envelope, _ = await _request(env, JOE, "l5+subscribe@example.com")
    assert list(envelope.recipients) == [JOE]


async def test_without_the_request_bucket_requests_still_go_out(
        env: Env, directory: dict[str, Any]) -> None:
    """The bound is a guard, not a reason to lose a subscriber: with its bucket gone the
    request is sent (as greylisting lets mail through), and the bucket is made again."""
    await _setup(env, directory, subscription=pb.SUBSCRIPTION_POLICY_CONFIRM)
    await _request(env, JOE, "news+subscribe@example.com")
    await env.js.delete_key_value(bus.KV_LIST_REQUESTS)
    envelope, _ = await _request(env, JOE, "news+subscribe@example.com")
    assert list(envelope.recipients) == [JOE]
    await _request(env, JOE, "news+subscribe@example.com")  # a fresh bucket: not counted
    await env.job(JOE, ["news+subscribe@example.com"], ASK)
    await env.result()
    assert await env.todo_count() == 0  # bounded again
    await env.js.key_value(bus.KV_LIST_REQUESTS)


def _returned() -> float:
    return REGISTRY.get_sample_value("mailyard_local_list_commands_total",
                                     {"result": "returned"}) or 0.0


async def test_mail_to_the_return_address_is_dropped_never_answered_nor_posted(
        env: Env, directory: dict[str, Any]) -> None:
    """Requests, welcomes and goodbyes go from news+return@ (ezmlm's LIST-return-), so a
    bounce comes back to the list and a BATV-checking receiver takes them; what reaches
    that address (a bounce, a robot's reply, anyone's mail) is accepted and dropped,
    counted returned: never posted, answered or bounced. A list made closed since keeps
    taking the bounces of what it sent before."""
    await env.mailing_list("closed@example.com", "owner@example.com", "m@remote.test")
    await _setup(env, directory, subscription=pb.SUBSCRIPTION_POLICY_CONFIRM)
    before = _returned()
    bounce = b"From: MAILER-DAEMON@remote.test\r\nSubject: failure notice\r\n\r\nno\r\n"
    for sender, to, data in (("", RETURN, bounce), (JOE, "News+Return@example.com", POST),
                             ("", "closed+return@example.com", bounce),
                             ("", "news+return-12-m=remote.test@example.com", bounce)):
        rr = await _delivered(env, sender, to, data)
        assert "dropped" in rr.reply, to
    assert await env.todo_count() == 0
    assert _returned() == before + 4


async def test_one_mailbox_under_many_spellings_shares_its_days_bound(
        env: Env, directory: dict[str, Any]) -> None:
    """The day's bound per address was per spelling, so victim+1@, victim+2@ ... (one
    mailbox at nearly every provider), victim@bücher.example. or the U-label and A-label of
    one domain each got five requests a day: no bound at all. The day's bound now counts the
    mailbox: the local part before a "+" and the domain as DNS sees it."""
    await env.domain("example.com")
    await env.mailing_list(LIST, "owner@example.com", "m@remote.test",
                           subscription=pb.SUBSCRIPTION_POLICY_CONFIRM)
    await env.start(directory_addr=directory["directory_addr"],
                    token_file=directory["token_file"])
    before = _limited()
    spellings = ["victim=bücher.example", "victim+1=bücher.example",
                 "victim+2=xn--bcher-kva.example", "victim=bücher.example.",
                 "victim=xn--bcher-kva.example."]
    for spelling in spellings:  # the day's five
        await _request(env, "eve@evil.test", f"news+subscribe-{spelling}@example.com")
    for spelling in ("victim+3=bücher.example", "victim=XN--BCHER-KVA.example",
                     "victim+9=xn--bcher-kva.example."):
        rr = await _delivered(env, "eve@evil.test", f"news+subscribe-{spelling}@example.com",
                              ASK)
        assert "not sent" in rr.reply, spelling
    assert await env.todo_count() == 0
    assert _limited() == before + 3


async def test_a_request_deferred_for_want_of_the_queue_is_sent_on_its_retry(
        env: Env, directory: dict[str, Any]) -> None:
    """A request that could not be put in the queue (its stream full) is deferred; the
    bound it had claimed is given back, so the retry sends it and is not dropped as a
    repeat of a request nobody got."""
    await _setup(env, directory, subscription=pb.SUBSCRIPTION_POLICY_CONFIRM)
    info = await env.js.stream_info(bus.TODO_STREAM)
    unbounded = info.config.max_msgs
    info.config.max_msgs, info.config.discard = 1, bus.DiscardPolicy.NEW
    await env.js.update_stream(info.config)
    await bus.publish(env.js, bus.TODO_SUBJECT, Envelope(queue_id="filler"), msg_id="filler")
    await env.job(JOE, ["news+subscribe@example.com"], ASK)
    [rr] = (await env.result()).results
    assert (rr.outcome, rr.enhanced_code) == (OUTCOME_DEFERRED, "4.3.0"), rr.reply
    info.config.max_msgs = unbounded
    await env.js.update_stream(info.config)
    await env.js.purge_stream(bus.TODO_STREAM)
    envelope, _ = await _request(env, JOE, "news+subscribe@example.com")
    assert list(envelope.recipients) == [JOE]
