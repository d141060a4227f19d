"""mail_sender_login (opt-in): an AUTH session's envelope sender must be the login's own
address or one the directory leads only to that mailbox, as Postfix's
reject_authenticated_sender_login_mismatch. Real SMTP with the real relay-auth, the
directory's records in NATS KV."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from ingress_helpers import (
    Client,
    MakeIngress,
    committed,
    ingress_settings,
    put_control,
    seed_directory,
    seed_user,
    session,
    submission_login,
    wait_for,
)
from prometheus_client import REGISTRY

from mailyard.api.directory.v1 import directory_pb2 as dpb
from mailyard.core import bus
from mailyard.core.directory import DirectoryView, canonical, domain_key, record_key
from mailyard.core.natsserver import free_port
from mailyard.smtp_ingress import replies as R
from mailyard.smtp_ingress.policy.mail_sender_login import leads_only_to
from mailyard.smtp_ingress.server import Ingress
from mailyard.smtp_ingress.settings import DEFAULT_MAIL_CHECKS
from mailyard.smtp_ingress.syntax import SyntaxProblem, parse_address

ON = f"mail_auth_required,mail_sender_login,{DEFAULT_MAIL_CHECKS.partition(',')[2]}"


def _rejections() -> float:
    return REGISTRY.get_sample_value("mailyard_smtp_rejections_total",
                                     {"reason": "sender_login"}) or 0.0


async def _directory(js: Any) -> None:
    """example.org: alice (the login), bob; aliases of alice alone, shared ones, a list,
    forwarding mailboxes, and a catch-all to alice."""
    await seed_directory(js, "example.org", ["alice@example.org", "bob@example.org"])
    await seed_user(js, "alice@example.org", "secret")
    kv = await bus.ensure_kv(js, bus.KV_DIRECTORY)
    await kv.put(domain_key("example.org"), dpb.Domain(
        name="example.org", catch_all=dpb.CATCH_ALL_ACTION_DELIVER,
        catch_all_target="alice@example.org").SerializeToString())
    aliases = {"al@example.org": ["Alice@Example.ORG"],       # targets keep the case given
               "a2@example.org": ["al@example.org"],          # alias of an alias of alice
               "twice@example.org": ["alice@example.org", "ALICE@example.org"],
               "team@example.org": ["alice@example.org", "bob@example.org"],
               "out@example.org": ["alice@elsewhere.test"]}
    await kv.put(domain_key("alias.example"), dpb.Domain(
        name="alias.example", alias_of="example.org").SerializeToString())
    for address, targets in aliases.items():
        await kv.put(record_key("alias", address),
                     dpb.Alias(address=address, targets=targets).SerializeToString())
    await kv.put(record_key("list", "staff@example.org"), dpb.MailingList(
        address="staff@example.org", owner="alice@example.org",
        members=["alice@example.org"]).SerializeToString())
    for address, keep in (("old@example.org", False), ("copy@example.org", True)):
        await kv.put(record_key("mailbox", address), dpb.Mailbox(
            address=address, forward_to=["alice@example.org"],
            keep_copy=keep).SerializeToString())


async def _ingress(make_ingress: MakeIngress, js: Any, relay_auth: str, rules: str,
                   **kw: Any) -> Ingress:
    await put_control(js, "tcp.smtp", rules)
    await _directory(js)
    ingress = await make_ingress(relay_auth_addr=relay_auth, relay_auth_timeout=2.0, **kw)
    await wait_for(lambda: ingress.directory.mailbox("copy@example.org") is not None
                   and ingress.directory.mailing_list("staff@example.org") is not None)
    return ingress


async def test_an_auth_user_sends_only_as_its_own_addresses(
        make_ingress: MakeIngress, js: Any, relay_auth: str,
        client_tls: ssl.SSLContext) -> None:
    ingress = await _ingress(make_ingress, js, relay_auth, "127.0.0.1:allow\n",
                             mail_checks=ON)
    client = await submission_login(ingress, client_tls, "alice@example.org", "secret")
    for own in ("<alice@example.org>", "<ALICE@Example.ORG>", "<alice@example.org.>",
                '<"alice"@example.org>', "<al@example.org>", "<AL@EXAMPLE.ORG>",
                "<a2@example.org>", "<twice@example.org>", "<old@example.org>", "<>",
                "<alice@example.org> AUTH=<>",
                "<alice+tag@example.org>",    # an extension of hers (the default "+")
                "<alice@alias.example>", "<al@alias.example>"):  # her alias domain
        assert await client.cmd(f"MAIL FROM:{own}") == R.MAIL_OK, own
        assert await client.cmd("RSET") == R.FLUSHED
    before = _rejections()
    refused = ("bob@example.org",       # another user's mailbox
               "team@example.org",      # an alias shared with bob
               "staff@example.org",     # a list, though alice is its owner and member
               "copy@example.org",      # forwards to alice but keeps its own copy
               "nobody@example.org",    # only the catch-all leads it to alice
               "alice-tag@example.org",  # "-" is no delimiter here: no such address
               "bob@alias.example", "bob+alice@example.org",  # bob's, however it is spelt
               "out@example.org",       # an alias that leaves the platform
               "alice@elsewhere.test")  # not ours at all
    for other in refused:
        assert await client.cmd(f"MAIL FROM:<{other}>") == \
            R.sender_not_owned(other, "alice@example.org"), other
    # AUTH= on MAIL (RFC 4954 5) names who submitted the message; it changes nothing
    assert await client.cmd("MAIL FROM:<bob@example.org> AUTH=<alice@example.org>") == \
        R.sender_not_owned("bob@example.org", "alice@example.org")
    assert await client.cmd("MAIL FROM:<bob@example.org> AUTH=bob@example.org") == \
        R.sender_not_owned("bob@example.org", "alice@example.org")
    assert _rejections() - before == len(refused) + 2
    # and mail from an alias goes through whole
    assert await client.cmd("MAIL FROM:<al@example.org>") == R.MAIL_OK
    assert await client.cmd("RCPT TO:<x@elsewhere.test>") == R.RCPT_OK
    assert await client.cmd("DATA") == R.GO_AHEAD
    await client.send("Subject: from an alias\r\n\r\nhi\r\n.\r\n")
    assert (await client.reply()).startswith("250 ok ")
    assert len(committed(ingress)) == 1


async def test_vpopmail_login_forms_send_as_the_canonical_user(
        make_ingress: MakeIngress, js: Any, relay_auth: str,
        client_tls: ssl.SSLContext) -> None:
    """A login as "alice" (control/defaultdomain) or "alice%example.org" is alice@example.org
    for the sender check too: relay-auth answers the canonical user."""
    await put_control(js, "defaultdomain", "example.org\n")
    ingress = await _ingress(make_ingress, js, relay_auth, "127.0.0.1:allow\n",
                             mail_checks=ON)
    for login in ("Alice", "alice%example.org"):
        client = await submission_login(ingress, client_tls, login, "secret")
        assert await client.cmd("MAIL FROM:<alice@example.org>") == R.MAIL_OK, login
        assert await client.cmd("RSET") == R.FLUSHED
        assert await client.cmd("MAIL FROM:<bob@example.org>") == \
            R.sender_not_owned("bob@example.org", "alice@example.org"), login


async def test_the_directory_is_read_as_it_changes(
        make_ingress: MakeIngress, js: Any, relay_auth: str,
        client_tls: ssl.SSLContext) -> None:
    """An alias given to alice, or taken away, counts at the next MAIL: no restart."""
    ingress = await _ingress(make_ingress, js, relay_auth, "127.0.0.1:allow\n",
                             mail_checks=ON)
    client = await submission_login(ingress, client_tls, "alice@example.org", "secret")
    refused = R.sender_not_owned("sales@example.org", "alice@example.org")
    assert await client.cmd("MAIL FROM:<sales@example.org>") == refused
    kv = await bus.ensure_kv(js, bus.KV_DIRECTORY)
    await kv.put(record_key("alias", "sales@example.org"), dpb.Alias(
        address="sales@example.org", targets=["alice@example.org"]).SerializeToString())
    await wait_for(lambda: ingress.directory.alias("sales@example.org") is not None)
    assert await client.cmd("MAIL FROM:<sales@example.org>") == R.MAIL_OK
    assert await client.cmd("RSET") == R.FLUSHED
    await kv.delete(record_key("alias", "sales@example.org"))
    await wait_for(lambda: ingress.directory.alias("sales@example.org") is None)
    assert await client.cmd("MAIL FROM:<sales@example.org>") == refused


async def test_idna_domains_compare_in_either_form(
        make_ingress: MakeIngress, js: Any, relay_auth: str,
        client_tls: ssl.SSLContext) -> None:
    """The login and the sender name the domain as U-label or A-label, any case; the
    directory holds the A-label."""
    await seed_directory(js, "xn--bcher-kva.example", [])
    await seed_user(js, "joe@xn--bcher-kva.example", "pw")
    kv = await bus.ensure_kv(js, bus.KV_DIRECTORY)
    await kv.put(record_key("alias", "jo@xn--bcher-kva.example"), dpb.Alias(
        address="jo@xn--bcher-kva.example",
        targets=["joe@bücher.example"]).SerializeToString())
    ingress = await _ingress(make_ingress, js, relay_auth, "127.0.0.1:allow\n",
                             mail_checks=ON)
    await wait_for(lambda: ingress.directory.alias("jo@bücher.example") is not None)
    client = await submission_login(ingress, client_tls, "Joe@Bücher.example", "pw")
    for own in ("<joe@bücher.example> SMTPUTF8", "<joe@BÜCHER.example> SMTPUTF8",
                "<JOE@XN--BCHER-KVA.EXAMPLE>", "<jo@xn--bcher-kva.example>",
                "<jo@bücher.example> SMTPUTF8"):
        assert await client.cmd(f"MAIL FROM:{own}") == R.MAIL_OK, own
        assert await client.cmd("RSET") == R.FLUSHED
    assert await client.cmd("MAIL FROM:<joe@bucher.example>") == \
        R.sender_not_owned("joe@bucher.example", "joe@xn--bcher-kva.example")
    assert await client.cmd("MAIL FROM:<alice@example.org>") == \
        R.sender_not_owned("alice@example.org", "joe@xn--bcher-kva.example")


async def test_an_alias_waits_while_the_directory_is_not_loaded(
        tmp_path: Path, js: Any, relay_auth: str, tls_files: tuple[str, str],
        client_tls: ssl.SSLContext) -> None:
    """The ingress's NATS away (its directory view empty), relay-auth up: the login itself
    needs no directory and goes on; an alias cannot be told from a stranger's address yet,
    so it gets a 451 to retry, not a 553 that would bounce the user's mail."""
    await _directory(js)  # what relay-auth reads
    ingress = Ingress(ingress_settings(
        tmp_path, f"nats://127.0.0.1:{free_port()}", tls_files, relay_auth_addr=relay_auth,
        relay_auth_timeout=2.0, mail_checks=ON))
    await ingress.start()
    try:
        assert not ingress.directory.ready
        client = await submission_login(ingress, client_tls, "alice@example.org", "secret")
        assert await client.cmd("MAIL FROM:<Alice@example.org>") == R.MAIL_OK
        assert await client.cmd("RSET") == R.FLUSHED
        assert await client.cmd("MAIL FROM:<al@example.org>") == R.UNAVAILABLE
        await client.close()
    finally:
        await ingress.stop(grace=2)


