"""The help page's "rebuild the queue", done live: compare the spool with the queue state.

- orphan_file: a committed file the state does not know (its todo was lost, e.g. JetStream
  lost an acked message in an OS crash) -> its todo is republished (Nats-Msg-Id = queue id,
  so a todo still on its way is deduplicated, and a known id is skipped by preprocessing).
  Files younger than RECONCILE_GRACE are left alone: their todo may be in flight.
- completed_leftover: a file of a message marked completed (its removal was not on disk
  yet when the OS went down) -> removed, never delivered again. After each run the file
  system is synced and older completion marks are forgotten.
- missing_file / checksum_mismatch: state whose file is gone or damaged -> the message is
  held and an error logged; it is never delivered empty. `queue release` after a repair.
- stuck_job: recipients handed out longer than STUCK_AFTER ago with no result (a worker or
  the stream lost the job, or the queue died between commit and publish) -> due again.
- stale_temp: uncommitted leftovers in tmp/ older than a day -> removed.
- rebuilt: after a failover to a new (empty) state, every committed file the state does not
  know is recorded directly, whatever its age (see _orphans).
Dry run reports the same findings with action "none".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from mailyard.core import bus
from mailyard.core.errors import BusError, ChecksumMismatch, SpoolError
from mailyard.queue import lost, metrics
from mailyard.queue.engine import Queue
from mailyard.queue.preprocess import classify, record
from mailyard.queue.results import sweep
from mailyard.queue.state import FINAL

log = logging.getLogger(__name__)
STALE_TEMP_AGE = 86400.0
_CHUNK = 500


def _mtime(path: Path) -> float:
    return os.stat(path).st_mtime


@dataclass
class Repair:
    kind: str
    queue_id: str
    action: str
    detail: str = ""


@dataclass
class Report:
    repairs: list[Repair]
    checked_files: int = 0
    checked_messages: int = 0


class Reconciler:
    def __init__(self, queue: Queue) -> None:
        self.q = queue
        self._lock = asyncio.Lock()

    async def run_forever(self, at_start: bool) -> None:
        if at_start:
            await self.safe_run()
        while True:
            await asyncio.sleep(self.q.settings.reconcile_interval)
            await self.safe_run()

    async def safe_run(self) -> None:
        try:
            await self.run(dry_run=False)
        except Exception:
            log.exception("reconciler run failed")

    async def run(self, dry_run: bool, rebuild: bool = False) -> Report:
        async with self._lock:
            report = Report([])
            await self._orphans(report, dry_run, rebuild)
            await self._missing(report, dry_run)
            await self._lost(report, dry_run)
            await self._stuck(report, dry_run)
            await self._temporaries(report, dry_run)
            if not dry_run:
                await sweep(self.q)
                await self._forget_completed()
            for r in report.repairs:
                metrics.REPAIRS.labels(r.kind).inc()
                log.warning("reconciler: %s %s", r.kind, r.action,
                            extra={"queue_id": r.queue_id, "detail": r.detail})
            if report.repairs and not dry_run:
                self.q.wake.set()
            return report

    def _note(self, report: Report, kind: str, qid: str, action: str, dry_run: bool,
              detail: str = "") -> None:
        report.repairs.append(Repair(kind, qid, "none" if dry_run else action, detail))

    async def _orphans(self, report: Report, dry_run: bool, rebuild: bool = False) -> None:
        spool, store = self.q.spool, self.q.store
        paths = await asyncio.to_thread(lambda: list(spool.iter_committed()))
        report.checked_files = len(paths)
        # Rebuilding a new state (failover): every committed file is recorded at once, young
        # ones too. Their todos were mostly acked by the previous leader (gone with its
        # state), and a republished todo would be dropped by JetStream's dedupe within its
        # window; a todo still on its way finds its queue id known and is skipped.
        cutoff = time.time() - (0 if rebuild else self.q.settings.reconcile_grace)
        for i in range(0, len(paths), _CHUNK):
            chunk = {p.rsplit("/", 1)[-1]: p for p in paths[i:i + _CHUNK]}
            known = await store.run(store.known, list(chunk))
            done = await store.run(store.completed_among, [q for q in chunk if q not in known])
            for qid, path in chunk.items():
                if qid in known:
                    continue
                if qid in done:
                    # completed since the listing (its file went the usual way) or a
                    # leftover whose removal an OS crash undid: only the latter is noted
                    there = await (spool.exists(path) if dry_run else spool.remove(path))
                    if there:
                        self._note(report, "completed_leftover", qid, "removed", dry_run, path)
                    continue
                try:
                    mtime = await asyncio.to_thread(_mtime, spool.path(path))
                except OSError:
                    continue  # completed meanwhile
                if mtime > cutoff:
                    continue
                try:
                    env, _ = await spool.read(path, verify=True)
                except SpoolError as exc:
                    # Not knowable, not deliverable: leave the file for an operator.
                    self._note(report, "orphan_damaged", qid, "none", dry_run, str(exc))
                    continue
                if rebuild and not dry_run:
                    item = (env, classify(self.q, list(env.recipients)))
                    await store.run(record, store, spool, [item], time.time())
                    self._note(report, "rebuilt", qid, "recorded", dry_run, path)
                    continue
                if not dry_run:
                    try:
                        await bus.publish(self.q.js, bus.TODO_SUBJECT, env, msg_id=qid)
                    except BusError as exc:
                        self._note(report, "orphan_file", qid, "none", dry_run, str(exc))
                        continue
                self._note(report, "orphan_file", qid, "republished", dry_run, path)

    async def _forget_completed(self) -> None:
        """Completion marks are needed until their files' removals are on disk: sync the
        file systems (the removals are not fsynced one by one), then drop the older marks."""
        started = time.time()
        await asyncio.to_thread(os.sync)
        store = self.q.store
        await store.run(store.forget_completed, started)

    async def _missing(self, report: Report, dry_run: bool) -> None:
        store, spool = self.q.store, self.q.spool
        after = ""
        while True:
            page = await store.run(store.page_messages, after, _CHUNK)
            if not page:
                return
            after = page[-1].queue_id
            report.checked_messages += len(page)
            for m in page:
                if m.held or not m.sha256:
                    continue
                try:
                    await spool.read(m.spool_path, verify=True)
                    continue
                except ChecksumMismatch as exc:
                    kind, detail = "checksum_mismatch", str(exc)
                except SpoolError as exc:
                    # a message completed since the page was read is not missing, nor is
                    # one whose recipients are all final: its file went first on completion
                    # and a crash (or a lost state commit) came before its state went; the
                    # sweep below finishes it.
                    current = await store.run(store.snapshot, [m.queue_id])
                    if m.queue_id not in current:
                        continue
                    rcpts = current[m.queue_id][1]
                    if rcpts and all(r.state in FINAL for r in rcpts):
                        continue
                    kind, detail = "missing_file", str(exc)
                if not dry_run:
                    await store.run(store.set_held, [m.queue_id], True, time.time())
                log.error("queue state without a usable spool file: %s", detail,
                          extra={"queue_id": m.queue_id})
                self._note(report, kind, m.queue_id, "held", dry_run, detail)

    async def _lost(self, report: Report, dry_run: bool) -> None:
        for r in await lost.requeue(self.q, dry_run):
            self._note(report, "lost_job", r.queue_id, "requeued", dry_run,
                       f"{r.address} job {r.job_id} is gone from JetStream")

    async def _stuck(self, report: Report, dry_run: bool) -> None:
        store = self.q.store
        stuck = await store.run(store.stuck, time.time() - self.q.settings.stuck_after)
        if stuck and not dry_run:
            await store.run(store.requeue, stuck, time.time())
        for r in stuck:
            self._note(report, "stuck_job", r.queue_id, "requeued", dry_run,
                       f"{r.address} job {r.job_id}")

    async def _temporaries(self, report: Report, dry_run: bool) -> None:
        stale = await asyncio.to_thread(self.q.spool.stale_temporaries, STALE_TEMP_AGE)
        for path in stale:
            if not dry_run:
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(path.unlink)
            self._note(report, "stale_temp", "", "removed", dry_run, path.name)
