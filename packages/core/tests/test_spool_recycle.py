"""Removed spool files are parked in free/ (emptied first when bigger than KEEP) and written
over by the next commit (no inode allocation on the commit path), within a bound, and never
handed to two writers."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from mailyard.api.mail.v1.envelope_pb2 import Envelope
from mailyard.core.errors import SpoolError
from mailyard.core.ids import new_queue_id
from mailyard.core.spool import KEEP, Spool


def parked(spool: Spool) -> list[Path]:
    return sorted(p for p in spool.free.iterdir() if not p.name.startswith("."))


async def test_a_removed_file_is_parked_and_written_over_by_the_next_commit(spool: Spool) -> None:
    """A file within KEEP is parked as it is and the next commit writes over it: what the
    longer old message leaves beyond the new one's end is cut off."""
    old = await spool.commit(Envelope(queue_id=new_queue_id()), b"x" * 20_000)
    inode = (spool.root / old.spool_path).stat().st_ino
    assert await spool.remove(old.spool_path)
    assert list(spool.iter_committed()) == []
    (free,) = parked(spool)
    assert free.stat().st_ino == inode
    new = await spool.commit(Envelope(queue_id=new_queue_id(), sender="b@c"), b"short\r\n")
    path = spool.root / new.spool_path
    assert path.stat().st_ino == inode and parked(spool) == []
    assert path.stat().st_mode & 0o777 == 0o600
    env, data = await spool.read(new.spool_path)
    assert data == b"short\r\n" and env.sender == "b@c"
    assert b"xxxx" not in path.read_bytes()  # nothing of the old mail left in it
    assert not await spool.remove(old.spool_path)  # gone stays gone


async def test_a_reused_file_takes_a_longer_message_and_a_spilled_one_whole(spool: Spool) -> None:
    first = await spool.commit(Envelope(queue_id=new_queue_id()), b"a" * 100)
    await spool.remove(first.spool_path)
    longer = await spool.commit(Envelope(queue_id=new_queue_id()), b"b" * 5000)
    assert (await spool.read(longer.spool_path))[1] == b"b" * 5000
    await spool.remove(longer.spool_path)
    fd = await spool.spill_file()
    try:
        await spool.spill(fd, b"tail" * 500)
        spilled = await spool.commit(Envelope(queue_id=new_queue_id()), b"head",
                                     tail=(fd, 0, 2000))
    finally:
        os.close(fd)
    path = spool.root / spilled.spool_path
    assert (await spool.read(spilled.spool_path))[1] == b"head" + b"tail" * 500
    assert b"b" * 100 not in path.read_bytes()


async def test_a_file_bigger_than_keep_is_emptied_before_it_is_parked(spool: Spool) -> None:
    """free/ holds at most recycle x KEEP bytes of old mail."""
    big = await spool.commit(Envelope(queue_id=new_queue_id()), b"y" * (KEEP + 1))
    small = await spool.commit(Envelope(queue_id=new_queue_id()), b"z" * 1000)
    assert await spool.remove_many([big.spool_path, small.spool_path]) == [True, True]
    sizes = sorted(p.stat().st_size for p in parked(spool))
    assert sizes[0] == 0 and 1000 < sizes[1] <= KEEP


async def test_parking_is_bounded_and_can_be_turned_off(tmp_path: Path) -> None:
    for limit, expected in ((2, 2), (0, 0)):
        spool = Spool(tmp_path / f"spool{limit}", recycle=limit)
        spool.ensure()
        stored = [await spool.commit(Envelope(queue_id=new_queue_id()), b"m") for _ in range(5)]
        outcomes = await spool.remove_many([s.spool_path for s in stored])
        assert outcomes == [True] * 5
        assert list(spool.iter_committed()) == []
        assert len(parked(spool)) == expected
        spool.close()


