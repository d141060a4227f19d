"""Jobs whose JetStream message is gone (MAIL_JOBS purged): `queue retry`, `queue fsck` and
the queue's own check dispatch them again, instead of leaving them "queued" for an hour."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

import pytest
from nats.js.errors import NotFoundError

from mailyard.api.mail.v1 import delivery_pb2 as dpb
from mailyard.cli.main import main as cli
from mailyard.core import bus
from mailyard.core.spool import Spool

from .conftest import DELIVERED, gone, send, wait_for


async def _job_in_stream(js: Any) -> bool:
    info = await js.stream_info(bus.JOBS_STREAM, subjects_filter=bus.JOB_SUBJECT["remote"])
    return sum((info.state.subjects or {}).values()) == 1


async def _again(workers: Any, queue_id: str, after: Any) -> dpb.DeliveryJob:
    """Run `after` (a command) until the job of `queue_id` is handed out again."""
    async def fetched() -> dpb.DeliveryJob | None:
        after()
        try:
            job = await workers["remote"].job(timeout=1)
        except AssertionError:
            return None
        assert job.queue_id == queue_id
        return job
    return await wait_for(fetched, timeout=40, what="the lost job dispatched again")


async def test_retry_and_fsck_dispatch_a_purged_job_again(
        js: Any, spool: Spool, workers: Any, start_queue: Any, capsys: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    q = start_queue()
    monkeypatch.setenv("MAILYARD_QUEUE_ADDR", f"127.0.0.1:{q.grpc_port}")
    env = await send(spool, js, "s@sender.test", ["r@remote.test"])
    await wait_for(lambda: _job_in_stream(js), what="job in MAIL_JOBS")
    await js.purge_stream(bus.JOBS_STREAM)  # the job is gone; the queue still says queued

    job = await _again(workers, env.queue_id, lambda: cli(["queue", "retry", "--all"]))
    assert job.attempt == 2
    await js.purge_stream(bus.JOBS_STREAM)  # gone again (the test worker acked it)

    job = await _again(workers, env.queue_id, lambda: cli(["queue", "fsck"]))
    assert job.attempt == 3
    assert "lost_job" in capsys.readouterr().out
    await workers["remote"].report(job, DELIVERED)
    await wait_for(lambda: gone(q, env.queue_id), what="delivered and removed")


async def test_the_queue_finds_lost_jobs_by_itself(
        js: Any, spool: Spool, workers: Any, start_queue: Any) -> None:
    q = start_queue(LOST_CHECK_INTERVAL="1")
    env = await send(spool, js, "s@sender.test", ["r@remote.test"])
    await wait_for(lambda: _job_in_stream(js), what="job in MAIL_JOBS")
    await js.delete_stream(bus.JOBS_STREAM)  # deleted, not only purged
    await bus.ensure_mail_streams(js)  # the stream is back (empty); the workers' consumer too
    await workers["remote"].start()
    job = await _again(workers, env.queue_id, lambda: None)
    assert job.attempt == 2
    await workers["remote"].report(job, DELIVERED)
    await wait_for(lambda: gone(q, env.queue_id), what="delivered and removed")


async def _exists(js: Any, stream: str) -> bool:
    try:
        await js.stream_info(stream)
    except NotFoundError:
        return False
    return True


async def _ready(q: Any) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{q.http_port}/readyz", timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


async def test_deleted_streams_heal_without_a_restart(
        js: Any, spool: Spool, workers: Any, start_queue: Any) -> None:
    """Every stream deleted while the queue runs: it used to say ready and move nothing
    until restarted. The next message creates them again (the publisher), the queue's
    consumers come back, and the mail is delivered."""
    q = start_queue()
    for stream in (bus.TODO_STREAM, bus.JOBS_STREAM, bus.RESULTS_STREAM):
        await js.delete_stream(stream)
    env = await send(spool, js, "s@sender.test", ["r@remote.test"])  # heals MAIL_TODO
    await wait_for(lambda: _exists(js, bus.JOBS_STREAM), what="MAIL_JOBS made again")
    await workers["remote"].start()  # the test's worker makes its consumer again
    job = await workers["remote"].job(timeout=40)
    assert job.queue_id == env.queue_id
    await workers["remote"].report(job, DELIVERED)
    await wait_for(lambda: gone(q, env.queue_id), what="delivered and removed")
    assert await _ready(q) == 200
