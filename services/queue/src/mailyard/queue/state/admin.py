"""What operators do to the queue: select, retry, hold and release, fail, list (qmail-qread)."""

from __future__ import annotations

from typing import Any

from mailyard.queue.state.base import StoreBase
from mailyard.queue.state.rows import (
    DEFERRED,
    FAILED,
    HELD,
    QUEUED,
    Message,
    Recipient,
    message_of,
)


class Admin(StoreBase):
    def select_ids(self, queue_ids: list[str], every: bool) -> list[str]:
        if every:
            return [r[0] for r in self.db.execute("SELECT queue_id FROM messages")]
        known = self.known(queue_ids)
        return [q for q in queue_ids if q in known]

    def retry_now(self, queue_ids: list[str], recipient: str, now: float) -> int:
        n = 0
        with self._tx() as db:
            for qid in queue_ids:
                n += db.execute("UPDATE recipients SET next_attempt = ? WHERE queue_id = ?"
                                " AND state = ? AND (? = '' OR address = ?)",
                                (now, qid, DEFERRED, recipient, recipient)).rowcount
        return n

    def set_held(self, queue_ids: list[str], held: bool, now: float) -> int:
        """Hold: waiting recipients put aside (in-flight jobs finish). Release: due now."""
        old, new = (DEFERRED, HELD) if held else (HELD, DEFERRED)
        n = 0
        with self._tx() as db:
            for qid in queue_ids:
                db.execute("UPDATE messages SET held = ? WHERE queue_id = ?", (int(held), qid))
                if held:
                    n += db.execute("UPDATE recipients SET state = ? WHERE queue_id = ? AND"
                                    " state = ?", (new, qid, old)).rowcount
                else:
                    n += db.execute("UPDATE recipients SET state = ?, next_attempt = ? WHERE"
                                    " queue_id = ? AND state = ?", (new, now, qid, old)).rowcount
        self.recount()
        return n

    def fail_now(self, queue_ids: list[str], recipient: str, reply: str) -> int:
        n = 0
        with self._tx() as db:
            for qid in queue_ids:
                n += db.execute("UPDATE recipients SET state = ?, last_reply = ?,"
                                " enhanced_code = '5.0.0', job_id = '' WHERE queue_id = ? AND"
                                " state IN (?, ?, ?) AND (? = '' OR address = ?)",
                                (FAILED, reply, qid, QUEUED, DEFERRED, HELD, recipient,
                                 recipient)).rowcount
        self.recount()
        return n

    def page_messages(self, after: str, limit: int) -> list[Message]:
        return [message_of(r) for r in self.db.execute(
            "SELECT * FROM messages WHERE queue_id > ? ORDER BY queue_id LIMIT ?",
            (after, limit))]

    def list(self, sender: str, recipient: str, domain: str, state: int, after: str,
             limit: int) -> tuple[list[tuple[Message, list[Recipient]]], str]:
        """qmail-qread with filters, paged by queue id (oldest first)."""
        where = ["m.queue_id > ?"]
        args: list[Any] = [after]
        if sender:
            where.append("instr(lower(m.sender), lower(?)) > 0")
            args.append(sender)
        sub = []
        if recipient:
            sub.append("instr(lower(r.address), lower(?)) > 0")
            args.append(recipient)
        if domain:
            sub.append("r.domain = lower(?)")
            args.append(domain)
        if state:
            sub.append("r.state = ?")
            args.append(state)
        if sub:
            clause = " AND ".join(sub)  # fixed fragments; values are bound parameters
            exists = "EXISTS (SELECT 1 FROM recipients r WHERE r.queue_id = m.queue_id AND "
            where.append(exists + clause + ")")
        args.append(limit + 1)
        rows = self.db.execute(
            "SELECT m.* FROM messages m WHERE " + " AND ".join(where)  # noqa: S608
            + " ORDER BY m.queue_id LIMIT ?", args).fetchall()
        messages = [message_of(r) for r in rows[:limit]]
        token = messages[-1].queue_id if len(rows) > limit else ""
        return [(m, self.recipients(m.queue_id)) for m in messages], token
