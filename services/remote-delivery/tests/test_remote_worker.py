"""The real contract: DeliveryJob messages in on the jobs stream, DeliveryResult out."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from remote_rig import Rig, Smtp, results

from mailyard.api.mail.v1.delivery_pb2 import (
    OUTCOME_DEFERRED,
    OUTCOME_DELIVERED,
    OUTCOME_FAILED,
)
from mailyard.core import bus
from mailyard.remote_delivery.worker import Worker

MSG = b"Subject: via the bus\r\n\r\nhello\r\n"


async def publish(rig: Rig, job: Any) -> None:
    await bus.publish(rig.js, bus.JOB_SUBJECT["remote"], job, msg_id=job.job_id)


async def test_job_in_result_out(rig: Rig, worker: Worker, smtp_servers) -> None:  # type: ignore[no-untyped-def]
    server = Smtp(refuse={"no@bus.test": "550 5.1.1 unknown"}).start()
    smtp_servers.append(server)
    await rig.routes(f"bus.test:127.0.0.1:{server.port}")
    job = await rig.message(MSG, ["yes@bus.test", "no@bus.test"])
    await publish(rig, job)
    [res] = await results(rig.js, 1)
    assert (res.job_id, res.queue_id, res.worker) == (job.job_id, job.queue_id, "test")
    assert [r.outcome for r in res.results] == [OUTCOME_DELIVERED, OUTCOME_FAILED]
    assert res.results[1].reply == "550 5.1.1 unknown"
    # acked right after the result is published: nothing stays pending on the consumer
    for _ in range(500):
        info = await rig.js.consumer_info(bus.JOBS_STREAM, bus.JOB_CONSUMER["remote"])
        if info.num_ack_pending == 0:
            break
        await asyncio.sleep(0.01)
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_missing_or_corrupt_spool_file_defers(rig: Rig, worker: Worker,  # type: ignore[no-untyped-def]
                                                    smtp_servers) -> None:
    server = Smtp().start()
    smtp_servers.append(server)
    await rig.routes(f"gone.test:127.0.0.1:{server.port}")
    gone = await rig.message(MSG, ["u@gone.test"])
    await rig.spool.remove(gone.spool_path)
    corrupt = await rig.message(MSG + b"2", ["v@gone.test"])
    path = rig.spool.path(corrupt.spool_path)
    path.write_bytes(path.read_bytes()[:-3] + b"XYZ")
    await publish(rig, gone)
    await publish(rig, corrupt)
    out = await results(rig.js, 2)
    assert len(out) == 2
    for res in out:
        assert res.results[0].outcome == OUTCOME_DEFERRED
        assert "message file could not be read" in res.results[0].reply
    assert server.messages == []  # never an empty or corrupt message


async def test_concurrencyremote_is_the_consumer_limit_and_live(rig: Rig,  # type: ignore[no-untyped-def]
                                                                worker: Worker) -> None:
    from mailyard.remote_delivery import metrics

    info = await rig.js.consumer_info(bus.JOBS_STREAM, bus.JOB_CONSUMER["remote"])
    assert info.config.max_ack_pending == 20 and metrics.LIMIT._value.get() == 20
    await rig.kv.put("concurrencyremote", b"120\n")
    for _ in range(300):
        info = await rig.js.consumer_info(bus.JOBS_STREAM, bus.JOB_CONSUMER["remote"])
        if info.config.max_ack_pending == 120:
            break
        await asyncio.sleep(0.02)
    assert info.config.max_ack_pending == 120 and worker.limit == 120


async def test_several_jobs_share_one_connection(rig: Rig, worker: Worker,  # type: ignore[no-untyped-def]
                                                 smtp_servers) -> None:
    server = Smtp().start()
    smtp_servers.append(server)
    await rig.routes(f"many.test:127.0.0.1:{server.port}")
    jobs = [await rig.message(MSG + str(i).encode(), [f"u{i}@many.test"]) for i in range(10)]
    for job in jobs:
        await publish(rig, job)
    out = await results(rig.js, 10)
    assert sorted(r.job_id for r in out) == sorted(j.job_id for j in jobs)
    assert all(r.results[0].outcome == OUTCOME_DELIVERED for r in out)
    assert len(server.messages) == 10


@pytest.mark.settings(ack_wait=4.0)
async def test_a_large_message_goes_out_once_and_the_job_is_never_redelivered(  # type: ignore[no-untyped-def]
        rig: Rig, worker: Worker, smtp_servers) -> None:
    """Issue 20: a message of a few MB with long (but legal) lines. Preparing it for the
    wire used to scan it with a regex tried at every offset, seconds of CPU on the event
    loop: no progress ack went out, JetStream handed the job out again after ack_wait and
    the message was sent twice (in the mixed bench, jobs were redelivered, spool files
    read after they were removed, and rounds took minutes)."""
    server = Smtp().start()
    smtp_servers.append(server)
    await rig.routes(f"big.test:127.0.0.1:{server.port}")
    line = b"x" * 998 + b"\r\n"  # the longest line RFC 5321 allows: nothing to fold
    data = b"Subject: large\r\n\r\n" + line * 4000  # 4 MB
    job = await rig.message(data, ["u@big.test"])
    await publish(rig, job)
    [res] = await results(rig.js, 1, timeout=120)
    assert res.results[0].outcome == OUTCOME_DELIVERED
    info = await rig.js.consumer_info(bus.JOBS_STREAM, bus.JOB_CONSUMER["remote"])
    assert info.num_redelivered == 0
    assert len(server.messages) == 1 and server.messages[0].data == data
