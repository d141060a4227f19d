"""Per-recipient queue state in SQLite (qmail's info/, local/, remote/ and bounce/ in one file).

One connection, used only from one thread of its own (the event loop never waits on disk).
WAL mode; `synchronous` FULL by default so a todo is acked only after its state is on disk.
Counters by state are kept in memory and adjusted on every write, so Stat never scans; they
are recounted once at open and after bulk admin actions.

Recipient states (mailyard.queue.v1.RecipientState): DEFERRED rows with next_attempt <= now
are due (a new recipient is simply DEFERRED with next_attempt = arrival, attempts 0); QUEUED
rows carry the job_id handed out; DELIVERED / FAILED are final; HELD is DEFERRED put aside.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from mailyard.api.mail.v1.delivery_pb2 import OUTCOME_DELIVERED
from mailyard.api.mail.v1.envelope_pb2 import Envelope

T = TypeVar("T")

QUEUED, DEFERRED, DELIVERED, FAILED, HELD = 1, 2, 3, 4, 5
STATE_NAMES = {QUEUED: "queued", DEFERRED: "deferred", DELIVERED: "delivered",
               FAILED: "failed", HELD: "held"}
FINAL = (DELIVERED, FAILED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
  queue_id TEXT PRIMARY KEY,
  sender TEXT NOT NULL,
  size INTEGER NOT NULL,
  received_at REAL NOT NULL,
  spool_path TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  origin INTEGER NOT NULL,
  client_ip TEXT NOT NULL DEFAULT '',
  auth_user TEXT NOT NULL DEFAULT '',
  smtputf8 INTEGER NOT NULL DEFAULT 0,
  body_8bit INTEGER NOT NULL DEFAULT 0,
  held INTEGER NOT NULL DEFAULT 0,
  seq INTEGER NOT NULL DEFAULT 0,          -- dispatches so far: job_id = <queue_id>-<seq>
  bounce_id TEXT NOT NULL DEFAULT '',      -- queue id reserved for the pending bounce
  warned INTEGER NOT NULL DEFAULT 0        -- delay warning sent
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_received ON messages (received_at);
CREATE TABLE IF NOT EXISTS recipients (
  queue_id TEXT NOT NULL,
  address TEXT NOT NULL,
  channel INTEGER NOT NULL,
  domain TEXT NOT NULL,
  state INTEGER NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt REAL NOT NULL DEFAULT 0,
  last_reply TEXT NOT NULL DEFAULT '',
  enhanced_code TEXT NOT NULL DEFAULT '',
  route TEXT NOT NULL DEFAULT '',
  job_id TEXT NOT NULL DEFAULT '',
  queued_at REAL NOT NULL DEFAULT 0,
  bounced INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (queue_id, address)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS recipients_due ON recipients (state, next_attempt);
-- Completed messages whose spool removal may not be on disk yet (it is not fsynced one by
-- one): a file that comes back after an OS crash is recognised as done, never redelivered.
-- Forgotten after a sync of the file system (forget_completed).
CREATE TABLE IF NOT EXISTS completed (
  queue_id TEXT PRIMARY KEY,
  at REAL NOT NULL
) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class Message:
    queue_id: str
    sender: str
    size: int
    received_at: float
    spool_path: str
    sha256: str
    origin: int
    client_ip: str
    auth_user: str
    smtputf8: bool
    body_8bit: bool
    held: bool
    seq: int
    bounce_id: str


@dataclass(frozen=True)
class Recipient:
    queue_id: str
    address: str
    channel: int
    domain: str
    state: int
    attempts: int
    next_attempt: float
    last_reply: str
    enhanced_code: str
    route: str
    job_id: str
    queued_at: float
    bounced: bool


@dataclass
class Job:
    """One hand-out: recipients of one message, one channel, one domain."""

    job_id: str
    message: Message
    channel: int
    domain: str
    recipients: list[str]
    attempt: int


@dataclass
class Outcome:
    """One recipient's result as the store applied it."""

    queue_id: str
    address: str
    channel: int
    state: int
    reply: str


