"""core.fsync_batch: concurrent fsyncs go to the pool together, each caller hears its own."""

from __future__ import annotations

import asyncio
import errno
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mailyard.core.fsync_batch import FsyncBatch


def _files(folder: Path, count: int) -> list[int]:
    fds = []
    for i in range(count):
        fd = os.open(folder / f"f{i}", os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"x" * 100)
        fds.append(fd)
    return fds


async def test_fsyncs_asked_together_take_one_trip_to_the_pool(tmp_path: Path) -> None:
    fds = _files(tmp_path, 8)
    with ThreadPoolExecutor(2) as pool:
        batch = FsyncBatch(pool)
        await asyncio.gather(*(batch.fsync(fd) for fd in fds))
        assert batch.rounds == 1
        await batch.fsync(fds[0])  # alone later: a trip of its own
        assert batch.rounds == 2
        batch.close()
    for fd in fds:
        os.close(fd)


async def test_those_asked_meanwhile_go_in_the_next_trip(tmp_path: Path) -> None:
    fds = _files(tmp_path, 6)
    with ThreadPoolExecutor(2) as pool:
        batch = FsyncBatch(pool)
        first = asyncio.gather(*(batch.fsync(fd) for fd in fds[:3]))
        await asyncio.sleep(0)  # the first trip has left
        rest = asyncio.gather(*(batch.fsync(fd) for fd in fds[3:]))
        await asyncio.gather(first, rest)
        assert batch.rounds == 2
        batch.close()
    for fd in fds:
        os.close(fd)


@pytest.mark.parametrize("together", [1, 4])
async def test_a_failed_fsync_reaches_its_caller_alone(tmp_path: Path, together: int) -> None:
    """A closed descriptor fails (EBADF) for the one who asked; the others are synced."""
    fds = _files(tmp_path, together)
    bad = os.open(tmp_path / "gone", os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(bad)
    with ThreadPoolExecutor(2) as pool:
        batch = FsyncBatch(pool)
        outcomes = await asyncio.gather(batch.fsync(bad), *(batch.fsync(fd) for fd in fds),
                                        return_exceptions=True)
        batch.close()
    assert isinstance(outcomes[0], OSError) and outcomes[0].errno == errno.EBADF
    assert outcomes[1:] == [None] * together
    for fd in fds:
        os.close(fd)


async def test_after_the_pool_is_shut_down_a_caller_hears_so(tmp_path: Path) -> None:
    [fd] = _files(tmp_path, 1)
    pool = ThreadPoolExecutor(1)
    batch = FsyncBatch(pool)
    pool.shutdown()
    with pytest.raises(OSError, match="cannot fsync"):
        await asyncio.wait_for(batch.fsync(fd), 5)
    os.close(fd)
