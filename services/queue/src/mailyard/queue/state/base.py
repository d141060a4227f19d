"""The queue state's store underneath: the SQLite connection on a thread of its own,
write transactions, the counters by state kept in memory, and the reads every
other part shares (messages and their recipients by id)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

from mailyard.queue.sqlite_thread import SqliteOnThread
from mailyard.queue.state.rows import (
    SCHEMA,
    STATE_NAMES,
    Message,
    Recipient,
    chunks,
    marks,
    message_of,
    recipient_of,
)


class StoreBase(SqliteOnThread):
    def __init__(self, path: Path | str, *, sync: str = "FULL") -> None:
        super().__init__(path, "state")
        self.sync = sync
        self.messages = 0
        self.held = 0
        self.by_state: dict[int, int] = dict.fromkeys(STATE_NAMES, 0)
        self.oldest: float | None = None

    def open(self) -> None:
        # 64 MB page cache, whatever the queue size
        db = self.connect(f"synchronous={self.sync}", "temp_store=MEMORY", "cache_size=-65536")
        db.row_factory = sqlite3.Row
        db.executescript(SCHEMA)
        self._db = db
        self.recount()

    async def aopen(self) -> None:
        await self.run(self.open)

    def _tx(self, durable: bool = True) -> _Tx:
        """A write transaction. durable=False commits without syncing the WAL even under
        STATE_SYNC=FULL: only for writes whose loss in an OS crash is repaired anyway (the
        removal of a completed message, whose file is already gone: the sweep finishes it
        again). A later durable commit syncs the whole WAL, these frames included, so the
        order of commits on disk is kept."""
        return _Tx(self, durable or self.sync != "FULL")

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

    def known(self, queue_ids: list[str]) -> set[str]:
        return self._present("messages", queue_ids)

    def _present(self, table: str, queue_ids: list[str]) -> set[str]:
        """The ids that have a row in `table` (one of ours, never input)."""
        found: set[str] = set()
        for chunk in chunks(queue_ids):
            found.update(r[0] for r in self.db.execute(
                f"SELECT queue_id FROM {table} WHERE queue_id IN ({marks(chunk)})",  # noqa: S608
                chunk))
        return found

    def message(self, queue_id: str) -> Message | None:
        row = self.db.execute("SELECT * FROM messages WHERE queue_id = ?",
                              (queue_id,)).fetchone()
        return message_of(row) if row else None

    def recipients(self, queue_id: str) -> list[Recipient]:
        return [recipient_of(r) for r in self.db.execute(
            "SELECT * FROM recipients WHERE queue_id = ? ORDER BY address", (queue_id,))]

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
        for chunk in chunks(queue_ids):
            for row in self.db.execute(
                    f"SELECT * FROM messages WHERE queue_id IN ({marks(chunk)})",  # noqa: S608
                    chunk):
                out[row["queue_id"]] = message_of(row)
        return out

    def _recipients(self, queue_ids: list[str]) -> list[Recipient]:
        """All recipients of these messages, ordered by (queue_id, address)."""
        out: list[Recipient] = []
        for chunk in chunks(sorted(queue_ids)):
            out += [recipient_of(r) for r in self.db.execute(
                f"SELECT * FROM recipients WHERE queue_id IN ({marks(chunk)})"  # noqa: S608
                " ORDER BY queue_id, address", chunk)]
        return out


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on error (and the counters recounted)."""

    def __init__(self, store: StoreBase, durable: bool = True) -> None:
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
