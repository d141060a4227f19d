"""A message as it is received: held in memory up to DATA_MEMORY bytes, then streamed into
a spill file on the spool (Spool.spill_file), so 100 uploads of 10 MB do not cost a
gigabyte of RAM. What all messages of the process hold together is bounded as well
(Budget, DATA_MEMORY_TOTAL): past it, a message spills once it holds HEAD bytes. So
DATA_MEMORY can be generous (a spill costs a new inode, a thread hand-off per piece and a
copy at the commit: in the mixed benchmark, spilling at 256 KB instead of 1 MB cost 2-7 %
of the throughput, in alternating pairs) while a flood of big uploads holds
DATA_MEMORY_TOTAL plus HEAD per upload (100 uploads of 10 MB: 261 MB peak RSS, 227 MB
before). The spill file is committed by the kernel's copy; only
the head (HEAD bytes, what the header checks read) always stays in memory, and the whole
message is read back only for a check that needs it (DKIM: dkimpy has no streaming API, so
signing our users' mail and verifying a signed message read it back, once, at the end).
A header section that ends within the head can be rewritten (edit_header); a longer one is
refused by the data_header_size check.

Past databytes the bytes are counted and dropped (nothing more is kept or written); a spill
that fails (disk full) drops the message the same way and the client gets a 451 at the end.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from mailyard.core.errors import SpoolError

if TYPE_CHECKING:
    from mailyard.core.spool import Spool

HEAD = 65536    # bytes of the message kept for header checks (100 Received: lines fit)


class Budget:
    """Bytes the messages of one process hold in memory together, against a bound."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.held = 0

    @property
    def exceeded(self) -> bool:
        return self.held > self.total


class MessageBody:
    def __init__(self, spool: Spool, limit: int, memory: int, budget: Budget) -> None:
        self.spool = spool
        self.limit = limit          # databytes; 0 = none
        self.memory = memory        # bytes held before they go to the spill file
        self.budget = budget        # shared by the process's messages
        self.size = 0               # decoded bytes received, also past the limit
        self.head = b""
        self.over = False           # past databytes: counted, not kept
        self.failed = False         # the spill file could not be written: not kept
        self._parts: list[bytes] = []
        self._held = 0
        self._fd = -1
        self._whole: bytes | None = None
        self._skip = 0              # spilled: bytes of the file replaced by _header
        self._header = b""
        self.edited = False         # edit_header changed the header section

    @property
    def kept(self) -> bool:
        return not (self.over or self.failed)

    async def add(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        if not self.kept:
            return
        if self.limit and self.size > self.limit:
            self.over = True
            self.close()
            return
        if len(self.head) < HEAD:
            self.head += data[:HEAD - len(self.head)]
        self._parts.append(data)
        self._held += len(data)
        self.budget.held += len(data)
        if self._held >= self.memory or (self.budget.exceeded and self._held >= HEAD):
            await self._spill()

    async def _spill(self) -> None:
        data = b"".join(self._parts)
        self._parts.clear()
        self._release()
        try:
            if self._fd < 0:
                self._fd = await self.spool.spill_file()
            await self.spool.spill(self._fd, data)
        except SpoolError:
            self.failed = True
            self.close()

    async def finish(self) -> None:
        """The end of DATA: the last bytes go where the rest went."""
        if self.kept and self._fd >= 0 and self._parts:
            await self._spill()

    @property
    def tail(self) -> tuple[int, int, int] | None:
        """(spill file, offset, bytes) for Spool.commit, or None: all in memory."""
        return (self._fd, self._skip, self.size - self._skip) if self._fd >= 0 else None

    def in_memory(self, before: bytes = b"") -> bytes:
        """`before`, then the message when it was not spilled, else what goes before the
        tail (an edited header section, or nothing). One join: our header lines go in front
        without a second copy of the message."""
        return before + self._header if self._fd >= 0 else b"".join([before, *self._parts])

    @property
    def header_in_head(self) -> bool:
        """Whether the header section ends within the head (data_header_size)."""
        return self.size <= len(self.head) or self.head.startswith(b"\r\n") \
            or b"\r\n\r\n" in self.head

    def header(self) -> bytes | None:
        """The header section with the empty line after it, if it ends within the head."""
        end = self.head.find(b"\r\n\r\n")
        return None if end < 0 else self.head[:end + 4]

    def edit_header(self, change: Callable[[bytes], bytes]) -> None:
        """Replace the header section by change(header section); no-op past the head.
        `edited` is set only when change gave other bytes (not the very object it got:
        a check that finds nothing to take out hands back what it was given)."""
        header = self.header()
        if header is None:
            return
        if self._fd < 0:
            # Only the header section is handed over, as for a spilled message: joining
            # the whole message for it (and a check splitting it again) copied every
            # message twice, mostly to find nothing to change.
            new = change(header)
            if new is header:
                return
            edited = new + b"".join(self._parts)[len(header):]
            self._parts = [edited]
            self.head = edited[:HEAD]
            self.edited = True
            return
        old = self._header if self._skip else header  # edited before: edit that again
        new = change(old)
        if new is old:
            return
        if not self._skip:
            self._skip = len(header)
        self._header, self.edited, self._whole = new, True, None
        self.head = (new + self.head[len(old):])[:HEAD]

    async def whole(self) -> bytes:
        """The whole message in memory (read back from the spill file once if needed)."""
        if self._fd < 0:
            return self.in_memory()
        if self._whole is None:
            size = self.size
            self._whole = self._header + (await self.spool.read_spill(self._fd, size))[
                self._skip:]
        return self._whole

    def _release(self) -> None:
        self.budget.held -= self._held
        self._held = 0

    def close(self) -> None:
        self._parts.clear()
        self._release()
        self._whole = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
