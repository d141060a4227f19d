"""The commit batch's fsyncs: all at once, and without a Python thread per fsync where
Linux AIO can (core.aiofsync); each file keeps its own outcome."""

from __future__ import annotations

import asyncio
import errno
import os
import platform
import sys
import threading
from pathlib import Path

import pytest

from mailyard.api.mail.v1.envelope_pb2 import Envelope
from mailyard.core.ids import new_queue_id
from mailyard.core.spool import Spool

AIO = sys.platform == "linux" and platform.machine() in ("x86_64", "aarch64")
needs_aio = pytest.mark.skipif(not AIO, reason="Linux AIO fsync: x86_64 and aarch64 only")


def _fsync_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("fsync")]


@needs_aio
async def test_a_batch_is_fsynced_without_a_thread_per_fsync(spool: Spool) -> None:
    """Every fsync from a thread of its own cost smtp-ingress a wake-up and two takes of
    the GIL each (10 of its 16 context switches per message): a batch of many files and
    folders now goes to the kernel in one io_submit from the writer thread."""
    first = asyncio.ensure_future(spool.commit(Envelope(queue_id=new_queue_id()), b"1"))
    await asyncio.sleep(0)  # the first batch is in the writer thread: the rest form one
    later = [new_queue_id() for _ in range(40)]
    stored = await asyncio.gather(first, *(spool.commit(Envelope(queue_id=q), b"2")
                                           for q in later))
    assert len(set(spool.iter_committed())) == 41 == len(stored)
    assert _fsync_threads() == []
    for q in later:
        assert (await spool.read(spool.relpath(q)))[1] == b"2"


@needs_aio
def test_each_fsync_keeps_its_own_outcome(tmp_path: Path) -> None:
    from mailyard.core.aiofsync import AioFsync

    aio = AioFsync.open()
    assert aio is not None
    try:
        fds = [os.open(tmp_path / f"f{i}", os.O_WRONLY | os.O_CREAT, 0o600) for i in range(5)]
        for fd in fds:
            os.write(fd, b"x" * 1000)
        os.close(fds[2])  # refused by io_submit: that one fails, the rest go on
        outcomes = aio.sync(fds)
        assert [o is None for o in outcomes] == [True, True, False, True, True]
        assert isinstance(outcomes[2], OSError) and outcomes[2].errno == errno.EBADF
        many = [fds[0]] * 600  # more than one round of the context's depth
        assert aio.sync(many) == [None] * 600
        for fd in (fds[0], fds[1], fds[3], fds[4]):
            os.close(fd)
    finally:
        aio.close()
