"""A poison job (delivered max_deliver times, never acked): held, counted, removed from
MAIL_JOBS, and released by the operator; the runbook's MailyardHeldMessages promise."""

from __future__ import annotations

import urllib.request
from typing import Any

import nats.errors
import pytest

from mailyard.api.queue.v1 import queue_pb2 as qpb
from mailyard.cli.main import main as cli
from mailyard.core import bus
from mailyard.core.spool import Spool

from .conftest import DELIVERED, gone, send, wait_for


async def _state(q: Any, qid: str) -> int:
    return int((await q.explain(qid)).recipients[0].state)


async def _poison_count(q: Any) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{q.http_port}/metrics") as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith('mailyard_queue_poison_jobs_total{channel="remote"}'):
                return float(line.split()[1])
    return 0.0


async def _jobs_in_stream(js: Any) -> int:
    info = await js.stream_info(bus.JOBS_STREAM)
    return int(info.state.messages)


async def test_job_failing_max_deliver_times_is_held_counted_and_released(
        js: Any, spool: Spool, workers: Any, start_queue: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    await bus.ensure_consumer(js, bus.JOBS_STREAM, bus.JOB_CONSUMER["remote"],
                              filter_subject=bus.JOB_SUBJECT["remote"], ack_wait=30,
                              max_deliver=2)
    q = start_queue()
    monkeypatch.setenv("MAILYARD_QUEUE_ADDR", f"127.0.0.1:{q.grpc_port}")
    env = await send(spool, js, "s@sender.test", ["r@remote.test"])
    sub = workers["remote"].sub
    for _ in range(2):  # a worker that crashes on this job, twice
        msgs = await wait_for(lambda: _fetch(sub), what="the job delivered")
        await msgs[0].nak()
    # the worker keeps pulling, as a real one does: JetStream, about to deliver the job a
    # third time, gives up on it and sends the max-deliveries advisory instead
    await wait_for(lambda: _is_held(q, env.queue_id, sub), what="the poison job held")
    assert await _poison_count(q) == 1
    await wait_for(lambda: _none(js), what="the poison job deleted from MAIL_JOBS")
    assert (await q.explain(env.queue_id)).recipients[0].attempts == 1

    await bus.ensure_consumer(js, bus.JOBS_STREAM, bus.JOB_CONSUMER["remote"],
                              filter_subject=bus.JOB_SUBJECT["remote"], ack_wait=30)
    assert cli(["queue", "release", env.queue_id]) == 0
    job = await workers["remote"].job()
    assert job.queue_id == env.queue_id and job.attempt == 2
    await workers["remote"].report(job, DELIVERED)
    await wait_for(lambda: gone(q, env.queue_id), what="delivered after the release")


async def _fetch(sub: Any) -> list[Any] | None:
    try:
        return list(await sub.fetch(1, timeout=1))
    except (TimeoutError, nats.errors.TimeoutError):
        return None


async def _is_held(q: Any, qid: str, sub: Any) -> bool:
    assert await _fetch(sub) is None  # never delivered a third time
    return await _state(q, qid) == qpb.RECIPIENT_STATE_HELD


async def _none(js: Any) -> bool:
    return await _jobs_in_stream(js) == 0
