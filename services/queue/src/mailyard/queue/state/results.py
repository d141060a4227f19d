"""Delivery results applied to the recipients they are about, in one transaction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from mailyard.api.mail.v1.delivery_pb2 import OUTCOME_DELIVERED
from mailyard.queue.state.base import StoreBase
from mailyard.queue.state.rows import (
    FINAL,
    QUEUED,
    Message,
    Outcome,
    Recipient,
)


class Results(StoreBase):
    def apply(self, results: list[tuple[str, str, str, int, str, str, str]],
              decide: Callable[[Recipient, Message, int], tuple[int, float]]) -> list[Outcome]:
        """Apply per-recipient outcomes (job_id, queue_id, address, outcome, reply, code,
        route) in one transaction. `decide(recipient, message, outcome)` gives the new state
        and next attempt. A stale result (another job owns the recipient now) only counts if
        it says delivered: that is a fact whoever reports it."""
        return self.apply_and_snapshot(results, decide)[0]

    def apply_and_snapshot(
            self, results: list[tuple[str, str, str, int, str, str, str]],
            decide: Callable[[Recipient, Message, int], tuple[int, float]],
    ) -> tuple[list[Outcome], dict[str, tuple[Message, list[Recipient]]]]:
        """apply(), plus snapshot() of the messages it changed, as committed: the rows are
        read once (two statements per batch), changed in memory and written back with one
        executemany, in the order given (a later result for a recipient sees the earlier)."""
        applied: list[Outcome] = []
        with self._tx() as db:
            qids = list(dict.fromkeys(r[1] for r in results))
            messages = self._messages(qids)
            rcpts = {(r.queue_id, r.address): r for r in self._recipients(qids)}
            updates: list[tuple[int, float, str, str, str, str, str]] = []
            for job_id, qid, address, outcome, reply, code, route in results:
                message = messages.get(qid)
                rcpt = rcpts.get((qid, address))
                if message is None or rcpt is None or rcpt.state in FINAL:
                    continue
                current = rcpt.state == QUEUED and rcpt.job_id == job_id
                if not current and outcome != OUTCOME_DELIVERED:
                    continue
                state, nxt = decide(rcpt, message, outcome)
                updates.append((state, nxt, reply, code, route, qid, address))
                rcpts[qid, address] = replace(rcpt, state=state, next_attempt=nxt,
                                              last_reply=reply, enhanced_code=code,
                                              route=route, job_id="")
                self._moved(rcpt.state, state)
                applied.append(Outcome(qid, address, rcpt.channel, state, reply))
            db.executemany("UPDATE recipients SET state = ?, next_attempt = ?, last_reply = ?,"
                           " enhanced_code = ?, route = ?, job_id = '' WHERE queue_id = ? AND"
                           " address = ?", updates)
        touched = dict.fromkeys(o.queue_id for o in applied)
        snap: dict[str, tuple[Message, list[Recipient]]] = {
            qid: (messages[qid], []) for qid in touched}
        for (qid, _), rcpt in rcpts.items():  # in (queue_id, address) order, as read
            if qid in snap:
                snap[qid][1].append(rcpt)
        return applied, snap
