"""todo -> classify -> jobs -> results -> completion; stat, list, explain; the CLI."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from mailyard.api.mail.v1 import delivery_pb2 as dpb
from mailyard.api.mail.v1.envelope_pb2 import Envelope
from mailyard.api.queue.v1 import queue_pb2 as qpb
from mailyard.cli.main import main as cli
from mailyard.core import bus
from mailyard.core.ids import new_queue_id
from mailyard.core.spool import Spool

from .conftest import DEFERRED, DELIVERED, add_local_domain, gone, send, wait_for, watching


async def test_classify_group_deliver_complete(js: Any, spool: Spool, workers: Any,
                                               start_queue: Any, capsys: Any,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    await add_local_domain(js)
    q = start_queue()
    env = await send(spool, js, "alice@sender.test",
                     ["bob@local.test", "x@remote.test", "y@REMOTE.test", "z@other.test"])
    local = await workers["local"].job()
    assert local.channel == dpb.CHANNEL_LOCAL and list(local.recipients) == ["bob@local.test"]
    assert local.queue_id == env.queue_id and local.attempt == 1
    assert local.spool_path == env.spool_path and local.sha256 == env.sha256
    remote = [await workers["remote"].job(), await workers["remote"].job()]
    by_domain = {j.domain: sorted(j.recipients) for j in remote}
    assert by_domain == {"remote.test": ["x@remote.test", "y@REMOTE.test"],
                         "other.test": ["z@other.test"]}
    assert len({local.job_id, *(j.job_id for j in remote)}) == 3

    # while in flight: stat, list, explain, the CLI and the JSON view agree
    stat = await q.stat()
    assert stat.messages == 1 and stat.recipients_by_state["queued"] == 4
    monkeypatch.setenv("MAILYARD_QUEUE_ADDR", f"127.0.0.1:{q.grpc_port}")
    assert cli(["queue", "stat"]) == 0
    out = capsys.readouterr().out
    assert "messages in queue: 1" in out and "not yet preprocessed: 0" in out
    assert cli(["queue", "read", "--domain", "remote.test"]) == 0
    out = capsys.readouterr().out
    assert env.queue_id in out and "x@remote.test" in out and "<alice@sender.test>" in out
    assert cli(["queue", "read", "--sender", "nobody"]) == 0
    assert env.queue_id not in capsys.readouterr().out
    with urllib.request.urlopen(f"http://127.0.0.1:{q.http_port}/api/stat") as resp:
        assert json.load(resp)["messages"] == "1"
    url = f"http://127.0.0.1:{q.http_port}/api/messages/{env.queue_id}"
    with urllib.request.urlopen(url) as resp:
        assert len(json.load(resp)["recipients"]) == 4

    await workers["local"].report(local, DELIVERED)
    for j in remote:
        await workers["remote"].report(j, DELIVERED)
    await wait_for(lambda: gone(q, env.queue_id), what="completion")
    assert not Path(spool.root, env.spool_path).exists()
    stat = await q.stat()
    assert stat.messages == 0 and sum(stat.recipients_by_state.values()) == 0


async def test_deferral_then_success(js: Any, spool: Spool, workers: Any,
                                     start_queue: Any) -> None:
    q = start_queue()
    env = await send(spool, js, "a@sender.test", ["r@remote.test"])
    first = await workers["remote"].job()
    reply = "Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)"
    await workers["remote"].report(first, DEFERRED, reply)

    async def deferred() -> qpb.RecipientDetail | None:
        d = (await q.explain(env.queue_id)).recipients[0]
        return d if d.state == qpb.RECIPIENT_STATE_DEFERRED else None

    detail = await wait_for(deferred, what="deferred state")
    assert detail.attempts == 1 and detail.last_reply == reply
    assert detail.route == "mx.remote.test" and detail.next_attempt.seconds > 0
    second = await workers["remote"].job()
    assert second.attempt == 2 and second.job_id != first.job_id
    await workers["remote"].report(second, DELIVERED)
    await wait_for(lambda: gone(q, env.queue_id), what="completion")
    assert not Path(spool.root, env.spool_path).exists()


async def test_withdrawn_todo_is_dropped(js: Any, spool: Spool, workers: Any,
                                         start_queue: Any) -> None:
    q = start_queue()
    # an injector whose publish "failed" withdrew the file, but the notice did arrive
    qid = new_queue_id()
    ghost = Envelope(queue_id=qid, sender="a@sender.test", recipients=["g@remote.test"],
                     spool_path=spool.relpath(qid))
    await bus.publish(js, bus.TODO_SUBJECT, ghost, msg_id=qid)
    env = await send(spool, js, "a@sender.test", ["r@remote.test"])
    job = await workers["remote"].job()
    assert job.queue_id == env.queue_id  # the ghost never became a job
    assert await gone(q, qid)
    with urllib.request.urlopen(f"http://127.0.0.1:{q.http_port}/metrics") as resp:
        text = resp.read().decode()
    assert 'mailyard_queue_reconciler_repairs_total{kind="withdrawn"} 1.0' in text


async def test_one_bad_todo_does_not_hold_up_its_batch(js: Any, spool: Spool, workers: Any,
                                                       start_queue: Any) -> None:
    """Todos are recorded a batch per transaction: a notice the store cannot take (here a
    size beyond SQLite's integers) must not cost its batch-mates, and is itself kept (unacked,
    its file in place), never dropped."""
    good = [await send(spool, js, "a@sender.test", [f"r{i}@remote.test"]) for i in range(2)]
    bad = await spool.commit(Envelope(queue_id=new_queue_id(), sender="a@sender.test",
                                      recipients=["bad@remote.test"]), b"Subject: x\r\n\r\nx\r\n")
    bad.size = 2**64 - 1
    await bus.publish(js, bus.TODO_SUBJECT, bad, msg_id=bad.queue_id)
    good.append(await send(spool, js, "a@sender.test", ["r2@remote.test"]))
    q = start_queue()  # all four notices are waiting: they come in one fetch
    jobs = [await workers["remote"].job() for _ in good]
    assert sorted(j.queue_id for j in jobs) == sorted(e.queue_id for e in good)
    assert await gone(q, bad.queue_id)  # not recorded ...
    assert Path(spool.root, bad.spool_path).exists()  # ... and not dropped
    stat = await wait_for(q.stat, what="stat")
    assert stat.messages == 3 and stat.not_preprocessed == 1  # its todo waits, unacked
    for j in jobs:
        await workers["remote"].report(j, DELIVERED)
    for e in good:
        await wait_for(lambda e=e: gone(q, e.queue_id), what="completion")


async def test_events_batched_on_nats_streamed_one_by_one(js: Any, spool: Spool, workers: Any,
                                                          start_queue: Any) -> None:
    """`mailyard.events` carries DeliveryEvents (a step's events in one message); Watch and
    so `queue watch` still get one DeliveryEvent per new / delivery / done, in order."""
    import asyncio

    q = start_queue()
    raw: list[qpb.DeliveryEvents] = []

    async def on_raw(msg: Any) -> None:
        raw.append(qpb.DeliveryEvents.FromString(msg.data))

    sub = await js._nc.subscribe(bus.EVENTS_SUBJECT, cb=on_raw)
    watched: list[qpb.DeliveryEvent] = []

    async def watch() -> None:
        async for ev in q.stub.Watch(qpb.WatchRequest()):
            watched.append(ev)

    watcher = asyncio.create_task(watch())
    await watching(js, watched)
    sent = await asyncio.gather(*(send(spool, js, "s@sender.test", [f"r{i}@remote.test"])
                                  for i in range(6)))
    for _ in sent:
        job = await workers["remote"].job()
        await workers["remote"].report(job, DELIVERED)
    ids = {env.queue_id for env in sent}

    def kinds(events: list[qpb.DeliveryEvent]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for ev in events:
            if ev.queue_id in ids:
                out.setdefault(ev.queue_id, []).append(ev.kind)
        return out

    async def complete() -> bool:
        return kinds(watched) == {qid: ["new", "delivery", "done"] for qid in ids}

    await wait_for(complete, what="new, delivery and done watched for every message")
    flat = [ev for batch in raw for ev in batch.events]
    assert kinds(flat) == kinds(watched)
    assert all(ev.HasField("at") for ev in flat)
    assert {ev.recipient for ev in flat if ev.kind == "delivery"} == {
        f"r{i}@remote.test" for i in range(6)}
    watcher.cancel()
    await sub.unsubscribe()
