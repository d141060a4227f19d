"""Recipient scheduling: due recipients handed out as jobs (QUEUED under a job id), hand-outs
undone or rebuilt after a crash, stuck jobs put back to DEFERRED."""

from __future__ import annotations

import json
import sqlite3

from mailyard.queue.state.base import StoreBase
from mailyard.queue.state.rows import (
    DEFERRED,
    QUEUED,
    Job,
    Recipient,
    message_of,
    recipient_of,
)


class Dispatch(StoreBase):
    def next_due(self) -> float | None:
        value = self.db.execute("SELECT MIN(next_attempt) FROM recipients WHERE state = ?",
                                (DEFERRED,)).fetchone()[0]
        return float(value) if value is not None else None

    def take_due(self, now: float, limit: int) -> list[Job]:
        """Due recipients become QUEUED under a new job id, grouped per message, channel and
        domain (one SMTP transaction per domain). Committed before anything is published:
        a crash in between leaves a stuck job for the reconciler, never a lost recipient."""
        with self._tx() as db:
            return self._take_due(db, now, limit)

    def _take_due(self, db: sqlite3.Connection, now: float, limit: int) -> list[Job]:
        rows = db.execute(
            "SELECT queue_id, address, channel, domain, attempts FROM recipients"
            " WHERE state = ? AND next_attempt <= ? ORDER BY next_attempt LIMIT ?",
            (DEFERRED, now, limit)).fetchall()
        if not rows:
            return []
        groups: dict[tuple[str, int, str], list[sqlite3.Row]] = {}
        for row in rows:
            domain = row[3] if row[2] == 2 else ""
            groups.setdefault((row[0], row[2], domain), []).append(row)
        per_message: dict[str, int] = {}
        for qid, _, _ in groups:
            per_message[qid] = per_message.get(qid, 0) + 1
        # One statement for every message: seq grows by its number of jobs (job ids are
        # <queue_id>-<seq>, so the jobs of a message get seq-k+1 .. seq).
        messages = {row["queue_id"]: message_of(row) for row in db.execute(
            "UPDATE messages SET seq = seq + c.value FROM json_each(?) AS c"
            " WHERE messages.queue_id = c.key RETURNING *",
            (json.dumps(per_message),))}
        next_seq = {qid: m.seq - per_message[qid] + 1 for qid, m in messages.items()}
        jobs: list[Job] = []
        updates: list[tuple[int, str, float, str, str]] = []
        for (qid, channel, domain), members in groups.items():
            message = messages.get(qid)
            if message is None:
                continue
            seq = next_seq[qid]
            next_seq[qid] = seq + 1
            job_id = f"{qid}-{seq}"
            addresses = [r[1] for r in members]
            updates += [(QUEUED, job_id, now, qid, a) for a in addresses]
            jobs.append(Job(job_id, message, channel, domain, addresses,
                            max(r[4] for r in members) + 1))
        db.executemany("UPDATE recipients SET state = ?, attempts = attempts + 1, job_id = ?,"
                       " queued_at = ? WHERE queue_id = ? AND address = ?", updates)
        self._moved(DEFERRED, QUEUED, len(updates))
        return jobs

    def dispatch_round(self, now: float, limit: int) -> tuple[list[Job], float | None]:
        """take_due, then the next attempt time of what is still waiting (one hop)."""
        jobs = self.take_due(now, limit)
        return jobs, self.next_due()

    def undo_dispatch_many(self, jobs: list[Job], retry_at: float) -> None:
        """Jobs that could not be published: back to DEFERRED, the attempt not counted."""
        with self._tx() as db:
            for job in jobs:
                for address in job.recipients:
                    n = db.execute("UPDATE recipients SET state = ?, attempts = attempts - 1,"
                                   " job_id = '', next_attempt = ? WHERE queue_id = ? AND"
                                   " address = ? AND state = ? AND job_id = ?",
                                   (DEFERRED, retry_at, job.message.queue_id, address, QUEUED,
                                    job.job_id)).rowcount
                    self._moved(QUEUED, DEFERRED, n)

    def handed_out_since(self, since: float) -> list[Job]:
        """Jobs handed out since `since`, rebuilt with their original job ids. A leader that
        died between committing a hand-out and publishing it left these unannounced."""
        groups: dict[str, list[sqlite3.Row]] = {}
        for row in self.db.execute(
                "SELECT queue_id, address, channel, domain, attempts, job_id FROM recipients"
                " WHERE state = ? AND queued_at >= ? AND job_id != ''", (QUEUED, since)):
            groups.setdefault(row["job_id"], []).append(row)
        jobs = []
        for job_id, members in groups.items():
            message = self.message(members[0]["queue_id"])
            if message is not None:
                first = members[0]
                jobs.append(Job(job_id, message, first["channel"],
                                first["domain"] if first["channel"] == 2 else "",
                                [r["address"] for r in members],
                                max(r["attempts"] for r in members)))
        return jobs

    def stuck(self, before: float) -> list[Recipient]:
        return [recipient_of(r) for r in self.db.execute(
            "SELECT * FROM recipients WHERE state = ? AND queued_at < ?", (QUEUED, before))]

    def requeue(self, items: list[Recipient], now: float) -> None:
        with self._tx() as db:
            for r in items:
                n = db.execute("UPDATE recipients SET state = ?, next_attempt = ?, job_id = ''"
                               " WHERE queue_id = ? AND address = ? AND state = ? AND job_id = ?",
                               (DEFERRED, now, r.queue_id, r.address, QUEUED, r.job_id)).rowcount
                self._moved(QUEUED, DEFERRED, n)
