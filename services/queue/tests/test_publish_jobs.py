"""publish_jobs on a real nats-server and a real store, in process: jobs go out and are
acked; when nats-py's bound on unacked publishes is reached, the wait for room still ends
(the jobs go back to deferred) instead of hanging the dispatcher."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailyard.api.mail.v1.delivery_pb2 import CHANNEL_REMOTE
from mailyard.api.mail.v1.envelope_pb2 import Envelope
from mailyard.core import bus
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


async def queue_with(nats_server: NatsServer, spool: Spool, store: Store,
                     max_pending: int) -> Queue:
    nc = await bus.connect(nats_server.url, "publish-jobs-test")
    js = nc.jetstream(publish_async_max_pending=max_pending)
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
    q = await queue_with(nats_server, spool, store, preprocess.ASYNC_PENDING_MAX)
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


async def test_a_full_pending_bound_ends_in_deferral_not_a_hang(
        nats_server: NatsServer, spool: Spool, store: Store,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preprocess, "ASYNC_PENDING_MAX", 1)
    monkeypatch.setattr(preprocess, "PUBLISH_TIMEOUT", 0.5)
    q = await queue_with(nats_server, spool, store, 1)
    try:
        # the one slot is held by a publish nobody acks (a plain subscriber, no stream)
        await q.nc.subscribe("black.hole")
        blocker = await q.js.publish_async("black.hole", b"")
        jobs = await handed_out(store, 2)
        task = asyncio.create_task(preprocess.publish_jobs(q, jobs))
        done, _ = await asyncio.wait({task}, timeout=5)
        if not done:
            # nats-py turns a cancelled wait for room into an error, so wait_for cannot
            # stop it: free the slot to let it end, then fail
            blocker.cancel()
            await task
            pytest.fail("publish_jobs waited for room without a timeout")
        info = await q.js.stream_info(bus.JOBS_STREAM)
        assert info.state.messages == 0
        for i in range(2):
            [rcpt] = await store.run(store.recipients, f"Q{i}")
            assert rcpt.state == DEFERRED and rcpt.attempts == 0  # not counted, retried
    finally:
        await q.nc.close()
