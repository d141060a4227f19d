"""Recording new messages (the preprocessing step: qmail-send's todo/ to info/, local/,
remote/), due at once; with add_and_take, handed out in the same transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from mailyard.api.mail.v1.envelope_pb2 import Envelope
from mailyard.queue.state.dispatch import Dispatch
from mailyard.queue.state.rows import (
    DEFERRED,
    Job,
)


class Intake(Dispatch):
    def add(self, items: list[tuple[Envelope, list[tuple[str, int, str]]]],
            now: float) -> list[str]:
        """Record new messages with their classified recipients (address, channel, domain),
        all due now. Already known queue ids (a redelivered todo) are skipped. Returns the
        ids actually added. One lookup and two statements per batch, not per message."""
        with self._tx() as db:
            return self._add(db, items, now)

    def _add(self, db: sqlite3.Connection,
             items: list[tuple[Envelope, list[tuple[str, int, str]]]], now: float) -> list[str]:
        skip = self.known([env.queue_id for env, _ in items])
        added: list[str] = []
        messages: list[tuple[Any, ...]] = []
        recipients: list[tuple[str, str, int, str, int, float]] = []
        for env, rcpts in items:
            qid = env.queue_id
            if qid in skip:
                continue
            skip.add(qid)  # the same todo twice in one batch
            # Seconds since the epoch straight from the Timestamp (ToDatetime() is a naive
            # UTC datetime, and .timestamp() would read it as local time).
            received = (env.received_at.seconds + env.received_at.nanos / 1e9
                        if env.HasField("received_at") else now)
            # The injecting host's clock: one ahead of ours put the first retry (birth + c^2)
            # and the expiry that far off, and a Timestamp past the year 9999 failed every
            # job it went into. The queue's own clock decides then, as qmail's did.
            if not 0 < received <= now:
                received = now
            messages.append((qid, env.sender, env.size, received, env.spool_path, env.sha256,
                             int(env.origin), env.client_ip, env.auth_user, int(env.smtputf8),
                             int(env.body_8bit)))
            recipients += [(qid, address, channel, domain, DEFERRED, now)
                           for address, channel, domain in rcpts]
            added.append(qid)
            if self.oldest is None or received < self.oldest:
                self.oldest = received
        if not added:
            return added
        db.executemany(
            "INSERT INTO messages (queue_id, sender, size, received_at, spool_path, sha256,"
            " origin, client_ip, auth_user, smtputf8, body_8bit) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            messages)
        before = db.total_changes
        db.executemany("INSERT OR IGNORE INTO recipients (queue_id, address, channel, domain,"
                       " state, next_attempt) VALUES (?,?,?,?,?,?)", recipients)
        self.messages += len(added)
        self.by_state[DEFERRED] += db.total_changes - before
        return added

    def add_and_take(self, items: list[tuple[Envelope, list[tuple[str, int, str]]]],
                     now: float, limit: int) -> tuple[list[str], list[Job]]:
        """add(), then take_due(), in one transaction (one commit, one sync): new mail is
        handed out in the step that records it instead of waking the dispatcher for a
        second transaction. Returns (ids added, jobs)."""
        with self._tx() as db:
            added = self._add(db, items, now)
            return added, (self._take_due(db, now, limit) if added else [])

    def add_deferred_bulk(self, rows: Iterable[tuple[str, str, str, float, float]]) -> None:
        """Benchmark filler: (queue_id, sender, recipient, received_at, next_attempt), one
        remote recipient per message, already deferred once."""
        with self._tx() as db:
            for qid, sender, rcpt, received, nxt in rows:
                db.execute("INSERT OR IGNORE INTO messages (queue_id, sender, size, received_at,"
                           " spool_path, sha256, origin) VALUES (?,?,?,?,?,?,1)",
                           (qid, sender, 1000, received, f"mess/{qid[-2:]}/{qid}", ""))
                db.execute("INSERT OR IGNORE INTO recipients (queue_id, address, channel, domain,"
                           " state, attempts, next_attempt, last_reply) VALUES (?,?,2,?,?,1,?,?)",
                           (qid, rcpt, rcpt.rpartition("@")[2], DEFERRED, nxt,
                            "Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)"))
