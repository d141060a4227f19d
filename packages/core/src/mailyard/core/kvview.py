"""A live, in-memory copy of a JetStream KV bucket, kept current by a watcher.

Services read control files and directory records on hot paths (every connection, every
RCPT, every delivery), so they read from memory; a change made anywhere is seen by every
replica within milliseconds, without restarts (qmail rereads its control files the same way).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from mailyard.core import bus

log = logging.getLogger(__name__)
Listener = Callable[[str, bytes | None], None]


class KVView:
    def __init__(self, bucket: str) -> None:
        self.bucket = bucket
        self.data: dict[str, bytes] = {}
        self.revision = 0
        self.kv: KeyValue | None = None
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None
        self._loaded = asyncio.Event()

    def on_change(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def start(self, js: JetStreamContext, *, timeout: float = 10.0) -> None:
        self.kv = await bus.ensure_kv(js, self.bucket)
        self._task = asyncio.create_task(self._watch(), name=f"kv-watch-{self.bucket}")
        # a cluster still electing the bucket's leader: wait, as for the bucket itself
        await bus.patiently(f"the {self.bucket} bucket's contents",
                            lambda: asyncio.wait_for(self._loaded.wait(), timeout))

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    @property
    def ready(self) -> bool:
        return self._loaded.is_set()

    async def _watch(self) -> None:
        assert self.kv is not None
        while True:
            try:
                watcher = await self.kv.watchall()
                async for entry in watcher:
                    if entry is None:  # end of the initial values
                        self._loaded.set()
                        continue
                    self._apply(entry.key, entry.value, entry.operation, entry.revision)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS restarted; watch again from the current state
                log.warning("kv watch of %s interrupted: %s", self.bucket, exc)
                await asyncio.sleep(1)

    def _apply(self, key: str, value: bytes | None, operation: str | None,
               revision: int | None) -> None:
        if operation in ("DEL", "PURGE") or value is None:
            self.data.pop(key, None)
            value = None
        else:
            self.data[key] = value
        self.revision = max(self.revision, revision or 0)
        for listener in self._listeners:
            try:
                listener(key, value)
            except Exception:
                log.exception("kv listener failed for %s/%s", self.bucket, key)
