"""Every inconsistency the reconciler knows, made on purpose, then repaired."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from mailyard.api.mail.v1.envelope_pb2 import Envelope
from mailyard.api.queue.v1 import queue_pb2 as qpb
from mailyard.core.ids import new_queue_id
from mailyard.core.spool import Spool

from .conftest import DEFERRED, DELIVERED, finished, gone, send, wait_for


async def _fsck(q: Any, dry_run: bool = False) -> dict[str, list[qpb.Repair]]:
    resp = await q.stub.Fsck(qpb.FsckRequest(dry_run=dry_run), timeout=30)
    out: dict[str, list[qpb.Repair]] = {}
    for r in resp.repairs:
        out.setdefault(r.kind, []).append(r)
    return out


async def test_orphan_missing_checksum_and_temporaries(js: Any, spool: Spool, workers: Any,
                                                       start_queue: Any) -> None:
    q = start_queue(RETRY_C_REMOTE="60")
    # state whose file goes missing, and state whose file is damaged (both waiting)
    lost = await send(spool, js, "a@sender.test", ["lost@remote.test"])
    bad = await send(spool, js, "a@sender.test", ["bad@remote.test"])
    for _ in range(2):
        await workers["remote"].report(await workers["remote"].job(), DEFERRED, "451 4.3.0 later")
    os.unlink(Path(spool.root, lost.spool_path))
    with open(Path(spool.root, bad.spool_path), "ab") as fh:
        fh.write(b"tampered")
    # a committed file whose todo never made it, and an old uncommitted leftover
    qid = new_queue_id()
    orphan = await spool.commit(Envelope(queue_id=qid, sender="o@sender.test",
                                         recipients=["o@remote.test"]), b"Subject: o\r\n\r\nx\r\n")
    leftover = spool.tmp / "crashed.123"
    leftover.write_bytes(b"partial")
    old = time.time() - 2 * 86400
    os.utime(leftover, (old, old))

    dry = await _fsck(q, dry_run=True)
    assert [r.queue_id for r in dry["orphan_file"]] == [orphan.queue_id]
    assert [r.queue_id for r in dry["missing_file"]] == [lost.queue_id]
    assert [r.queue_id for r in dry["checksum_mismatch"]] == [bad.queue_id]
    assert len(dry["stale_temp"]) == 1
    assert all(r.action == "none" for rs in dry.values() for r in rs)
    assert leftover.exists() and not (await q.explain(lost.queue_id)).summary.held

    fixed = await _fsck(q)
    assert fixed["orphan_file"][0].action == "republished"
    assert fixed["missing_file"][0].action == "held"
    assert fixed["checksum_mismatch"][0].action == "held"
    assert not leftover.exists()
    job = await workers["remote"].job()
    assert job.queue_id == orphan.queue_id and list(job.recipients) == ["o@remote.test"]
    for held in (lost, bad):
        detail = await q.explain(held.queue_id)
        assert detail.summary.held
        assert detail.recipients[0].state == qpb.RECIPIENT_STATE_HELD
    assert (await q.stat()).held_messages == 2
    again = await _fsck(q)  # held ones are not reported twice
    assert "missing_file" not in again and "checksum_mismatch" not in again


async def test_stuck_job_is_requeued(js: Any, spool: Spool, workers: Any,
                                     start_queue: Any) -> None:
    q = start_queue(STUCK_AFTER="0.5")
    env = await send(spool, js, "a@sender.test", ["r@remote.test"])
    first = await workers["remote"].job()  # ... and the worker loses it: no result ever

    async def stuck() -> bool:
        return "stuck_job" in await _fsck(q, dry_run=True)

    await wait_for(stuck, what="stuck job seen")
    assert (await q.explain(env.queue_id)).recipients[0].state == qpb.RECIPIENT_STATE_QUEUED
    assert (await _fsck(q))["stuck_job"][0].action == "requeued"
    second = await workers["remote"].job()
    assert second.queue_id == env.queue_id and second.job_id != first.job_id
    assert second.attempt == 2
    await workers["remote"].report(first, DEFERRED, "451 stale")  # stale result: ignored
    await workers["remote"].report(second, DELIVERED)
    await wait_for(lambda: _done(q, env.queue_id), what="completion")


async def _done(q: Any, qid: str) -> bool:
    return (await q.stat()).messages == 0


async def test_a_completion_cut_short_is_finished_not_held(js: Any, spool: Spool,
                                                          start_queue: Any,
                                                          tmp_path: Path) -> None:
    """Completion removes the file, then the state (one transaction per batch, not synced
    under FULL). A crash in between leaves final recipients without a file: the reconciler
    does not call that a missing file, and the sweep removes the state."""
    from mailyard.queue.state import Store

    store = Store(tmp_path / "state" / "queue.db", sync="NORMAL")
    store.open()
    env = await spool.commit(Envelope(queue_id=new_queue_id(), sender="s@x.test",
                                      recipients=["a@remote.test"]), b"done\r\n")
    store.add([(env, [("a@remote.test", 2, "remote.test")])], time.time())
    job = store.take_due(time.time(), 10)[0]
    store.apply([(job.job_id, env.queue_id, "a@remote.test", 1, "250 ok", "", "mx")],
                lambda r, m, o: (3, 0.0))  # DELIVERED
    store.close()
    os.unlink(Path(spool.root, env.spool_path))  # the file went; the crash came before the state
    q = start_queue(RECONCILE_AT_START="false")
    fixed = await _fsck(q)
    assert "missing_file" not in fixed
    await wait_for(lambda: gone(q, env.queue_id), what="completion")
    assert (await q.stat()).held_messages == 0


async def test_a_removal_lost_in_a_crash_is_not_delivered_again(js: Any, spool: Spool,
                                                                workers: Any,
                                                                start_queue: Any) -> None:
    """Completion does not fsync each removal (the state keeps a completion mark instead).
    If the OS loses the removal, the file is back under mess/ with no state: the mark makes
    it a leftover to remove, not an orphan to deliver again. After the run the file system
    is synced and the mark forgotten (so no run may come between completion and "crash")."""
    q = start_queue(RECONCILE_AT_START="false")
    env = await send(spool, js, "a@sender.test", ["r@remote.test"])
    path = Path(spool.root, env.spool_path)
    raw = path.read_bytes()
    await workers["remote"].report(await workers["remote"].job(), DELIVERED)
    await wait_for(lambda: finished(q, spool, env), what="completion")
    path.write_bytes(raw)  # what an OS crash before the removal reached the disk leaves
    old = time.time() - 3600
    os.utime(path, (old, old))

    dry = await _fsck(q, dry_run=True)
    assert [(r.queue_id, r.action) for r in dry["completed_leftover"]] == [
        (env.queue_id, "none")]
    assert "orphan_file" not in dry and path.exists()
    fixed = await _fsck(q)
    assert [(r.queue_id, r.action) for r in fixed["completed_leftover"]] == [
        (env.queue_id, "removed")]
    assert not path.exists()
    assert await workers["remote"].none_within(1.0)  # never handed out again
    # the run synced the disks: the mark is gone, and a file now would be an orphan
    path.write_bytes(raw)
    os.utime(path, (old, old))
    assert [r.queue_id for r in (await _fsck(q, dry_run=True))["orphan_file"]] == [env.queue_id]
