from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from mailyard.api.directory.v1 import directory_pb2 as dpb
from mailyard.api.mail.v1.envelope_pb2 import Envelope
from mailyard.core import bus
from mailyard.core.control import ControlView
from mailyard.core.directory import DirectoryView, domain_key, record_key
from mailyard.core.errors import BusError
from mailyard.core.ids import derived_queue_id, new_queue_id
from mailyard.core.inject import inject, inject_derived
from mailyard.core.natsserver import NatsServer
from mailyard.core.spool import Spool


async def test_inject_commits_then_publishes_deduplicated(js: Any, spool: Spool) -> None:
    stored = await inject(spool, js, Envelope(sender="a@b", recipients=["c@d"]), b"hi\r\n")
    await bus.publish(js, bus.TODO_SUBJECT, stored, msg_id=stored.queue_id)  # duplicate
    await bus.ensure_consumer(js, bus.TODO_STREAM, bus.TODO_CONSUMER)
    sub = await js.pull_subscribe_bind(bus.TODO_CONSUMER, bus.TODO_STREAM)
    msgs = await sub.fetch(10, timeout=1)
    assert len(msgs) == 1
    got = bus.decode(Envelope, msgs[0].data)
    assert got.queue_id == stored.queue_id and got.sha256 == stored.sha256
    _, data = await spool.read(got.spool_path)
    assert data == b"hi\r\n"


async def test_inject_with_nats_down_withdraws_the_file(nats_server: NatsServer,
                                                        spool: Spool) -> None:
    nc = await bus.connect(nats_server.url, "pytest")
    js = nc.jetstream()
    await bus.ensure_mail_streams(js)
    nats_server.stop()
    with pytest.raises(BusError):
        await inject(spool, js, Envelope(sender="a@b"), b"x", publish_timeout=0.5)
    assert list(spool.iter_committed()) == []
    with contextlib.suppress(Exception):  # the server is gone; closing may fail to flush
        await nc.close()


async def test_inject_derived_is_harmless_to_repeat(js: Any, spool: Spool) -> None:
    """Messages under ids derived from why they are sent (a list's mail in parts): the
    second part's notice is refused (past max_payload), and nothing is withdrawn, since
    another run of the same job may have announced those files; the retry, same ids,
    announces what is there as it is stored, and leaves out one gone meanwhile."""
    base = new_queue_id()
    ids = [derived_queue_id(base, "team@example.org", str(n)) for n in range(3)]
    ok = Envelope(queue_id=ids[0], sender="o@b", recipients=["c@d"])
    too_big = Envelope(queue_id=ids[1], sender="o@b",
                       recipients=[f"m{i:07d}@example.net" for i in range(60_000)])
    with pytest.raises(BusError):
        await inject_derived(spool, js, [ok, too_big], b"hi\r\n")
    assert len(list(spool.iter_committed())) == 2  # left for the retry (or the reconciler)
    await spool.remove(spool.relpath(ids[1]))
    again = [Envelope(queue_id=i, sender="o@b", recipients=["x@y"]) for i in ids]
    stored = await inject_derived(spool, js, again, b"hi\r\n")
    assert [list(e.recipients) for e in stored] == [["c@d"], ["x@y"], ["x@y"]]
    # one that cannot be read back (gone since, or damaged: the reconciler's) is left out,
    # not a failure whose retry would send every part again
    spool.path(stored[0].spool_path).write_bytes(b"")
    assert [e.queue_id for e in await inject_derived(spool, js, again, b"hi\r\n")] == ids[1:]
    with pytest.raises(ValueError):
        await inject_derived(spool, js, [Envelope(sender="o@b")], b"hi\r\n")


async def test_ensure_helpers_are_idempotent(js: Any) -> None:
    for _ in range(2):
        await bus.ensure_mail_streams(js)
        await bus.ensure_consumer(js, bus.JOBS_STREAM, "local-delivery",
                                  filter_subject=bus.JOB_SUBJECT["local"], max_ack_pending=10)
        await bus.ensure_kv(js, bus.KV_CONTROL)
    await bus.ensure_consumer(js, bus.JOBS_STREAM, "local-delivery",
                              filter_subject=bus.JOB_SUBJECT["local"], max_ack_pending=15)
    info = await js.consumer_info(bus.JOBS_STREAM, "local-delivery")
    assert info.config.max_ack_pending == 15


async def test_views_follow_changes_live(js: Any) -> None:
    control, directory = ControlView(), DirectoryView()
    await control.start(js)
    await directory.start(js)
    assert control.integer("databytes", 10_000_000) == 10_000_000
    await control.kv.put("databytes", b"# limit\n5000\n")  # type: ignore[union-attr]
    await directory.kv.put(domain_key("Example.TEST"),  # type: ignore[union-attr]
                           dpb.Domain(name="example.test").SerializeToString())
    await directory.kv.put(record_key("mailbox", "Joe@example.test"),  # type: ignore[union-attr]
                           dpb.Mailbox(address="joe@example.test").SerializeToString())
    for _ in range(100):
        if control.integer("databytes", 0) == 5000 and directory.accepts("joe@EXAMPLE.test"):
            break
        await asyncio.sleep(0.02)
    assert control.integer("databytes", 0) == 5000
    assert directory.is_local_domain("example.test")
    assert directory.accepts("JOE@example.test")
    assert not directory.accepts("nobody@example.test")
    assert directory.resolve("x@elsewhere.test").kind == dpb.RESOLUTION_KIND_NOT_LOCAL
    await control.stop()
    await directory.stop()
