"""Aliases, forwards, lists and catch-alls: mailbox copies plus reinjection into the queue."""

from __future__ import annotations

import asyncio

from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.api.mail.v1.delivery_pb2 import OUTCOME_DELIVERED, OUTCOME_FAILED
from mailyard.api.mail.v1.envelope_pb2 import ORIGIN_FORWARD, ORIGIN_LIST
from mailyard.core import srs
from mailyard.core.directory import SETTINGS_KEY, record_key
from mailyard.core.srs_keys import SrsSecrets
from mailyard.local_delivery import listmail
from mailyard.local_delivery.deliver import LOOPING

from .conftest import Env

BODY = b"Subject: hello\r\n\r\nbody \xff\r\n"
SENDER = "author@sender.test"


async def reverses_to(env: Env, sender: str) -> str:
    """The original sender of a forwarded copy: a forward to another domain goes out from
    an SRS address (architecture.md, "Forwards and SRS") made under the platform's secret."""
    assert srs.is_srs(sender.partition("@")[0]), sender
    return srs.reverse(sender, await SrsSecrets(env.js).get())


def fields(mlist: str, owner: str = "owner@example.org") -> bytes:
    """The list fields of a copy (test_list_mail shows them)."""
    return listmail.fields(mlist, owner, "+", b"\r\n")


async def test_alias_to_local_mailbox_and_remote_address(env: Env) -> None:
    await env.domain("example.org")
    await env.mailbox("alice@example.org")
    await env.alias("info@example.org", "alice@example.org", "ext@remote.test")
    await env.start()
    await env.job(SENDER, ["info@example.org"], BODY)
    [rr] = (await env.result()).results
    assert rr.outcome == OUTCOME_DELIVERED
    assert env.messages("alice@example.org") == [
        b"Return-Path: <author@sender.test>\r\nDelivered-To: info@example.org\r\n" + BODY]
    envelope, data = await env.todo()
    assert envelope.origin == ORIGIN_FORWARD
    assert await reverses_to(env, envelope.sender) == SENDER
    assert list(envelope.recipients) == ["ext@remote.test"]
    assert data == b"Delivered-To: info@example.org\r\n" + BODY


async def test_nested_alias_and_alias_cycle(env: Env) -> None:
    await env.domain("example.org")
    await env.mailbox("alice@example.org")
    await env.alias("a@example.org", "b@example.org")
    await env.alias("b@example.org", "alice@example.org")
    await env.alias("p@example.org", "q@example.org")
    await env.alias("q@example.org", "p@example.org")
    await env.start()
    await env.job(SENDER, ["a@example.org", "p@example.org"], BODY)
    res = {r.recipient: r for r in (await env.result()).results}
    assert res["a@example.org"].outcome == OUTCOME_DELIVERED
    assert res["p@example.org"].outcome == OUTCOME_FAILED
    assert res["p@example.org"].enhanced_code == "5.4.6"
    assert len(env.messages("alice@example.org")) == 1
    assert await env.todo_count() == 0


async def test_forward_with_and_without_copy(env: Env) -> None:
    await env.domain("example.org")
    await env.mailbox("keep@example.org", forward_to=["k@remote.test"], keep_copy=True)
    await env.mailbox("move@example.org", forward_to=["m@remote.test"])
    await env.start()
    await env.job(SENDER, ["keep@example.org"], BODY)
    assert (await env.result()).results[0].outcome == OUTCOME_DELIVERED
    envelope, data = await env.todo()
    assert (envelope.origin, list(envelope.recipients)) == (ORIGIN_FORWARD, ["k@remote.test"])
    assert await reverses_to(env, envelope.sender) == SENDER
    assert data == b"Delivered-To: keep@example.org\r\n" + BODY
    assert env.messages("keep@example.org") == [
        b"Return-Path: <author@sender.test>\r\nDelivered-To: keep@example.org\r\n" + BODY]

    await env.job(SENDER, ["move@example.org"], BODY)
    assert (await env.result()).results[0].outcome == OUTCOME_DELIVERED
    envelope, _ = await env.todo()
    assert list(envelope.recipients) == ["m@remote.test"]
    assert env.messages("move@example.org") == []


