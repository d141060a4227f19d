"""kill -9 of the queue mid-stream loses nothing; a standby replica takes over."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from mailyard.core.spool import Spool

from .conftest import DELIVERED, QueueProc, Worker, finished, send, standby, wait_for


async def _deliver_everything(worker: Worker, seen: dict[str, set[str]]) -> None:
    while True:
        with contextlib.suppress(AssertionError):
            job = await worker.job(timeout=60)
            seen.setdefault(job.queue_id, set()).update(job.recipients)
            await worker.report(job, DELIVERED)


async def test_kill_9_mid_stream_loses_nothing(js: Any, spool: Spool, workers: Any,
                                               start_queue: Any) -> None:
    overrides = {"STUCK_AFTER": "2", "RECONCILE_INTERVAL": "1", "LEADER_TTL": "1"}
    q = start_queue(**overrides)
    seen: dict[str, set[str]] = {}
    runner = asyncio.create_task(_deliver_everything(workers["remote"], seen))
    sent = []
    try:
        for i in range(40):
            sent.append(await send(spool, js, "a@sender.test",
                                   [f"r{i}@d{i % 3}.test", f"s{i}@d{i % 3}.test"]))
        await wait_for(lambda: asyncio.sleep(0, len(seen) >= 5), what="some deliveries")
        q.proc.kill()
        for i in range(40, 60):  # mail keeps arriving while the queue is down
            sent.append(await send(spool, js, "a@sender.test", [f"r{i}@d{i % 3}.test"]))
        q2 = QueueProc(q.env, q.proc.log_path.parent).start()
        try:
            for env in sent:
                await wait_for(lambda env=env: finished(q2, spool, env), timeout=60,
                               what=f"{env.queue_id} done")
            for env in sent:
                assert seen.get(env.queue_id) == set(env.recipients)  # each delivered
            assert list(spool.iter_committed()) == []
            assert (await q2.stat()).messages == 0
        finally:
            q2.proc.stop()
    finally:
        runner.cancel()


async def test_two_replicas_one_leader(js: Any, spool: Spool, workers: Any,
                                       start_queue: Any) -> None:
    first = start_queue(LEADER_TTL="1")
    second = start_queue(wait=False, LEADER_TTL="1")
    await wait_for(lambda: standby(second), what="standby answering")
    sent = [await send(spool, js, "a@sender.test", [f"r{i}@remote.test"]) for i in range(10)]
    jobs = [await workers["remote"].job() for _ in sent]
    assert sorted(j.queue_id for j in jobs) == sorted(e.queue_id for e in sent)
    assert await workers["remote"].none_within(0.5)  # nothing was handed out twice
    first.proc.kill()
    second.proc.wait_ready(30)  # the standby took over
    for job in jobs:
        await workers["remote"].report(job, DELIVERED)
    late = await send(spool, js, "a@sender.test", ["late@remote.test"])
    job = await workers["remote"].job()
    assert job.queue_id == late.queue_id
    await workers["remote"].report(job, DELIVERED)
    for env in [*sent, late]:
        await wait_for(lambda env=env: finished(second, spool, env), what="done via standby")