async def test_sessions_without_auth_are_not_affected(
        make_ingress: MakeIngress, js: Any, relay_auth: str) -> None:
    """A relay client by tcp.smtp RELAYCLIENT has no login to compare, and mail from
    outside to our users is no user's submission: any sender, as before."""
    ingress = await _ingress(make_ingress, js, relay_auth,
                             '127.0.0.1:allow,RELAYCLIENT=""\n127.0.0.2:allow\n',
                             mail_checks=ON)
    client = await session(ingress.ports["smtp"])
    assert await client.cmd("MAIL FROM:<bob@example.org>") == R.MAIL_OK
    assert await client.cmd("RCPT TO:<x@elsewhere.test>") == R.RCPT_OK
    reader, writer = await asyncio.open_connection("127.0.0.1", ingress.ports["smtp"],
                                                   local_addr=("127.0.0.2", 0))
    outside = Client(reader, writer)
    assert (await outside.reply()).startswith("220 ")
    assert (await outside.cmd("EHLO outside.test")).startswith("250")
    assert await outside.cmd("MAIL FROM:<alice@example.org>") == R.MAIL_OK
    assert await outside.cmd("RCPT TO:<bob@example.org>") == R.RCPT_OK
    assert await outside.cmd("RCPT TO:<x@elsewhere.test>") == R.RCPTHOSTS
    for c in (client, outside):
        await c.close()