async def test_forward_cycle_through_the_queue_ends_in_a_loop_bounce(env: Env) -> None:
    await env.domain("example.org")
    await env.mailbox("a@example.org", forward_to=["b@example.org"])
    await env.mailbox("b@example.org", forward_to=["a@example.org"])
    await env.start()
    await env.job(SENDER, ["a@example.org"], BODY)
    assert (await env.result()).results[0].outcome == OUTCOME_DELIVERED
    # Play the queue: the forwarded copies come back as new jobs.
    to_b, _ = await env.todo()
    await env.job(to_b.sender, list(to_b.recipients), b"", stored=to_b)
    assert (await env.result()).results[0].outcome == OUTCOME_DELIVERED
    to_a, data = await env.todo()
    assert data == (b"Delivered-To: b@example.org\r\nDelivered-To: a@example.org\r\n" + BODY)
    await env.job(to_a.sender, list(to_a.recipients), b"", stored=to_a)
    [rr] = (await env.result()).results
    assert (rr.outcome, rr.reply) == (OUTCOME_FAILED, LOOPING)
    assert to_a.sender == SENDER  # the bounce goes to the author


async def test_list_goes_to_members_with_owner_as_sender(env: Env) -> None:
    await env.domain("example.org")
    await env.mailbox("alice@example.org")
    await env.mailing_list("team@example.org", "owner@example.org",
                           "alice@example.org", "m@remote.test")
    await env.start()
    await env.job(SENDER, ["team@example.org"], BODY)
    assert (await env.result()).results[0].outcome == OUTCOME_DELIVERED
    envelope, data = await env.todo()
    assert envelope.origin == ORIGIN_LIST
    assert envelope.sender == "owner@example.org"
    assert sorted(envelope.recipients) == ["alice@example.org", "m@remote.test"]
    assert data == b"Delivered-To: team@example.org\r\n" + fields("team@example.org") + BODY
    assert await env.todo_count() == 0  # one message for the whole list


async def test_an_alias_domain_reaches_the_real_domains_records(env: Env) -> None:
    """team@alias.test is team@example.org's list (its own record, owner and members);
    info@ -> info@alias.test is the alias loop it is, not a directory change."""
    await env.domain("example.org")
    await env.domain("alias.test", alias_of="example.org")
    await env.mailbox("alice@example.org")
    await env.mailing_list("team@example.org", "owner@example.org", "m@remote.test")
    await env.alias("info@example.org", "info@alias.test")
    await env.start()
    await env.job(SENDER, ["Alice@Alias.test", "team@alias.test", "info@alias.test"], BODY)
    res = {r.recipient: r for r in (await env.result()).results}
    assert res["Alice@Alias.test"].outcome == OUTCOME_DELIVERED
    assert env.messages("alice@example.org") == [
        b"Return-Path: <author@sender.test>\r\nDelivered-To: alice@alias.test\r\n" + BODY]
    assert res["team@alias.test"].outcome == OUTCOME_DELIVERED
    envelope, data = await env.todo()
    assert (envelope.origin, envelope.sender, list(envelope.recipients)) == (
        ORIGIN_LIST, "owner@example.org", ["m@remote.test"])
    # the list's own line too: a member's forward back to the list is a loop at once
    assert data == (b"Delivered-To: team@example.org\r\nDelivered-To: team@alias.test\r\n"
                    + fields("team@example.org") + BODY)
    assert (res["info@alias.test"].outcome, res["info@alias.test"].enhanced_code) == (
        OUTCOME_FAILED, "5.4.6")


