"""The history index: a local SQLite copy of MAIL_HISTORY, laid out for `mailyard log`.

Why: a log-structured stream cannot cluster records by address; a busy sender's 100
messages sit in every 8 MB block of the stream, and the first search after a quiet spell
waits for nats-server to load all of them. Here the same records are clustered for the
three queries: a message's steps by (queue id, seq), an address's messages by (address
key, stream time, seq), and every step by (stream time, seq) for --since.

Derived and rebuildable: a file of its own in STATE_DIR (never the queue state), fed by
history_feed.py, thrown away and refilled from the stream when it no longer matches it
(damaged, stream purged or re-created). Nothing here is the record of anything: losing
the file costs a refill, never history. Every method runs on the index's own thread
(`run`), one at a time.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from mailyard.queue.sqlite_thread import SqliteOnThread

log = logging.getLogger(__name__)
FILE_NAME = "history-index.db"
VERSION = 1  # of the layout below; another version in the file means a rebuild

# WITHOUT ROWID: each table is its primary key's b-tree, so a query reads the rows it
# needs side by side (a message's steps, an address's messages) instead of one page each.
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    qid TEXT NOT NULL, seq INTEGER NOT NULL, ts INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (qid, seq)) WITHOUT ROWID;
-- every step by stream time (--since); the index holds (ts, seq, qid)
CREATE INDEX IF NOT EXISTS events_by_time ON events (ts, seq);
-- one row per AddressRef: akey is its subject's last token (the address's hash)
CREATE TABLE IF NOT EXISTS refs (
    akey TEXT NOT NULL, ts INTEGER NOT NULL, seq INTEGER NOT NULL, qid TEXT NOT NULL,
    at INTEGER NOT NULL, PRIMARY KEY (akey, ts, seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS refs_by_time ON refs (ts);
"""

# A row for the index, from one stream record: ("e", qid, seq, ts, data) for a step,
# ("r", akey, ts, seq, qid, at) for an address reference; ts and at in nanoseconds.
Row = tuple[Any, ...]


