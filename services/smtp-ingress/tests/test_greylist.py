"""Greylisting across two ingress replicas sharing one NATS KV: unknown triplet -> 451 at
either replica, the retry after the delay passes (at the other one), the triplet is then
known to both; relay clients and listed networks are exempt. The clock is a test double
shared by both replicas, so no test waits for the delay to pass."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from ingress_helpers import MakeIngress, committed, put_control, session, wait_for
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import KeyNotFoundError

from mailyard.core.natsserver import NatsServer
from mailyard.core.spool import Spool
from mailyard.smtp_ingress import greylist
from mailyard.smtp_ingress.greylist import Greylist, client_network, exempt, triplet_key
from mailyard.smtp_ingress.metrics import GREYLIST
from mailyard.smtp_ingress.server import Ingress

GREYLISTED = "451 4.7.1 greylisted, please try again later"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def attempt(ingress: Ingress, sender: str, *recipients: str) -> list[str]:
    client = await session(ingress.ports["smtp"])
    try:
        assert await client.cmd(f"MAIL FROM:<{sender}>") == "250 2.1.0 ok"
        return [await client.cmd(f"RCPT TO:<{r}>") for r in recipients]
    finally:
        await client.close()


def count(outcome: str) -> float:
    return float(GREYLIST.labels(outcome)._value.get())


async def test_greylisting_across_two_replicas(make_ingress: MakeIngress, js: Any) -> None:
    await put_control(js, "rcpthosts", "example.org\n")
    await put_control(js, "greylist", "300\n")
    clock = Clock()
    a, b = await make_ingress(), await make_ingress()
    for replica in (a, b):
        replica.greylist.clock = clock
        await wait_for(lambda r=replica: r.control.integer("greylist", 0) == 300  # type: ignore[misc]
                       and r.in_rcpthosts("example.org"))
    new, passed, known = count("new"), count("passed"), count("known")
    assert await attempt(a, "x@sender.test", "bob@example.org", "carol@example.org") == \
        [GREYLISTED, GREYLISTED]
    clock.now += 60                     # too early, at the other replica too
    assert await attempt(b, "x@sender.test", "bob@example.org") == [GREYLISTED]
    clock.now += 300                    # past the delay: passes at b, remembered
    assert await attempt(b, "x@sender.test", "bob@example.org") == ["250 2.1.5 ok"]
    assert await attempt(a, "x@sender.test", "bob@example.org", "carol@example.org") == \
        ["250 2.1.5 ok", "250 2.1.5 ok"]
    # another sender or recipient is another triplet
    assert await attempt(a, "y@sender.test", "bob@example.org") == [GREYLISTED]
    assert (count("new"), count("passed"), count("known")) == (new + 3, passed + 2, known + 1)
    # a pending triplet not retried within a day starts over
    clock.now += 2 * 86400
    assert await attempt(b, "y@sender.test", "bob@example.org") == [GREYLISTED]
    # the listed network is exempt, and greylisting is off without the control file
    await put_control(js, "greylistexempt", "127.0.0.0/8\n")
    await wait_for(lambda: bool(b.control.lines("greylistexempt")))
    assert await attempt(b, "z@sender.test", "bob@example.org") == ["250 2.1.5 ok"]
    await put_control(js, "greylistexempt", "")
    await put_control(js, "greylist", "")
    await wait_for(lambda: a.control.integer("greylist", 0) == 0)
    assert await attempt(a, "w@sender.test", "bob@example.org") == ["250 2.1.5 ok"]


async def test_relay_clients_are_exempt(make_ingress: MakeIngress, js: Any,
                                        relay_auth: str) -> None:
    await put_control(js, "tcp.smtp", '127.0.0.1:allow,RELAYCLIENT=""\n')
    await put_control(js, "greylist", "300\n")
    ingress = await make_ingress(relay_auth_addr=relay_auth, relay_auth_timeout=2.0)
    await wait_for(lambda: ingress.control.integer("greylist", 0) == 300)
    assert await attempt(ingress, "me@ours.test", "someone@remote.test") == ["250 2.1.5 ok"]


def test_triplet_keys() -> None:
    assert client_network("192.0.2.77") == "192.0.2.0/24"
    assert client_network("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    # the same farm (/24), the same triplet; no address in the key
    key = triplet_key("192.0.2.1", "A@x.test", "b@y.test")
    assert key == triplet_key("192.0.2.200", "a@x.test", "B@y.test")
    assert key != triplet_key("192.0.3.1", "a@x.test", "b@y.test")
    assert "@" not in key and len(key) == 40
    assert exempt("10.1.2.3", ["bogus", "10.0.0.0/8"])
    assert not exempt("192.0.2.1", ["bogus", "10.0.0.0/8"])


@pytest.mark.parametrize("old_bucket", [False, True])
async def test_a_triplet_never_retried_is_forgotten_after_the_retry_window(
        js: Any, monkeypatch: pytest.MonkeyPatch, old_bucket: bool) -> None:
    """postgrey's way: a triplet that never passed is forgotten when its retry window ends,
    a passed one kept as long as before. Every triplet lived the bucket's 36 days, so the
    one-shot triplets of spam runs (nearly all of them) filled KV `greylist`. Also in a
    bucket made before per-message TTLs (the stream without allow_msg_ttl)."""
    if old_bucket:
        await js.add_stream(StreamConfig(
            name="KV_greylist", subjects=["$KV.greylist.>"], max_age=greylist.TRIPLET_TTL,
            max_msgs_per_subject=1, allow_rollup_hdrs=True, deny_delete=True,
            allow_direct=True, storage=StorageType.FILE, duplicate_window=120))
    monkeypatch.setattr(greylist, "RETRY_WINDOW", 2.0)  # a day, shortened for the test
    clock = Clock()
    grey = Greylist(clock)
    await grey.start(js)
    spam = ("192.0.2.1", "once@spam.test", "bob@example.org")
    real = ("192.0.2.9", "x@sender.test", "bob@example.org")
    assert await grey.check(*spam, 1) == "new"
    assert await grey.check(*real, 1) == "new"
    clock.now += 1.5
    assert await grey.check(*real, 1) == "passed"
    await asyncio.sleep(4)  # past the retry window of the pending triplet
    with pytest.raises(KeyNotFoundError):
        await grey.kv.get(triplet_key(*spam))
    entry = await grey.kv.get(triplet_key(*real))
    assert entry.value.startswith(b"pass ")
    assert await grey.check(*real, 1) == "known"
    assert await grey.check(*spam, 1) == "new"  # and starts over when it comes back


async def test_a_deleted_bucket_is_made_again(make_ingress: MakeIngress, js: Any) -> None:
    """KV `greylist` deleted (by an operator, or lost with a JetStream volume): every lookup
    failed and the mail was let through, counted as "error", until smtp-ingress restarted:
    greylisting off for good without a word but a counter. The bucket is made again, as
    the mail streams are, and greylisting goes on."""
    await put_control(js, "rcpthosts", "example.org\n")
    await put_control(js, "greylist", "300\n")
    ingress = await make_ingress()
    await wait_for(lambda: ingress.control.integer("greylist", 0) == 300
                   and ingress.in_rcpthosts("example.org"))
    assert await attempt(ingress, "x@sender.test", "bob@example.org") == [GREYLISTED]
    await js.delete_key_value("greylist")
    errors = count("error")
    replies = []
    for n in range(50):  # the first that finds it gone is let through; it comes back
        replies.append((await attempt(ingress, f"{n}@sender.test", "bob@example.org"))[0])
        if replies[-1] == GREYLISTED:
            break
        await asyncio.sleep(0.1)
    assert replies[-1] == GREYLISTED and count("error") - errors < 5, replies


async def test_nats_down_lets_the_mail_through_at_once(make_ingress: MakeIngress, js: Any,
                                                      nats_server: NatsServer) -> None:
    """NATS down: each RCPT waited for the KV lookup's 5 s timeout before it was let
    through (100 recipients: over 8 minutes, a connection slot held all along, for a
    message the DATA step then defers anyway); it is now let through at once, counted."""
    await put_control(js, "rcpthosts", "example.org\n")
    await put_control(js, "greylist", "300\n")
    ingress = await make_ingress()
    await wait_for(lambda: ingress.control.integer("greylist", 0) == 300
                   and ingress.in_rcpthosts("example.org"))
    nats_server.stop()
    errors = count("error")
    client = await session(ingress.ports["smtp"])
    try:
        assert await client.cmd("MAIL FROM:<x@sender.test>") == "250 2.1.0 ok"
        started = time.monotonic()
        for n in range(3):
            assert await client.cmd(f"RCPT TO:<r{n}@example.org>") == "250 2.1.5 ok"
        assert time.monotonic() - started < 2.0
    finally:
        await client.close()
    assert count("error") - errors == 3


# One sender rewritten per day or per message: (its first message, a later one). Each later
# one was a new triplet, greylisted again: a forwarder's correspondents every day, a list
# at every post.
REWRITTEN = [
    # SRS: a new hash and day stamp every day (the first forwarder, re-forwarded: SRS1)
    ("SRS0=AbCd=2A=orig.test=joe@fwd.test", "SRS0=xY9z=2B=orig.test=joe@fwd.test"),
    ("SRS1=Gg1h=first.test==AbCd=2A=orig.test=joe@fwd.test",
     "srs1=QrSt=first.test=+xY9z=2B=orig.test=joe@fwd.test"),
    # BATV: a new tag every day (draft-levine-smtp-batv, the reversed order of early
    # implementations, Microsoft's and Barracuda's forms)
    ("prvs=1234abcdef=joe@batv.test", "PRVS=2345fedcba=joe@batv.test"),
    ("prvs=joe=1234abcdef@batv.test", "prvs=joe=2345fedcba@batv.test"),
    ("msprvs1=19123AbCdEfGh=bounces-joe@batv.test", "msprvs1=19124ZyXwVuTs=bounces-joe@batv.test"),
    ("btv1==0f45a4d6a8f==joe@batv.test", "btv1==1a2b3c4d5e6==joe@batv.test"),
    # VERP and list bounce tags: a number per message
    ("bounce-12345-bob=example.org@lists.test", "bounce-12399-bob=example.org@lists.test"),
    ("joe+12345@lists.test", "joe+67890@lists.test"),
    ("news_2024.113@lists.test", "news_2024.114@lists.test"),
    # all at once: a list's VERP sender, signed, forwarded
    ("SRS0=AbCd=2A=lists.test=prvs=1234abcdef=bounce-1-bob=example.org@fwd.test",
     "SRS0=xY9z=2B=lists.test=prvs=2345fedcba=bounce-2-bob=example.org@fwd.test"),
]


async def test_a_sender_rewritten_per_day_or_message_is_one_triplet(js: Any) -> None:
    """postgrey's sender substitutions (and SRS, which postgrey leaves alone): the triplet
    is keyed by the sender without its BATV tag, SRS wrapping, +extension and numbers; the
    envelope is not touched (test_an_srs_forward_passes_the_next_day)."""
    clock = Clock()
    grey = Greylist(clock)
    await grey.start(js)
    for n, (first, later) in enumerate(REWRITTEN):
        recipient = f"bob{n}@example.org"
        assert await grey.check("192.0.2.1", first, recipient, 300) == "new", first
        clock.now += 301
        assert await grey.check("192.0.2.1", first, recipient, 300) == "passed", first
        clock.now += 86400  # the next day's address, or the next post's
        assert await grey.check("192.0.2.1", later, recipient, 300) == "known", later
    # still one triplet per author: another author, domain or list member is not known
    for n, other in ((0, "SRS0=xY9z=2B=orig.test=ann@fwd.test"),
                     (0, "SRS0=xY9z=2B=other.test=joe@fwd.test"),
                     (2, "prvs=2345fedcba=ann@batv.test"),
                     (6, "bounce-12399-carol=example.org@lists.test"),
                     (7, "ann+12345@lists.test")):
        assert await grey.check("192.0.2.1", other, f"bob{n}@example.org", 300) == "new", other


async def test_an_srs_forward_passes_the_next_day(make_ingress: MakeIngress, js: Any) -> None:
    """A forwarder's SRS sender changes daily; once its author passed, the next day's mail
    passes at once, and the envelope keeps the sender as sent (the bounce must reach the
    forwarder)."""
    await put_control(js, "rcpthosts", "example.org\n")
    await put_control(js, "greylist", "300\n")
    clock = Clock()
    ingress = await make_ingress()
    ingress.greylist.clock = clock
    await wait_for(lambda: ingress.control.integer("greylist", 0) == 300
                   and ingress.in_rcpthosts("example.org"))
    today, tomorrow = REWRITTEN[0]
    assert await attempt(ingress, today, "bob@example.org") == [GREYLISTED]
    clock.now += 301
    assert await attempt(ingress, today, "bob@example.org") == ["250 2.1.5 ok"]
    clock.now += 86400
    client = await session(ingress.ports["smtp"])
    try:
        assert await client.cmd(f"MAIL FROM:<{tomorrow}>") == "250 2.1.0 ok"
        assert await client.cmd("RCPT TO:<bob@example.org>") == "250 2.1.5 ok"
        assert await client.cmd("DATA") == "354 go ahead"
        assert (await client.cmd("Subject: hi\r\n\r\nbody\r\n.")).startswith("250 ok ")
    finally:
        await client.close()
    [path] = committed(ingress)
    envelope, _ = Spool(ingress.settings.spool_dir).read_sync(path)
    assert envelope.sender == tomorrow