async def test_an_extension_is_delivered_to_the_address_without_it(env: Env) -> None:
    """joe+news@ lands in joe@'s maildir with its own Delivered-To line (as qmail-local's
    user-ext); an exact joe+exact@ keeps its own; info+x@ is info@'s alias."""
    await env.domain("example.org")
    await env.mailbox("joe@example.org")
    await env.mailbox("joe+exact@example.org")
    await env.alias("info@example.org", "joe@example.org")
    await env.start()
    await env.job(SENDER, ["Joe+News@example.org", "joe+exact@example.org",
                           "info+x@example.org", "ann+x@example.org"], BODY)
    res = {r.recipient: r for r in (await env.result()).results}
    assert res["Joe+News@example.org"].outcome == OUTCOME_DELIVERED
    assert res["joe+exact@example.org"].outcome == OUTCOME_DELIVERED
    assert res["ann+x@example.org"].outcome == OUTCOME_FAILED
    assert sorted(env.messages("joe@example.org")) == sorted([
        b"Return-Path: <author@sender.test>\r\nDelivered-To: joe+news@example.org\r\n" + BODY,
        b"Return-Path: <author@sender.test>\r\nDelivered-To: info+x@example.org\r\n" + BODY])
    assert env.messages("joe+exact@example.org") == [
        b"Return-Path: <author@sender.test>\r\nDelivered-To: joe+exact@example.org\r\n"
        + BODY]


