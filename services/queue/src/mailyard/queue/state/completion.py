"""Completion: messages whose recipients are final, their bounce ids and delay warnings,
their removal, and the marks that recognise a completed message's file after an OS crash."""

from __future__ import annotations

import time

from mailyard.queue.state.base import StoreBase
from mailyard.queue.state.rows import (
    FINAL,
    chunks,
    marks,
)


class Completion(StoreBase):
    def needs_attention(self) -> list[str]:
        """Messages with final recipients (done, or with failures to bounce): completion
        work a crash may have interrupted. Final rows are few: they go with their message."""
        return [r[0] for r in self.db.execute(
            "SELECT DISTINCT queue_id FROM recipients WHERE state IN (?, ?)", FINAL)]

    def reserve_bounce_id(self, queue_id: str, new_id: str) -> str:
        """The bounce's queue id, stored before injecting so a retried bounce reuses it."""
        with self._tx() as db:
            row = db.execute("SELECT bounce_id FROM messages WHERE queue_id = ?",
                             (queue_id,)).fetchone()
            if row is None:
                return new_id
            if row[0]:
                return str(row[0])
            db.execute("UPDATE messages SET bounce_id = ? WHERE queue_id = ?", (new_id, queue_id))
            return new_id

    def release_bounce_id(self, queue_id: str) -> None:
        """The inject of the reserved bounce failed: the next try takes a new id (the old
        one may sit in JetStream's duplicate window, which would swallow its todo)."""
        with self._tx() as db:
            db.execute("UPDATE messages SET bounce_id = '' WHERE queue_id = ?", (queue_id,))

    def mark_warned(self, queue_id: str) -> bool:
        """True for the one caller that gets to send the delay warning."""
        with self._tx() as db:
            return db.execute("UPDATE messages SET warned = 1 WHERE queue_id = ? AND warned = 0",
                              (queue_id,)).rowcount == 1

    def mark_bounced(self, queue_id: str, addresses: list[str]) -> None:
        with self._tx() as db:
            db.executemany("UPDATE recipients SET bounced = 1 WHERE queue_id = ? AND address = ?",
                           [(queue_id, a) for a in addresses])
            db.execute("UPDATE messages SET bounce_id = '' WHERE queue_id = ?", (queue_id,))

    def delete(self, queue_id: str) -> bool:
        return self.delete_many([queue_id]) == [queue_id]

    def delete_many(self, queue_ids: list[str]) -> list[str]:
        """Remove completed messages and their recipients in one transaction, leaving a
        `completed` mark for each; returns the ids that were still there. Their spool files
        are out of mess/ already (not necessarily on disk): a lost commit here leaves final
        recipients that the sweep completes again, a lost removal leaves a file that the
        mark identifies as done."""
        deleted: list[str] = []
        refresh = False
        ids = list(dict.fromkeys(queue_ids))
        now = time.time()
        with self._tx(durable=False) as db:
            db.executemany("INSERT OR IGNORE INTO completed (queue_id, at) VALUES (?, ?)",
                           [(qid, now) for qid in ids])
            for chunk in chunks(ids):
                gone: list[str] = []
                for qid, held, received in db.execute(
                        f"DELETE FROM messages WHERE queue_id IN ({marks(chunk)})"  # noqa: S608
                        " RETURNING queue_id, held, received_at", chunk).fetchall():
                    gone.append(qid)
                    self.messages -= 1
                    self.held -= int(held)
                    refresh = refresh or (self.oldest is not None and received <= self.oldest)
                if not gone:
                    continue
                for (state,) in db.execute(
                        f"DELETE FROM recipients WHERE queue_id IN ({marks(gone)})"  # noqa: S608
                        " RETURNING state", gone).fetchall():
                    self.by_state[state] -= 1
                deleted += gone
            if refresh:
                self._refresh_oldest()
        order = {qid: i for i, qid in enumerate(ids)}
        deleted.sort(key=order.__getitem__)
        return deleted

    def completed_among(self, queue_ids: list[str]) -> set[str]:
        """The ids marked completed (their spool file is a leftover, not an orphan)."""
        return self._present("completed", queue_ids)

    def forget_completed(self, before: float) -> int:
        """Drop the marks older than `before` (a file-system sync began after them, so
        their removals are on disk). Not durable on its own: losing it only keeps marks."""
        with self._tx(durable=False) as db:
            return int(db.execute("DELETE FROM completed WHERE at < ?", (before,)).rowcount)
