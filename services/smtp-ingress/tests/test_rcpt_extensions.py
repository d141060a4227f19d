"""RCPT TO an address with an extension (joe+news@) or in an alias domain: accepted exactly
when local-delivery would deliver it (the directory's one resolution), over real SMTP."""

from __future__ import annotations

from typing import Any

from ingress_helpers import committed, session, wait_for

from mailyard.api.directory.v1 import directory_pb2 as dpb
from mailyard.core import bus
from mailyard.core.directory import SETTINGS_KEY, domain_key, record_key
from mailyard.core.spool import Spool
from mailyard.smtp_ingress import replies as R
from mailyard.smtp_ingress.server import Ingress


async def test_extensions_and_alias_domains_at_rcpt(local: Ingress, js: Any) -> None:
    kv = await bus.ensure_kv(js, bus.KV_DIRECTORY)
    await kv.put(domain_key("alias.test"),
                 dpb.Domain(name="alias.test", alias_of="example.org").SerializeToString())
    await wait_for(lambda: local.directory.is_local_domain("alias.test"))
    client = await session(local.ports["smtp"])
    assert await client.cmd("MAIL FROM:<sender@remote.test>") == R.MAIL_OK
    for rcpt, reply in (("alice+news@example.org", R.RCPT_OK),
                        ("Alice+News@Alias.Test", R.RCPT_OK),
                        ("bob@alias.test", R.RCPT_OK),
                        ("carol+news@example.org", R.UNKNOWN_USER),
                        ("+alice@example.org", R.UNKNOWN_USER),
                        ("alice-news@example.org", R.UNKNOWN_USER),
                        ("nobody@alias.test", R.UNKNOWN_USER)):
        assert await client.cmd(f"RCPT TO:<{rcpt}>") == reply, rcpt
    assert await client.cmd("DATA") == R.GO_AHEAD
    assert (await client.cmd("Subject: hi\r\n\r\nbody\r\n.")).startswith("250 ok ")
    [path] = committed(local)
    envelope, _ = Spool(local.settings.spool_dir).read_sync(path)
    # the envelope keeps the addresses as sent: local-delivery's Delivered-To is theirs
    assert envelope.recipients == ["alice+news@example.org", "Alice+News@Alias.Test",
                                   "bob@alias.test"]
    # qmail's "-" instead, set in the directory: the next RCPT follows it
    await kv.put(SETTINGS_KEY, dpb.Settings(recipient_delimiter="-").SerializeToString())
    await wait_for(lambda: local.directory.delimiters == "-")
    assert await client.cmd("MAIL FROM:<sender@remote.test>") == R.MAIL_OK
    assert await client.cmd("RCPT TO:<alice-news@example.org>") == R.RCPT_OK
    assert await client.cmd("RCPT TO:<alice+news@example.org>") == R.UNKNOWN_USER
    await client.close()


async def test_a_lists_command_addresses_are_never_posted(local: Ingress, js: Any) -> None:
    """news-subscribe@ with "-" (the qmail import's delimiter) reached the list news@ as an
    extension and went to every member. A list's extensions are its command addresses:
    -owner and -request reach the owner, the others are refused saying where to write."""
    kv = await bus.ensure_kv(js, bus.KV_DIRECTORY)
    await kv.put(record_key("list", "news@example.org"), dpb.MailingList(
        address="news@example.org", owner="alice@example.org",
        members=["bob@example.org"]).SerializeToString())
    await kv.put(SETTINGS_KEY, dpb.Settings(recipient_delimiter="-+").SerializeToString())
    await wait_for(lambda: local.directory.delimiters == "-+")
    await wait_for(lambda: local.directory.accepts("news@example.org"))
    client = await session(local.ports["smtp"])
    assert await client.cmd("MAIL FROM:<sender@remote.test>") == R.MAIL_OK
    for rcpt, reply in (("news-owner@example.org", R.RCPT_OK),
                        ("News+Request@example.org", R.RCPT_OK),
                        ("news-subscribe@example.org",
                         R.list_command("news@example.org", "news-owner@example.org")),
                        ("news+unsubscribe@example.org",
                         R.list_command("news@example.org", "news+owner@example.org")),
                        ("news-help@example.org",
                         R.list_command("news@example.org", "news-owner@example.org")),
                        ("news-sc.1234.abcd-joe=example.net@example.org",
                         R.list_command("news@example.org", "news-owner@example.org")),
                        ("news@example.org", R.RCPT_OK)):
        assert await client.cmd(f"RCPT TO:<{rcpt}>") == reply, rcpt
    assert R.list_command("news@example.org", "news-owner@example.org").startswith("550 5.7.1 ")
    await client.close()


