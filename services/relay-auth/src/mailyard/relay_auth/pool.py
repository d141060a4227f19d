"""The bounded pool password checks run in: a few worker threads and a bounded queue.

argon2 is slow and memory-hard on purpose (19 MiB and tens of milliseconds per check with
the platform's parameters), so the number of checks running at once decides relay-auth's
memory and whether the event loop keeps answering CheckClient. asyncio.to_thread used the
default executor (cpu + 4 threads, each with its own malloc arena keeping the largest hash
it ever ran): 30 wrong-password logins took the process from 73 to 458 MB. Here WORKERS
threads (one per core by default) run checks, up to QUEUE more wait in order, and a check
beyond that is refused at once (Busy: the client gets a temporary failure and tries again)
instead of piling up memory and latency. argon2-cffi and libcrypt (ctypes) release the GIL,
so the workers use the cores while the loop serves other calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from mailyard.relay_auth import metrics

T = TypeVar("T")


class Busy(Exception):
    """Every worker busy and the queue full."""


class PasswordPool:
    def __init__(self, workers: int, queue: int) -> None:
        self.workers = workers
        self.limit = workers + queue
        self.pending = 0
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=workers,
                                            thread_name_prefix="password")
        metrics.AUTH_PENDING.set_function(lambda: self.pending)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        if self.pending >= self.limit:
            metrics.AUTH_BUSY.inc()
            raise Busy
        with self._lock:
            self.pending += 1
        # Counted until the thread is done with it (or it was dropped from the queue), not
        # until the caller stops waiting: a check whose client left still holds a worker.
        job = self._executor.submit(fn, *args)
        job.add_done_callback(self._finished)
        return await asyncio.wrap_future(job)

    def _finished(self, _job: object) -> None:
        with self._lock:  # called in the worker thread
            self.pending -= 1

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._executor.shutdown(wait=False, cancel_futures=True)