async def test_a_list_as_big_as_a_record_holds_is_sent(env: Env) -> None:
    """A list the directory took (its record within nats-server's max_payload, 1 MiB: about
    45,000 members) made a todo notice that did not fit it (the envelope carries every
    member plus its own fields), so every message to the list was deferred as "queue
    unavailable" until it bounced. List mail now goes out as several messages, each member
    in one of them, each notice far below the limit."""
    limit = 1024 * 1024 - 60  # a record and its write's header (~55 bytes), as the directory checks
    record = pb.MailingList(address="big@example.org", owner="owner@example.org")
    each = len("member000000@example.net") + 2  # with its field's tag and length
    members = [f"member{n:06d}@example.net" for n in range((limit - record.ByteSize()) // each)]
    record.members.extend(members)
    assert limit - each < record.ByteSize() <= limit
    await env.domain("example.org")
    await env._put(record_key("list", "big@example.org"), record)
    await env.start()
    await env.job(SENDER, ["big@example.org"], BODY)
    [rr] = (await env.result()).results
    assert rr.outcome == OUTCOME_DELIVERED, rr.reply
    got: list[str] = []
    while len(got) < len(members):
        envelope, data = await env.todo()
        assert (envelope.origin, envelope.sender) == (ORIGIN_LIST, "owner@example.org")
        assert envelope.ByteSize() <= 300 * 1024
        assert data == b"Delivered-To: big@example.org\r\n" + fields("big@example.org") + BODY
        got += envelope.recipients
    assert sorted(got) == members and await env.todo_count() == 0


async def test_a_job_run_again_sends_its_list_mail_and_forwards_once(env: Env) -> None:
    """JetStream hands a job out again when its worker died before acking it (after the
    list mail went, before the result): each run made new queue ids, so every member got
    the list mail twice (and every forward target its forward). The reinjected messages'
    ids now come from the message, the recipient and the part, so another run's notices
    are the first's, deduplicated by JetStream (and by the queue, as known ids)."""
    from mailyard.core import bus

    await env.domain("example.org")
    await env.mailing_list("team@example.org", "owner@example.org", "m@remote.test")
    await env.mailbox("fw@example.org", forward_to=["f@remote.test"])
    await env.start()
    job = await env.job(SENDER, ["team@example.org", "fw@example.org"], BODY, seq=1)
    assert [r.outcome for r in (await env.result()).results] == [OUTCOME_DELIVERED] * 2
    await bus.publish(env.js, bus.JOB_SUBJECT["local"], job, msg_id=job.job_id + "-redelivered")
    # its result is the first's (deduplicated on the job id): wait for the job's ack
    for _ in range(500):
        if (await env.js.stream_info(bus.JOBS_STREAM)).state.messages == 0:
            break
        await asyncio.sleep(0.02)
    assert (await env.js.stream_info(bus.JOBS_STREAM)).state.messages == 0
    # the queue's own retry of those recipients (a new job id) makes the same messages too
    job.job_id = f"{job.queue_id}-2"
    await bus.publish(env.js, bus.JOB_SUBJECT["local"], job, msg_id=job.job_id)
    assert [r.outcome for r in (await env.result()).results] == [OUTCOME_DELIVERED] * 2
    assert await env.todo_count() == 2
    first, _ = await env.todo()
    second, _ = await env.todo()
    assert sorted([list(first.recipients), list(second.recipients)]) == [
        ["f@remote.test"], ["m@remote.test"]]
    assert len(list(env.spool.iter_committed())) == 3  # the message and its two copies


async def test_a_bounce_sent_to_a_list_goes_to_its_owner_not_its_members(env: Env) -> None:
    """A message from <> (a bounce, a double bounce) was sent to every member with the owner
    as sender: a bounce of forged spam reached thousands, a member's failure bounced again,
    and a list that owns itself (the directory takes that) went round for ever."""
    await env.domain("example.org")
    await env.mailbox("alice@example.org")
    await env.mailing_list("team@example.org", "owner@example.org",
                           "alice@example.org", "m@remote.test")
    await env.mailing_list("old@example.org", "", "alice@example.org")
    await env.start()
    await env.job("", ["team@example.org"], BODY)
    assert (await env.result()).results[0].outcome == OUTCOME_DELIVERED
    envelope, data = await env.todo()
    assert (envelope.origin, envelope.sender, list(envelope.recipients)) == (
        ORIGIN_LIST, "", ["owner@example.org"])
    assert data == b"Delivered-To: team@example.org\r\n" + BODY
    assert await env.todo_count() == 0 and env.messages("alice@example.org") == []
    # a list without an owner (older data) refuses it: a double bounce to the postmaster
    await env.job("", ["old@example.org"], BODY)
    [rr] = (await env.result()).results
    assert (rr.outcome, rr.enhanced_code) == (OUTCOME_FAILED, "5.7.2")
    assert await env.todo_count() == 0 and env.messages("alice@example.org") == []


async def test_a_copy_of_ascii_mail_to_or_from_a_utf8_address_is_smtputf8(env: Env) -> None:
    """A forward or list copy kept the original's SMTPUTF8 flag: a copy of ASCII mail to a
    target that is not ASCII went without it, and remote-delivery cannot name such a target
    (553 5.1.3, bounced) or such a list owner as sender (deferred, internal, until the
    message expired). The copy is flagged for what its own envelope needs."""
    await env.domain("example.org")
    await env.alias("info@example.org", "j\u00f6rg@remote.test")
    await env.mailing_list("team@example.org", "zo\u00eb@example.org", "m@remote.test")
    await env.mailing_list("plain@example.org", "owner@example.org", "m@remote.test")
    # its own address is in the copy's header (Delivered-To, List-Id, List-Post)
    await env.mailing_list("n\u00f6ws@example.org", "owner@example.org", "m@remote.test")
    await env.start()
    for recipient, smtputf8 in (("info@example.org", True), ("team@example.org", True),
                                ("plain@example.org", False), ("n\u00f6ws@example.org", True)):
        await env.job(SENDER, [recipient], BODY)
        assert (await env.result()).results[0].outcome == OUTCOME_DELIVERED
        envelope, _ = await env.todo()
        assert envelope.smtputf8 is smtputf8, recipient


async def test_catch_all_deliver_bounce_delete(env: Env) -> None:
    await env.domain("deliver.test", pb.CATCH_ALL_ACTION_DELIVER, "postmaster@deliver.test")
    await env.mailbox("postmaster@deliver.test")
    await env.domain("bounce.test", pb.CATCH_ALL_ACTION_BOUNCE)
    await env.domain("delete.test", pb.CATCH_ALL_ACTION_DELETE)
    await env.start()
    await env.job(SENDER, ["x@deliver.test", "y@bounce.test", "z@delete.test"], BODY)
    res = {r.recipient: r for r in (await env.result()).results}
    assert res["x@deliver.test"].outcome == OUTCOME_DELIVERED
    assert res["y@bounce.test"].outcome == OUTCOME_FAILED
    assert res["y@bounce.test"].enhanced_code == "5.1.1"
    assert res["z@delete.test"].outcome == OUTCOME_DELIVERED
    assert env.messages("postmaster@deliver.test") == [
        b"Return-Path: <author@sender.test>\r\nDelivered-To: x@deliver.test\r\n" + BODY]
    assert not (env.mail_dir / "delete.test").exists()


async def test_program_delivery_is_refused(env: Env) -> None:
    await env.domain("example.org")
    await env.alias("prog@example.org", "|/bin/sh -c 'rm -rf /'")
    await env.start()
    await env.job(SENDER, ["prog@example.org"], BODY)
    [rr] = (await env.result()).results
    assert (rr.outcome, rr.enhanced_code) == (OUTCOME_FAILED, "5.7.1")


async def test_a_target_elsewhere_keeps_the_case_of_its_local_part(env: Env) -> None:
    """Only our own local parts are matched lower-cased (vpopmail); a remote host's may be
    case-sensitive (RFC 5321 2.4), and the directory keeps them as given. Forwards, alias
    targets and list members went out lower-cased: John.Smith@ became john.smith@."""
    await env.domain("example.org")
    await env.mailbox("alice@example.org")
    await env.alias("info@example.org", "John.Smith@remote.test", "Alice@example.org",
                    "john.smith@remote.test")  # one copy, as before
    await env.mailbox("keep@example.org", forward_to=["Ann.Lee@remote.test"])
    await env.mailing_list("team@example.org", "owner@example.org", "Bob.Ray@remote.test")
    await env.start()
    for address, expected in (("INFO@example.org", ["John.Smith@remote.test"]),
                              ("keep@example.org", ["Ann.Lee@remote.test"]),
                              ("team@example.org", ["Bob.Ray@remote.test"])):
        await env.job(SENDER, [address], BODY)
        assert (await env.result()).results[0].outcome == OUTCOME_DELIVERED
        envelope, _ = await env.todo()
        assert list(envelope.recipients) == expected
    assert len(env.messages("alice@example.org")) == 1  # Alice@ is alice@, here


async def test_an_address_reached_through_an_alias_is_checked_for_my_delivered_to(
        env: Env) -> None:
    """qmail checks Delivered-To at each address a message is delivered to; aliases are
    expanded here in one step, so the list or mailbox an alias leads to was never checked:
    a list with a member aliased back to it, or a mailbox keeping a copy of what it forwards
    to an alias of itself, went round once more and each mailbox got the message twice."""
    await env.domain("example.org")
    await env.mailbox("alice@example.org")
    await env.mailing_list("team@example.org", "owner@example.org",
                           "alice@example.org", "back@example.org")
    await env.alias("back@example.org", "team@example.org")
    await env.mailbox("bob@example.org", forward_to=["info@example.org"], keep_copy=True)
    await env.alias("info@example.org", "bob@example.org")
    await env.start()
    for first in ("team@example.org", "bob@example.org"):
        await env.job(SENDER, [first], BODY)
        assert (await env.result()).results[0].outcome == OUTCOME_DELIVERED
        again, _ = await env.todo()  # the list mail or the forward, played by the queue
        await env.job(again.sender, list(again.recipients), b"", stored=again)
        res = {r.recipient: r for r in (await env.result()).results}
        assert (res["back@example.org" if first.startswith("team") else "info@example.org"]
                .reply) == LOOPING
        assert await env.todo_count() == 0
    assert len(env.messages("alice@example.org")) == 1
    assert len(env.messages("bob@example.org")) == 1


async def test_a_list_reached_through_an_alias_leaves_its_delivered_to(env: Env) -> None:
    """Mail to an alias of a list (info@ -> team@) went to the members with only the alias's
    Delivered-To line, so when a member's forward brought it back to team@ the list sent it
    to every member once more: qmail delivers to team@ itself and adds its line, ending
    the loop one round earlier. The list's line (and a forwarding mailbox's) is added too."""
    await env.domain("example.org")
    await env.mailbox("alice@example.org")
    await env.mailbox("loop@example.org", forward_to=["team@example.org"])
    await env.mailing_list("team@example.org", "owner@example.org",
                           "alice@example.org", "loop@example.org")
    await env.alias("info@example.org", "team@example.org")
    await env.alias("via@example.org", "loop@example.org")
    await env.start()
    await env.job(SENDER, ["info@example.org"], BODY)
    assert (await env.result()).results[0].outcome == OUTCOME_DELIVERED
    list_mail, data = await env.todo()
    await env.job(list_mail.sender, list(list_mail.recipients), b"", stored=list_mail)
    assert {r.outcome for r in (await env.result()).results} == {OUTCOME_DELIVERED}
    back, _ = await env.todo()  # loop@'s forward to team@
    await env.job(back.sender, list(back.recipients), b"", stored=back)
    [rr] = (await env.result()).results
    assert (rr.recipient, rr.reply) == ("team@example.org", LOOPING)
    assert await env.todo_count() == 0
    assert len(env.messages("alice@example.org")) == 1
    assert data == (b"Delivered-To: team@example.org\r\nDelivered-To: info@example.org\r\n"
                    + fields("team@example.org") + BODY)
    # a forwarding mailbox reached through an alias leaves its line on the forward as well
    await env.job(SENDER, ["via@example.org"], BODY)
    assert (await env.result()).results[0].outcome == OUTCOME_DELIVERED
    forward, data = await env.todo()
    assert list(forward.recipients) == ["team@example.org"]
    assert data == b"Delivered-To: loop@example.org\r\nDelivered-To: via@example.org\r\n" + BODY


async def test_aliases_that_share_targets_are_expanded_once_each(env: Env) -> None:
    """Aliases fanning out to the same aliases (six layers of ten, each naming all ten of
    the next: 61 records) were walked once per path, a million resolutions: 48 s with the
    event loop held (no progress acks, so JetStream handed the job to the next worker,
    which hung as well). Each address is now expanded once per message."""
    await env.domain("example.org")
    await env.mailbox("alice@example.org")
    layers, width = 6, 10
    for layer in range(layers):
        for i in range(width):
            targets = ([f"a{layer + 1}-{j}@example.org" for j in range(width)]
                       if layer < layers - 1 else ["alice@example.org"])
            await env.alias(f"a{layer}-{i}@example.org", *targets)
    await env.alias("top@example.org", *(f"a0-{j}@example.org" for j in range(width)))
    await env.start()
    await env.job(SENDER, ["top@example.org"], BODY)
    [rr] = (await env.result(timeout=10)).results
    assert rr.outcome == OUTCOME_DELIVERED
    assert len(env.messages("alice@example.org")) == 1


async def test_a_lists_command_address_is_never_posted(env: Env) -> None:
    """With "-" (the qmail import's delimiter) news-subscribe@ reached the list news@ as an
    extension and was posted to every member; it fails now, also where RCPT did not refuse
    it, and news-owner@ / news-request@ reach the owner alone."""
    await env.domain("example.org")
    await env.mailbox("alice@example.org")
    await env.mailbox("bob@example.org")
    await env.mailing_list("news@example.org", "alice@example.org", "bob@example.org",
                           "m@remote.test")
    await env._put(SETTINGS_KEY, pb.Settings(recipient_delimiter="-+"))
    await env.start()
    await env.job(SENDER, ["news-subscribe@example.org", "news+unsubscribe@example.org",
                           "news-help@example.org"], BODY)
    for rr in (await env.result()).results:
        assert (rr.outcome, rr.enhanced_code) == (OUTCOME_FAILED, "5.7.1"), rr.recipient
        assert "write to news" in rr.reply and "owner@example.org" in rr.reply
    assert await env.todo_count() == 0 and env.messages("bob@example.org") == []
    await env.job(SENDER, ["news-owner@example.org", "news-request@example.org"], BODY)
    assert [r.outcome for r in (await env.result()).results] == [OUTCOME_DELIVERED] * 2
    assert env.messages("alice@example.org") == [
        b"Return-Path: <author@sender.test>\r\nDelivered-To: news-owner@example.org\r\n" + BODY,
        b"Return-Path: <author@sender.test>\r\nDelivered-To: news-request@example.org\r\n"
        + BODY]
    assert await env.todo_count() == 0 and env.messages("bob@example.org") == []


async def test_a_lists_command_addresses_at_an_alias_domain(env: Env) -> None:
    """news-subscribe@alias.test, alias.test an alias domain of example.org: refused like
    news-subscribe@example.org, naming the -owner address at the alias domain, and never
    posted; news-owner@alias.test reaches the owner."""
    await env.domain("example.org")
    await env.domain("alias.test", alias_of="example.org")
    await env.mailbox("alice@example.org")
    await env.mailbox("bob@example.org")
    await env.mailing_list("news@example.org", "alice@example.org", "bob@example.org")
    await env._put(SETTINGS_KEY, pb.Settings(recipient_delimiter="-"))
    await env.start()
    await env.job(SENDER, ["news-subscribe@alias.test"], BODY)
    [rr] = (await env.result()).results
    assert (rr.outcome, rr.enhanced_code) == (OUTCOME_FAILED, "5.7.1")
    assert "write to news-owner@alias.test" in rr.reply, rr.reply
    await env.job(SENDER, ["news-owner@alias.test"], BODY)
    assert (await env.result()).results[0].outcome == OUTCOME_DELIVERED
    assert env.messages("alice@example.org") == [
        b"Return-Path: <author@sender.test>\r\nDelivered-To: news-owner@alias.test\r\n" + BODY]
    assert await env.todo_count() == 0 and env.messages("bob@example.org") == []


async def test_forwards_of_bounces_alias_domain_senders_and_srs_chains(env: Env) -> None:
    """A forward to another domain keeps <> (a bounce) and a sender of one of our alias
    domains (SPF passes for it as it is); one from another forwarder's SRS0 address goes
    from an SRS1 address that reverses to that SRS0 address, whose own forwarder reverses
    it to the author."""
    await env.domain("example.org")
    await env.domain("alias.test", alias_of="example.org")
    await env.mailbox("joe@example.org", forward_to=["ext@remote.test"])
    await env.start()
    first = srs.forward("alice@paypal.test", "fwd.test", [b"their secret"])
    for sender in ("", "ann@alias.test", first):
        await env.job(sender, ["joe@example.org"], BODY)
        assert (await env.result()).results[0].outcome == OUTCOME_DELIVERED
    assert (await env.todo())[0].sender == ""
    assert (await env.todo())[0].sender == "ann@alias.test"
    chained = (await env.todo())[0].sender
    assert chained.startswith("SRS1=") and chained.endswith("@example.org"), chained
    assert await reverses_to(env, chained) == first
    assert srs.reverse(first, [b"their secret"]) == "alice@paypal.test"


async def test_an_address_at_the_srsdomain_is_reversed_or_refused(env: Env) -> None:
    """control/srsdomain, a domain we do not host: the queue hands its addresses to
    local-delivery; one of our SRS addresses there goes on to the address it reverses to,
    any other address has no mailbox (not deferred as a domain no longer local until the
    queue lifetime ran out)."""
    await env.domain("example.org")
    await env.control("srsdomain", "srs.example.test\n")
    await env.start()
    address = srs.forward("alice@paypal.test", "srs.example.test",
                          await SrsSecrets(env.js).get())
    await env.job("", [address, "someone@srs.example.test"], BODY)
    res = {r.recipient: r for r in (await env.result()).results}
    assert res[address].outcome == OUTCOME_DELIVERED
    assert (res["someone@srs.example.test"].outcome,
            res["someone@srs.example.test"].enhanced_code) == (OUTCOME_FAILED, "5.1.1")
    envelope, _ = await env.todo()
    assert (envelope.sender, list(envelope.recipients)) == ("", ["alice@paypal.test"])
