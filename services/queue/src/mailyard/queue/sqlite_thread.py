"""A SQLite connection that lives on a thread of its own: the queue state (state/base.py)
and the history index (history_index.py) both keep one. Every method that touches the
connection runs there through `run`, one at a time, so the event loop never waits on the
disk and the connection is never used from two threads at once."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class SqliteOnThread:
    def __init__(self, path: Path | str, thread_name: str) -> None:
        self.path = Path(path)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._db: sqlite3.Connection | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` on the connection's own thread."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def connect(self, *pragmas: str) -> sqlite3.Connection:
        """A new connection to `path` in WAL mode (autocommit: transactions are explicit),
        with these PRAGMAs; the caller keeps it as `_db` once it is set up."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            for pragma in pragmas:
                db.execute(f"PRAGMA {pragma}")
        except BaseException:
            db.close()
            raise
        return db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def aclose(self) -> None:
        await self.run(self.close)
        self._pool.shutdown(wait=True)

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, f"{self.path.name} not open"
        return self._db
