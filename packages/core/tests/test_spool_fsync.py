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
from typing import Any

import pytest

from mailyard.api.mail.v1.envelope_pb2 import Envelope
from mailyard.core.aiofsync import AioFsync, Unsupported
from mailyard.core.errors import SpoolError
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


async def _batch(spool: Spool, count: int = 40) -> tuple[list[str], list[Any]]:
    """One commit, then `count` more that form the next batch; (their ids, outcomes)."""
    first = asyncio.ensure_future(spool.commit(Envelope(queue_id=new_queue_id()), b"1"))
    await asyncio.sleep(0)  # the first batch is in the writer thread: the rest form one
    later = [new_queue_id() for _ in range(count)]
    outcomes = await asyncio.gather(first, *(spool.commit(Envelope(queue_id=q), q.encode())
                                             for q in later), return_exceptions=True)
    return later, outcomes[1:]


@pytest.mark.parametrize("how", ["no AIO", "the kernel refuses the fsync opcode"])
async def test_without_aio_a_batch_is_fsynced_from_threads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """Another OS or architecture, a seccomp profile, a kernel before 4.18: every commit is
    still fsynced and stored, through the fsync threads, and AIO is not tried again."""
    calls: list[int] = []
    if how == "no AIO":
        monkeypatch.setattr(AioFsync, "open", classmethod(lambda cls: calls.append(0)))
    else:
        def refused(self: AioFsync, fds: Any) -> Any:
            calls.append(len(fds))
            raise Unsupported("the kernel does not fsync through AIO")
        monkeypatch.setattr(AioFsync, "sync", refused)
    spool = Spool(tmp_path / "spool")
    spool.ensure()
    try:
        for _ in range(2):
            later, outcomes = await _batch(spool)
            assert all(isinstance(o, Envelope) for o in outcomes), outcomes
            for q in later:
                assert (await spool.read(spool.relpath(q)))[1] == q.encode()
        assert _fsync_threads() != []
        assert len(calls) == 1  # given up on at the first batch that wanted it
        assert len(set(spool.iter_committed())) == 82 and list(spool.tmp.iterdir()) == []
    finally:
        spool.close()


@needs_aio
@pytest.mark.parametrize("what", ["file", "folder"])
async def test_a_failed_fsync_fails_only_the_messages_it_leaves_undurable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, what: str) -> None:
    """The kernel's EIO for one file's fsync (a disk error, a full thin volume) fails that
    message alone (smtp-ingress answers 451 for it) and leaves nothing of it in mess/ or
    tmp/; one folder's fails the messages renamed into it; the rest of the batch is stored."""
    real = AioFsync.sync
    failed: list[str] = []

    def one_fails(self: AioFsync, fds: Any) -> Any:
        outcomes = real(self, fds)  # every fsync really done
        folders = os.path.isdir(f"/proc/self/fd/{fds[0]}")
        if not failed and folders == (what == "folder"):
            failed.append(os.readlink(f"/proc/self/fd/{fds[3]}"))
            outcomes[3] = OSError(errno.EIO, os.strerror(errno.EIO))
        return outcomes
    monkeypatch.setattr(AioFsync, "sync", one_fails)
    spool = Spool(tmp_path / "spool")
    spool.ensure()
    try:
        later, outcomes = await _batch(spool)
        assert failed, "no batch fsync through AIO"
        lost = {q for q, o in zip(later, outcomes, strict=True) if isinstance(o, SpoolError)}
        assert all(isinstance(o, Envelope | SpoolError) for o in outcomes)
        if what == "file":
            assert len(lost) == 1
        else:  # every message of that folder, and only those
            bucket = os.path.basename(str(failed[0]))
            assert lost == {q for q in later if spool.relpath(q).split("/")[-2] == bucket}
        assert "Input/output error" in str(next(o for o in outcomes
                                                if isinstance(o, SpoolError)))
        committed = set(spool.iter_committed())
        assert {spool.relpath(q) for q in later if q not in lost} <= committed
        assert not {spool.relpath(q) for q in lost} & committed
        assert list(spool.tmp.iterdir()) == []
    finally:
        spool.close()
