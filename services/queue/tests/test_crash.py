"""kill -9 of the queue mid-stream loses nothing; a standby replica takes over."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from pathlib import Path
from typing import Any

from grpc_health.v1 import health_pb2, health_pb2_grpc

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


async def test_failover_with_the_leaders_state_lost_or_stale_loses_nothing(
        js: Any, spool: Spool, workers: Any, start_queue: Any, tmp_path: Path) -> None:
    """Each replica has its own local state. The leader dies and its state is deleted (its
    node is gone): the standby takes over and rebuilds from the spool. Then the first comes
    back with its old state, and becomes leader again when the second dies: that state is
    stale (messages in it were delivered and removed meanwhile), so it is rebuilt too, and
    nothing is held as a missing file or lost."""
    overrides = {"STUCK_AFTER": "2", "RECONCILE_INTERVAL": "1", "LEADER_TTL": "1"}
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a = start_queue(STATE_DIR=str(a_dir), **overrides)
    b = start_queue(wait=False, STATE_DIR=str(b_dir), **overrides)
    await wait_for(lambda: standby(b), what="standby answering")
    seen: dict[str, set[str]] = {}
    runner = asyncio.create_task(_deliver_everything(workers["remote"], seen))
    sent = []

    async def send_some(n: int) -> None:
        for _ in range(n):
            i = len(sent)
            sent.append(await send(spool, js, "a@sender.test", [f"r{i}@d{i % 3}.test",
                                                                f"s{i}@d{i % 3}.test"]))

    try:
        await send_some(30)
        await wait_for(lambda: asyncio.sleep(0, len(seen) >= 5), what="some deliveries")
        a.proc.kill()  # a keeps its state on disk: it will come back stale
        await send_some(15)
        b.proc.wait_ready(30)
        for env in sent:
            await wait_for(lambda env=env: finished(b, spool, env), timeout=60,
                           what=f"{env.queue_id} done by b")
        a_again = QueueProc(a.env, a.proc.log_path.parent).start(wait=False)
        await wait_for(lambda: standby(a_again), what="a back as a standby")
        await send_some(15)
        b.proc.kill()
        shutil.rmtree(b_dir)  # b's node is lost, with its disk
        await send_some(15)
        a_again.proc.wait_ready(30)
        try:
            for env in sent:
                await wait_for(lambda env=env: finished(a_again, spool, env), timeout=60,
                               what=f"{env.queue_id} done by a")
            for env in sent:
                assert seen.get(env.queue_id) == set(env.recipients)  # each delivered
            stat = await a_again.stat()
            assert stat.messages == 0 and stat.held_messages == 0
            assert list(spool.iter_committed()) == []
        finally:
            a_again.proc.stop()
    finally:
        runner.cancel()


async def test_two_replicas_one_leader(js: Any, spool: Spool, workers: Any,
                                       start_queue: Any, tmp_path: Path) -> None:
    first = start_queue(LEADER_TTL="1", STATE_DIR=str(tmp_path / "first"))
    second = start_queue(wait=False, LEADER_TTL="1", STATE_DIR=str(tmp_path / "second"))
    await wait_for(lambda: standby(second), what="standby answering")
    # gRPC health per service: only the leader serves QueueService; both serve History
    assert [await _health(q, "QueueService") for q in (first, second)] == [True, False]
    assert [await _health(q, "History") for q in (first, second)] == [True, True]
    sent = [await send(spool, js, "a@sender.test", [f"r{i}@remote.test"]) for i in range(10)]
    jobs = [await workers["remote"].job() for _ in sent]
    assert sorted(j.queue_id for j in jobs) == sorted(e.queue_id for e in sent)
    assert await workers["remote"].none_within(0.5)  # nothing was handed out twice
    first.proc.kill()
    second.proc.wait_ready(30)  # the standby took over
    await wait_for(lambda: _health(second, "QueueService"), what="QueueService serving")
    for job in jobs:
        await workers["remote"].report(job, DELIVERED)
    late = await send(spool, js, "a@sender.test", ["late@remote.test"])
    job = await workers["remote"].job()
    assert job.queue_id == late.queue_id
    await workers["remote"].report(job, DELIVERED)
    for env in [*sent, late]:
        await wait_for(lambda env=env: finished(second, spool, env), what="done via standby")


async def test_a_hand_out_the_dead_leader_never_published_goes_out_once(
        js: Any, spool: Spool, workers: Any, start_queue: Any, tmp_path: Any) -> None:
    """The crash window between committing a hand-out and publishing its job: the next
    leader announces it again under the same job id, and JetStream's dedupe keeps a job
    that did go out from arriving twice."""
    import time

    from mailyard.api.mail.v1.envelope_pb2 import Envelope
    from mailyard.core import bus
    from mailyard.queue.preprocess import job_message
    from mailyard.queue.state import Store

    remote = 2  # Channel.CHANNEL_REMOTE
    store = Store(tmp_path / "state" / "queue.db", sync="NORMAL")
    (tmp_path / "state").mkdir(exist_ok=True)
    store.open()
    lost = await spool.commit(Envelope(queue_id="01JAAAAAAAAAAAAAAAAAAAAAAA", sender="s@x.test",
                                       recipients=["a@remote.test"]), b"lost\r\n")
    sent = await spool.commit(Envelope(queue_id="01JBBBBBBBBBBBBBBBBBBBBBBB", sender="s@x.test",
                                       recipients=["b@remote.test"]), b"sent\r\n")
    now = time.time()
    store.add([(lost, [("a@remote.test", remote, "remote.test")]),
               (sent, [("b@remote.test", remote, "remote.test")])], now)
    jobs = {j.message.queue_id: j for j in store.take_due(now, 10)}
    store.close()
    # the dead leader published one of its two hand-outs
    published = jobs[sent.queue_id]
    await bus.publish(js, bus.JOB_SUBJECT["remote"], job_message(published),
                      msg_id=published.job_id)
    q: QueueProc = start_queue()
    got = [await workers["remote"].job(), await workers["remote"].job()]
    assert sorted(j.job_id for j in got) == sorted(j.job_id for j in jobs.values())
    assert await workers["remote"].none_within(1.5)  # the published one is not repeated
    for job in got:
        await workers["remote"].report(job, DELIVERED)
    for env in (lost, sent):
        await wait_for(lambda env=env: finished(q, spool, env))  # type: ignore[misc]


async def test_a_leader_cut_off_from_nats_past_its_lock_stands_by_and_leads_again(
        js: Any, spool: Spool, workers: Any, start_queue: Any, nats_server: Any) -> None:
    """NATS gone for longer than the lock's ttl (a node killed, an election under load):
    the leader stops leading, as fencing requires, but the process lives on as a standby and
    takes its own term back when NATS returns. It used to exit and wait for a supervisor
    to restart it: podman without systemd never did, and all delivery stopped."""
    q = start_queue(LEADER_TTL="1")
    nats_server.stop(kill=True)
    await wait_for(lambda: asyncio.sleep(0, "standing by" in q.proc.logs()
                                         or q.proc.proc.poll() is not None),
                   what="the leader giving up its term")
    nats_server.start()
    q.proc.wait_ready(60)  # raises if the process exited
    env = await send(spool, js, "a@sender.test", ["after@remote.test"])
    job = await workers["remote"].job(timeout=60)
    assert job.queue_id == env.queue_id
    await workers["remote"].report(job, DELIVERED)
    await wait_for(lambda: finished(q, spool, env), timeout=60, what="delivered after")
    logs = q.proc.log_path.read_text()
    assert q.proc.proc.poll() is None and logs.count('"msg": "starting"') == 1, q.proc.logs()
    assert "rebuilding" not in logs  # its own state, taken back


async def _health(q: QueueProc, service: str) -> bool:
    names = {"QueueService": "mailyard.queue.v1.QueueService",
             "History": "mailyard.history.v1.History"}
    stub = health_pb2_grpc.HealthStub(q.channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=names[service]), timeout=5)
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