class HistoryIndex(SqliteOnThread):
    def __init__(self, path: Path) -> None:
        super().__init__(path, "history-index")
        # What the file holds: stream records up to last_seq of the stream created at
        # `stream` (its creation time, so a re-created stream is told apart).
        self.last_seq = 0
        self.stream = ""

    # -- opening, and starting over ---------------------------------------------------

    def open(self) -> bool:
        """Open the file; a damaged or foreign one is replaced by an empty one (True).
        OperationalError (no room, no permission, an I/O error) is no damage: raised."""
        self.close()
        try:
            self._connect()
            return False
        except sqlite3.OperationalError:
            raise
        except sqlite3.DatabaseError as exc:
            log.warning("history index %s unusable (%s): starting it over", self.path, exc)
            self.reset()
            return True

    def _connect(self) -> None:
        # synchronous=NORMAL: no fsync per batch; an OS crash may lose the last batches,
        # which the feeder reads again (it resumes after the last seq that reached the file)
        db = self.connect("synchronous=NORMAL", "cache_size=-32768")  # 32 MB
        try:
            db.executescript(SCHEMA)
            meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
            if meta and meta.get("version") != VERSION:
                raise sqlite3.DatabaseError(f"layout version {meta.get('version')}")
            db.execute("INSERT OR IGNORE INTO meta VALUES ('version', ?)", (VERSION,))
        except BaseException:
            db.close()
            raise
        self._db = db
        self.last_seq = int(meta.get("last_seq", 0))
        self.stream = str(meta.get("stream", ""))

    def reset(self) -> None:
        """Start over with an empty file (the feeder refills it from the stream)."""
        self.close()
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{self.path}{suffix}").unlink()
        self._connect()

    def close(self) -> None:
        super().close()
        self.last_seq, self.stream = 0, ""

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """BEGIN ... COMMIT, rolled back on error."""
        db = self.db
        db.execute("BEGIN")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # -- writing ------------------------------------------------------------------------

    def add(self, rows: Iterable[Row], last_seq: int, stream: str) -> None:
        """One fetched batch in one transaction, with the seq it brings the index to."""
        events = [r[1:] for r in rows if r[0] == "e"]
        refs = [r[1:] for r in rows if r[0] == "r"]
        with self._tx() as db:
            # OR REPLACE: a batch read again after a crash writes the same rows again
            db.executemany("INSERT OR REPLACE INTO events VALUES (?, ?, ?, ?)", events)
            db.executemany("INSERT OR REPLACE INTO refs VALUES (?, ?, ?, ?, ?)", refs)
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                           (("last_seq", last_seq), ("stream", stream)))
        self.last_seq, self.stream = last_seq, stream

    def expire(self, first_seq: int, before_ns: int, batch: int) -> int:
        """Delete, among the `batch` oldest events and refs, those the stream no longer
        holds (seq below its first) or stored before `before_ns` (older than HISTORY_DAYS);
        one short transaction, so the feeder's batches go on between two. The number gone:
        0 once the oldest rows are all kept."""
        with self._tx() as db:
            gone = db.execute(
                "DELETE FROM events WHERE (qid, seq) IN (SELECT qid, seq FROM events"
                " INDEXED BY events_by_time ORDER BY ts LIMIT ?) AND (seq < ? OR ts < ?)",
                (batch, first_seq, before_ns)).rowcount
            gone += db.execute(
                "DELETE FROM refs WHERE (akey, ts, seq) IN (SELECT akey, ts, seq FROM refs"
                " INDEXED BY refs_by_time ORDER BY ts LIMIT ?) AND (seq < ? OR ts < ?)",
                (batch, first_seq, before_ns)).rowcount
        return gone

    # -- reading (history_search's index source) -----------------------------------------
    # Every read is bounded to the stream's [first, last] seq at the time of the query, so
    # that it returns what the stream itself held then, whatever retention has not yet
    # deleted here or the feeder has added since.

    def message(self, qid: str, first: int, last: int, limit: int) -> list[bytes]:
        return [r[0] for r in self.db.execute(
            "SELECT data FROM events WHERE qid = ? AND seq BETWEEN ? AND ? ORDER BY seq"
            " LIMIT ?", (qid, first, last, limit))]

    def refs(self, akey: str, since_ns: int, first: int, last: int,
             limit: int) -> list[tuple[str, int]]:
        """(queue id, at in ns) of the address's references stored from since_ns on."""
        return [(r[0], r[1]) for r in self.db.execute(
            "SELECT qid, at FROM refs WHERE akey = ? AND ts >= ? AND seq BETWEEN ? AND ?"
            " ORDER BY ts, seq LIMIT ?", (akey, since_ns, first, last, limit))]

    def by_time(self, after: tuple[int, int], first: int, last: int,
                limit: int) -> list[tuple[int, int, bytes]]:
        """(ts, seq, data) of the steps stored after (ts, seq), in stream order; the caller
        pages on with the last row's (ts, seq)."""
        ts, seq = after
        return list(self.db.execute(
            "SELECT ts, seq, data FROM events INDEXED BY events_by_time"
            " WHERE (ts, seq) > (?, ?) AND seq BETWEEN ? AND ?"
            " ORDER BY ts, seq LIMIT ?", (ts, seq, first, last, limit)))

    def holds_rows(self) -> bool:
        return bool(self.db.execute("SELECT 1 FROM events LIMIT 1").fetchone()
                    or self.db.execute("SELECT 1 FROM refs LIMIT 1").fetchone())

    def counts(self) -> tuple[int, int]:
        """(events, refs) held: for tests and the bench."""
        return (self.db.execute("SELECT count(*) FROM events").fetchone()[0],
                self.db.execute("SELECT count(*) FROM refs").fetchone()[0])
