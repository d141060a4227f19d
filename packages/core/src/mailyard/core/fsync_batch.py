"""fsyncs that concurrent coroutines ask for, done together: one hand-off to the pool for
all that are waiting (one io_submit through core.aiofsync where the kernel can), and while
those are on the disk the next ones gather, as the spool's commit batches do.

Why: local-delivery handed each fsync to a pool thread on its own. Each hand-off cost a
thread wake-up and two takes of the GIL from the busy event loop, and a delivery has two
fsyncs (the message, then new/): with every other step of a delivery on the loop, a
delivery cost about as much CPU as when it was done whole in a pool thread, and a third
more than with its fsyncs blocking the loop (docs/architecture.md, "Where the time goes").
The durability is the same: each caller returns once its own fd is fsynced, and an fd's
failure is raised to its caller alone.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from concurrent.futures import Executor

from mailyard.core import aiofsync


class FsyncBatch:
    def __init__(self, pool: Executor) -> None:
        self._pool = pool
        self._waiting: list[tuple[int, asyncio.Future[None]]] = []
        self._syncing = False
        self._aio = aiofsync.Lazy()
        self.rounds = 0  # hand-offs to the pool so far (tests)

    async def fsync(self, fd: int) -> None:
        """fsync `fd` with whatever else is waiting; OSError if it failed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._waiting.append((fd, future))
        if not self._syncing:
            self._syncing = True
            loop.call_soon(self._start, loop)  # the others of this turn of the loop join
        await future

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._waiting = self._waiting, []
        self.rounds += 1
        try:
            done = loop.run_in_executor(self._pool, self._sync, [fd for fd, _ in batch])
        except RuntimeError as exc:  # the pool is shut down: nobody may wait for ever
            done = loop.create_future()
            done.set_exception(OSError(f"cannot fsync: {exc}"))
        done.add_done_callback(lambda finished: self._settle(loop, batch, finished))

    def _settle(self, loop: asyncio.AbstractEventLoop,
                batch: list[tuple[int, asyncio.Future[None]]],
                finished: asyncio.Future[list[OSError | None]]) -> None:
        failure = finished.exception() if not finished.cancelled() else OSError("cancelled")
        outcomes = [failure] * len(batch) if failure else finished.result()
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # its caller was cancelled
                continue
            if outcome is None:
                future.set_result(None)
            else:
                future.set_exception(outcome)
        if self._waiting:  # gathered while those were on the disk
            self._start(loop)
        else:
            self._syncing = False

    def _sync(self, fds: Sequence[int]) -> list[OSError | None]:
        """Pool thread: every fd's outcome (None: durable)."""
        outcomes = self._aio.sync(fds)
        if outcomes is not None:
            return outcomes
        outcomes = []
        for fd in fds:
            try:
                os.fsync(fd)
                outcomes.append(None)
            except OSError as exc:
                outcomes.append(exc)
        return outcomes

    def close(self) -> None:
        self._aio.close()