async def test_two_writers_never_get_the_same_file(tmp_path: Path) -> None:
    """Two spools on one folder (two processes on the shared volume) claim at once from
    the same parked files in their own writer threads: every message gets a file of its
    own, whole."""
    root = tmp_path / "spool"
    first, second = Spool(root), Spool(root)
    first.ensure()
    seed = [await first.commit(Envelope(queue_id=new_queue_id()), b"seed") for _ in range(60)]
    await first.remove_many([s.spool_path for s in seed])
    assert len(parked(first)) == 60

    async def commit(spool: Spool, n: int) -> Envelope:
        return await spool.commit(Envelope(queue_id=new_queue_id()), f"body {n}".encode() * n)

    stored = await asyncio.gather(*(commit(first if n % 2 else second, n) for n in range(100)))
    inodes = {(root / s.spool_path).stat().st_ino for s in stored}
    assert len(inodes) == 100
    assert len(parked(first)) == 0  # 60 reused, 40 made
    for n, s in enumerate(stored):
        _, data = await first.read(s.spool_path)
        assert data == f"body {n}".encode() * n
    assert list(first.tmp.iterdir()) == []
    first.close()
    second.close()


async def test_remove_many_gives_each_message_its_outcome(spool: Spool) -> None:
    here = await spool.commit(Envelope(queue_id=new_queue_id()), b"a")
    gone = spool.relpath(new_queue_id())
    out = await spool.remove_many([here.spool_path, gone, "../../etc/passwd"])
    assert out[:2] == [True, False] and isinstance(out[2], SpoolError)


async def test_junk_in_free_is_never_written_through(spool: Spool, tmp_path: Path) -> None:
    """Only plain files are claimed: a symlink or folder put into free/ is left alone."""
    target = tmp_path / "elsewhere"
    target.write_bytes(b"keep me")
    os.symlink(target, spool.free / "link")
    (spool.free / "folder").mkdir()
    stored = await spool.commit(Envelope(queue_id=new_queue_id()), b"mail")
    assert target.read_bytes() == b"keep me"
    assert (await spool.read(stored.spool_path))[1] == b"mail"


async def test_interrupted_parking_is_cleaned_as_a_stale_temporary(spool: Spool) -> None:
    (spool.free / ".halfway").write_bytes(b"x")   # a remover died between its two renames
    (spool.free / "parked").write_bytes(b"")
    (spool.tmp / "crashed.1").write_bytes(b"x")
    stale = {p.name for p in spool.stale_temporaries(older_than=-60)}
    assert stale == {".halfway", "crashed.1"}


def test_reserve_tops_free_up_and_never_past_recycle(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", recycle=10)
    spool.ensure()
    (spool.free / "parked").write_bytes(b"")      # one there already
    (spool.free / ".halfway").write_bytes(b"x")   # a dot name is not a parked file
    assert spool.reserve(4) == 3
    assert len(parked(spool)) == 4
    assert all(p.stat().st_size == 0 and p.stat().st_mode & 0o777 == 0o600
               for p in parked(spool) if p.name != "parked")
    assert spool.reserve(4) == 0                  # full: nothing more
    assert spool.reserve(50) == 6 and len(parked(spool)) == 10  # bounded by recycle
    assert spool.reserve(0) == 0
    spool.close()


async def test_commits_take_the_reserve_instead_of_making_files(spool: Spool) -> None:
    spool.reserve(3)
    inodes = {p.stat().st_ino for p in parked(spool)}
    stored = [await spool.commit(Envelope(queue_id=new_queue_id()), b"m%d" % i)
              for i in range(3)]
    assert {(spool.root / s.spool_path).stat().st_ino for s in stored} == inodes
    assert parked(spool) == []
    assert [(await spool.read(s.spool_path))[1] for s in stored] == [b"m0", b"m1", b"m2"]


def test_replicas_starting_together_make_the_reserve_once(tmp_path: Path) -> None:
    """Four processes' reserve() at the same moment (a barrier): the lock on free/ has
    each count what the ones before made."""
    import multiprocessing

    root = tmp_path / "spool"
    Spool(root).ensure()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        barrier, made = manager.Barrier(4), manager.list()
        procs = [ctx.Process(target=_reserve_in_a_process, args=(str(root), barrier, made))
                 for _ in range(4)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(60)
        assert [proc.exitcode for proc in procs] == [0] * 4
        assert sum(made) == 300
    assert len(list((root / "free").iterdir())) == 300


def _reserve_in_a_process(root: str, barrier: Any, made: Any) -> None:
    spool = Spool(root)
    try:
        barrier.wait(30)
        made.append(spool.reserve(300))
    finally:
        spool.close()