async def test_off_unless_listed_in_mail_checks(
        make_ingress: MakeIngress, js: Any, relay_auth: str,
        client_tls: ssl.SSLContext) -> None:
    """The default MAIL_CHECKS leave it out: an AUTH user sends as anyone, as before."""
    ingress = await _ingress(make_ingress, js, relay_auth, "127.0.0.1:allow\n")
    assert "mail_sender_login" not in ingress.settings.checks("mail")
    client = await submission_login(ingress, client_tls, "alice@example.org", "secret")
    assert await client.cmd("MAIL FROM:<bob@example.org>") == R.MAIL_OK


# ASCII, and letters whose case or IDNA mapping is not one to one (dotted and dotless i,
# long s, the Kelvin sign, the sigmas, sharp s), a joiner and a combining accent
_CHARS = st.sampled_from("abcXYZ09.-+_=!#'ßéÜ\u0130\u0131\u017f\u212a\u03a3\u03c3\u03c2"
                         "\u200d\u0301")


@settings(max_examples=400, deadline=1000)
@given(local=st.text(_CHARS, min_size=1, max_size=20),
       labels=st.lists(st.text(_CHARS, min_size=1, max_size=12), min_size=1, max_size=3),
       tld=st.sampled_from(["example", "EXAMPLE", "xn--bcher-kva", "xn--", "de."]))
def test_a_target_names_the_login_as_the_login_names_itself(
        local: str, labels: list[str], tld: str) -> None:
    """Whatever sender the parser lets in (any case, U- or A-label, odd IDNA), the check
    never raises (a 421 for the client), and an alias whose one target is that address as
    written belongs to the login of that address: targets, senders and logins compare in
    one form (the directory's canonical one)."""
    try:
        sender = parse_address(f"{local}@{'.'.join([*labels, tld])}", allow_empty=False)
    except SyntaxProblem:
        assume(False)
    view = DirectoryView()
    view.data[domain_key("example.org")] = dpb.Domain(name="example.org").SerializeToString()
    view.data[record_key("alias", "me@example.org")] = dpb.Alias(
        address="me@example.org", targets=[sender.address]).SerializeToString()
    login = canonical(sender.address)
    assert leads_only_to(view, "me@example.org", login)
    assert not leads_only_to(view, "me@example.org", "someone@example.org") \
        or login == "someone@example.org"
    # the address itself is of no local domain here: no lookup may take it for an alias
    assert not leads_only_to(view, login, login)
