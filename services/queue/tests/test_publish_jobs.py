"""publish_jobs on a real nats-server and a real store, in process: jobs go out and are
acked; a job whose ack never comes, or that no stream takes, goes back to deferred (the
attempt not counted) instead of hanging the dispatcher."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailyard.api.mail.v1.delivery_pb2 import CHANNEL_REMOTE
from mailyard.api.mail.v1.envelope_pb2 import Envelope
from mailyard.core import bus, js_publish
from mailyard.core.control import ControlView
from mailyard.core.directory import DirectoryView
from mailyard.core.natsserver import NatsServer
from mailyard.core.spool import Spool
from mailyard.queue import preprocess
from mailyard.queue.engine import Queue
from mailyard.queue.settings import Settings
from mailyard.queue.state import DEFERRED, QUEUED, Job, Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(tmp_path / "queue.db", sync="NORMAL")
    await s.aopen()
    yield s
    s.close()


async def queue_with(nats_server: NatsServer, spool: Spool, store: Store) -> Queue:
    nc = await bus.connect(nats_server.url, "publish-jobs-test")
    js = nc.jetstream()
    await bus.ensure_mail_streams(js)
    return Queue(Settings(spool_dir=spool.root), nc, js, spool, store, ControlView(),
                 DirectoryView())


async def handed_out(store: Store, count: int) -> list[Job]:
    items = [(Envelope(queue_id=f"Q{i}", sender="a@s.test", recipients=[f"b{i}@r.test"],
                       spool_path=f"mess/00/Q{i}"),
              [(f"b{i}@r.test", CHANNEL_REMOTE, "r.test")]) for i in range(count)]
    added, jobs = await store.run(store.add_and_take, items, time.time(), 100)
    assert len(added) == count and len(jobs) == count
    return jobs


async def test_jobs_are_published_and_acked(nats_server: NatsServer, spool: Spool,
                                            store: Store) -> None:
    q = await queue_with(nats_server, spool, store)
    try:
        jobs = await handed_out(store, 3)
        await asyncio.wait_for(preprocess.publish_jobs(q, jobs), 10)
        info = await q.js.stream_info(bus.JOBS_STREAM)
        assert info.state.messages == 3
        for i in range(3):
            [rcpt] = await store.run(store.recipients, f"Q{i}")
            assert rcpt.state == QUEUED  # handed out, waiting for its result
    finally:
        await q.nc.close()


async def test_a_job_never_acked_goes_back_to_deferred(
        nats_server: NatsServer, spool: Spool, store: Store,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preprocess, "PUBLISH_TIMEOUT", 0.5)
    # a plain subscriber and no stream on the subject: it is taken, and nobody acks it
    monkeypatch.setitem(bus.JOB_SUBJECT, "remote", "black.hole")
    q = await queue_with(nats_server, spool, store)
    try:
        await q.nc.subscribe("black.hole")
        jobs = await handed_out(store, 2)
        await asyncio.wait_for(preprocess.publish_jobs(q, jobs), 5)
        for i in range(2):
            [rcpt] = await store.run(store.recipients, f"Q{i}")
            assert rcpt.state == DEFERRED and rcpt.attempts == 0  # not counted, retried
        assert not js_publish.publisher(q.nc).pending  # the given-up acks are forgotten
    finally:
        await q.nc.close()


async def test_a_job_no_stream_takes_goes_back_to_deferred(
        nats_server: NatsServer, spool: Spool, store: Store,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(bus.JOB_SUBJECT, "remote", "no.stream.here")
    q = await queue_with(nats_server, spool, store)
    try:
        jobs = await handed_out(store, 2)
        await asyncio.wait_for(preprocess.publish_jobs(q, jobs), 5)  # no responders: at once
        for i in range(2):
            [rcpt] = await store.run(store.recipients, f"Q{i}")
            assert rcpt.state == DEFERRED and rcpt.attempts == 0
        info = await q.js.stream_info(bus.JOBS_STREAM)
        assert info.state.messages == 0
    finally:
        await q.nc.close()