def _message(row: sqlite3.Row) -> Message:
    return Message(row["queue_id"], row["sender"], row["size"], row["received_at"],
                   row["spool_path"], row["sha256"], row["origin"], row["client_ip"],
                   row["auth_user"], bool(row["smtputf8"]), bool(row["body_8bit"]),
                   bool(row["held"]), row["seq"], row["bounce_id"])


def _recipient(row: sqlite3.Row) -> Recipient:
    return Recipient(row["queue_id"], row["address"], row["channel"], row["domain"],
                     row["state"], row["attempts"], row["next_attempt"], row["last_reply"],
                     row["enhanced_code"], row["route"], row["job_id"], row["queued_at"],
                     bool(row["bounced"]))


class Store:
    def __init__(self, path: Path | str, *, sync: str = "FULL") -> None:
        self.path = Path(path)
        self.sync = sync
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state")
        self._db: sqlite3.Connection | None = None
        self.messages = 0
        self.held = 0
        self.by_state: dict[int, int] = dict.fromkeys(STATE_NAMES, 0)
        self.oldest: float | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a store method on the store's own thread."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self.sync}")
        db.execute("PRAGMA temp_store=MEMORY")
        db.execute("PRAGMA cache_size=-65536")  # 64 MB page cache, whatever the queue size
        db.executescript(_SCHEMA)
        self._db = db
        self.recount()

    async def aopen(self) -> None:
        await self.run(self.open)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def aclose(self) -> None:
        await self.run(self.close)
        self._pool.shutdown(wait=True)

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "store not open"
        return self._db

    def _tx(self, durable: bool = True) -> _Tx:
        """A write transaction. durable=False commits without syncing the WAL even under
        STATE_SYNC=FULL: only for writes whose loss in an OS crash is repaired anyway (the
        removal of a completed message, whose file is already gone: the sweep finishes it
        again). A later durable commit syncs the whole WAL, these frames included, so the
        order of commits on disk is kept."""
        return _Tx(self, durable or self.sync != "FULL")

    # -- counters ----------------------------------------------------------------------

    def recount(self) -> None:
        row = self.db.execute("SELECT COUNT(*), COALESCE(SUM(held), 0) FROM messages").fetchone()
        self.messages, self.held = int(row[0]), int(row[1])
        counts = dict.fromkeys(STATE_NAMES, 0)
        for state, count in self.db.execute(
                "SELECT state, COUNT(*) FROM recipients GROUP BY state"):
            counts[state] = count
        self.by_state = counts
        self._refresh_oldest()

    def _refresh_oldest(self) -> None:
        value = self.db.execute("SELECT MIN(received_at) FROM messages").fetchone()[0]
        self.oldest = float(value) if value is not None else None

    def _moved(self, old: int, new: int, count: int = 1) -> None:
        if old != new:
            self.by_state[old] -= count
            self.by_state[new] += count

    # -- preprocessing -----------------------------------------------------------------

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

    def known(self, queue_ids: list[str]) -> set[str]:
        return self._present("messages", queue_ids)

    def _present(self, table: str, queue_ids: list[str]) -> set[str]:
        """The ids that have a row in `table` (one of ours, never input)."""
        found: set[str] = set()
        for chunk in _chunks(queue_ids):
            found.update(r[0] for r in self.db.execute(
                f"SELECT queue_id FROM {table} WHERE queue_id IN ({_marks(chunk)})",  # noqa: S608
                chunk))
        return found

    # -- dispatch ----------------------------------------------------------------------

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
        messages = {row["queue_id"]: _message(row) for row in db.execute(
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

    # -- results -----------------------------------------------------------------------

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

    # -- completion and bounces --------------------------------------------------------

    def message(self, queue_id: str) -> Message | None:
        row = self.db.execute("SELECT * FROM messages WHERE queue_id = ?",
                              (queue_id,)).fetchone()
        return _message(row) if row else None

    def recipients(self, queue_id: str) -> list[Recipient]:
        return [_recipient(r) for r in self.db.execute(
            "SELECT * FROM recipients WHERE queue_id = ? ORDER BY address", (queue_id,))]

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

    def snapshot(self, queue_ids: Iterable[str]) -> dict[str, tuple[Message, list[Recipient]]]:
        """Each known message with its recipients (what settling needs), in one read."""
        qids = list(dict.fromkeys(queue_ids))
        messages = self._messages(qids)
        out: dict[str, tuple[Message, list[Recipient]]] = {
            qid: (messages[qid], []) for qid in qids if qid in messages}
        for rcpt in self._recipients(list(out)):
            out[rcpt.queue_id][1].append(rcpt)
        return out

    def _messages(self, queue_ids: list[str]) -> dict[str, Message]:
        out: dict[str, Message] = {}
        for chunk in _chunks(queue_ids):
            for row in self.db.execute(
                    f"SELECT * FROM messages WHERE queue_id IN ({_marks(chunk)})",  # noqa: S608
                    chunk):
                out[row["queue_id"]] = _message(row)
        return out

    def _recipients(self, queue_ids: list[str]) -> list[Recipient]:
        """All recipients of these messages, ordered by (queue_id, address)."""
        out: list[Recipient] = []
        for chunk in _chunks(sorted(queue_ids)):
            out += [_recipient(r) for r in self.db.execute(
                f"SELECT * FROM recipients WHERE queue_id IN ({_marks(chunk)})"  # noqa: S608
                " ORDER BY queue_id, address", chunk)]
        return out

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
            for chunk in _chunks(ids):
                gone: list[str] = []
                for qid, held, received in db.execute(
                        f"DELETE FROM messages WHERE queue_id IN ({_marks(chunk)})"  # noqa: S608
                        " RETURNING queue_id, held, received_at", chunk).fetchall():
                    gone.append(qid)
                    self.messages -= 1
                    self.held -= int(held)
                    refresh = refresh or (self.oldest is not None and received <= self.oldest)
                if not gone:
                    continue
                for (state,) in db.execute(
                        f"DELETE FROM recipients WHERE queue_id IN ({_marks(gone)})"  # noqa: S608
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

    # -- admin -------------------------------------------------------------------------

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
        return [_recipient(r) for r in self.db.execute(
            "SELECT * FROM recipients WHERE state = ? AND queued_at < ?", (QUEUED, before))]

    def requeue(self, items: list[Recipient], now: float) -> None:
        with self._tx() as db:
            for r in items:
                n = db.execute("UPDATE recipients SET state = ?, next_attempt = ?, job_id = ''"
                               " WHERE queue_id = ? AND address = ? AND state = ? AND job_id = ?",
                               (DEFERRED, now, r.queue_id, r.address, QUEUED, r.job_id)).rowcount
                self._moved(QUEUED, DEFERRED, n)

    def page_messages(self, after: str, limit: int) -> list[Message]:
        return [_message(r) for r in self.db.execute(
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
        messages = [_message(r) for r in rows[:limit]]
        token = messages[-1].queue_id if len(rows) > limit else ""
        return [(m, self.recipients(m.queue_id)) for m in messages], token


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on error (and the counters recounted)."""

    def __init__(self, store: Store, durable: bool = True) -> None:
        self.store = store
        self.db = store.db
        self.durable = durable

    def __enter__(self) -> sqlite3.Connection:
        if not self.durable:
            self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None:
                self.db.execute("COMMIT")
            else:
                self.db.execute("ROLLBACK")
                self.store.recount()
        finally:
            if not self.durable:
                self.db.execute(f"PRAGMA synchronous={self.store.sync}")


def now() -> float:
    return time.time()


_CHUNK = 500  # ids per IN (...) list


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i:i + _CHUNK]


def _marks(chunk: list[str]) -> str:
    return ",".join("?" * len(chunk))