async def test_a_lists_command_addresses_at_an_alias_domain(local: Ingress, js: Any) -> None:
    """news-subscribe@alias.test, alias.test an alias domain of example.org: refused at RCPT
    as at the real domain, naming the -owner address at the alias domain the client used;
    news-owner@alias.test and the list itself there are taken."""
    kv = await bus.ensure_kv(js, bus.KV_DIRECTORY)
    await kv.put(domain_key("alias.test"),
                 dpb.Domain(name="alias.test", alias_of="example.org").SerializeToString())
    await kv.put(record_key("list", "news@example.org"), dpb.MailingList(
        address="news@example.org", owner="alice@example.org",
        members=["bob@example.org"]).SerializeToString())
    await kv.put(SETTINGS_KEY, dpb.Settings(recipient_delimiter="-").SerializeToString())
    await wait_for(lambda: local.directory.delimiters == "-")
    await wait_for(lambda: local.directory.accepts("news@alias.test"))
    client = await session(local.ports["smtp"])
    assert await client.cmd("MAIL FROM:<sender@remote.test>") == R.MAIL_OK
    for rcpt, reply in (("news-subscribe@alias.test",
                         R.list_command("news@example.org", "news-owner@alias.test")),
                        ("News-Owner@Alias.test", R.RCPT_OK),
                        ("news@alias.test", R.RCPT_OK)):
        assert await client.cmd(f"RCPT TO:<{rcpt}>") == reply, rcpt
    await client.close()


async def _confirm_and_closed_lists(local: Ingress, js: Any) -> None:
    """news@ takes subscriptions by mail, closed@ does not; delimiters "-" and "+"."""
    kv = await bus.ensure_kv(js, bus.KV_DIRECTORY)
    await kv.put(record_key("list", "news@example.org"), dpb.MailingList(
        address="news@example.org", owner="alice@example.org", members=["bob@example.org"],
        subscription=dpb.SUBSCRIPTION_POLICY_CONFIRM).SerializeToString())
    await kv.put(record_key("list", "closed@example.org"), dpb.MailingList(
        address="closed@example.org", owner="alice@example.org").SerializeToString())
    await kv.put(SETTINGS_KEY, dpb.Settings(recipient_delimiter="-+").SerializeToString())
    await wait_for(lambda: local.directory.delimiters == "-+")
    await wait_for(lambda: local.directory.accepts("closed@example.org"))


async def test_a_list_that_takes_subscriptions_by_mail_accepts_its_commands(
        local: Ingress, js: Any) -> None:
    """A list whose subscription is confirm: its subscribe / unsubscribe addresses (both
    delimiters, ezmlm's -subscribe-user=host, the -sc. / -uc. confirmations) were refused
    550 5.7.1 like a closed list's, so no request or confirmation reached local-delivery.
    Taken now; its other extensions (-help) and a closed list's commands stay refused."""
    await _confirm_and_closed_lists(local, js)
    client = await session(local.ports["smtp"])
    assert await client.cmd("MAIL FROM:<sender@remote.test>") == R.MAIL_OK
    cookie = "6751a2b3." + "0" * 20
    for rcpt, reply in (("news-subscribe@example.org", R.RCPT_OK),
                        ("News+Unsubscribe@example.org", R.RCPT_OK),
                        ("news-subscribe-joe=example.net@example.org", R.RCPT_OK),
                        (f"news-sc.{cookie}-joe=example.net@example.org", R.RCPT_OK),
                        (f"news+uc.{cookie}-joe=example.net@example.org", R.RCPT_OK),
                        ("news-sc.1234.abcd-joe=example.net@example.org",
                         R.list_command("news@example.org", "news-owner@example.org")),
                        ("news-help@example.org",
                         R.list_command("news@example.org", "news-owner@example.org")),
                        ("closed-subscribe@example.org",
                         R.list_command("closed@example.org", "closed-owner@example.org"))):
        assert await client.cmd(f"RCPT TO:<{rcpt}>") == reply, rcpt
    await client.close()


async def test_a_lists_return_address_takes_its_bounces(local: Ingress, js: Any) -> None:
    """news+return@ (news-return@), the envelope sender of a list's confirmation requests,
    welcomes and goodbyes, was refused 550 5.7.1 like any command address, so their bounces
    were refused at our door; taken now from <> and anyone, for every list (one made closed
    since still gets the bounces of what it sent), while other extensions stay refused."""
    await _confirm_and_closed_lists(local, js)
    for sender in ("", "sender@remote.test"):
        client = await session(local.ports["smtp"])
        assert await client.cmd(f"MAIL FROM:<{sender}>") == R.MAIL_OK
        for rcpt, reply in (("news+return@example.org", R.RCPT_OK),
                            ("News-Return@example.org", R.RCPT_OK),
                            ("closed-return@example.org", R.RCPT_OK),
                            # ezmlm's VERP bounce addresses, after a move from ezmlm
                            ("news-return-12-bob=remote.test@example.org", R.RCPT_OK),
                            ("news-return-12-@example.org", R.RCPT_OK),
                            ("news-returns@example.org",
                             R.list_command("news@example.org", "news-owner@example.org"))):
            assert await client.cmd(f"RCPT TO:<{rcpt}>") == reply, rcpt
        await client.close()
