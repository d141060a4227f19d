from __future__ import annotations

import asyncio
import stat

import pytest

from mailyard.api.mail.v1.envelope_pb2 import Envelope
from mailyard.core.errors import ChecksumMismatch, SpoolError
from mailyard.core.ids import derived_queue_id, is_queue_id, new_queue_id, queue_id_time
from mailyard.core.spool import Spool, bucket_of


def test_queue_ids_sort_by_time_and_are_unique() -> None:
    a, b = new_queue_id(1000.0), new_queue_id(2000.0)
    assert is_queue_id(a) and is_queue_id(b)
    assert not is_queue_id(a + "\n") and not is_queue_id(a[:-1])
    assert a < b
    assert queue_id_time(a) == 1000.0
    assert len({new_queue_id() for _ in range(10_000)}) == 10_000


def test_derived_queue_ids_repeat_for_the_same_names_only() -> None:
    base = new_queue_id(1000.0)
    one = derived_queue_id(base, "team@example.org", "list", "0")
    assert is_queue_id(one) and queue_id_time(one) == 1000.0 and bucket_of(one)
    assert derived_queue_id(base, "team@example.org", "list", "0") == one
    others = {derived_queue_id(base, "team@example.org", "list", str(n)) for n in range(1000)}
    others |= {derived_queue_id(new_queue_id(), "team@example.org", "list", "0")}
    assert len(others) == 1001
    assert is_queue_id(derived_queue_id("not-a-ulid", "x"))
    assert derived_queue_id("not-a-ulid", "x") == derived_queue_id("not-a-ulid", "x")
    # the queue's job ids, <queue id>-<seq>: the time is the message's, and repeats
    job = f"{base}-3"
    assert derived_queue_id(job, "a") == derived_queue_id(job, "a") != derived_queue_id(
        f"{base}-4", "a")
    assert queue_id_time(derived_queue_id(job, "a")) == 1000.0


async def test_commit_read_remove_roundtrip(spool: Spool) -> None:
    body = b"Subject: x\r\n\r\n.leading dot\r\nbody\x00\r\n"
    stored = await spool.commit(Envelope(queue_id=new_queue_id(), sender="a@b"), body)
    assert stored.size == len(body) and len(stored.sha256) == 64
    path = spool.root / stored.spool_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not list(spool.tmp.iterdir())
    env, data = await spool.read(stored.spool_path)
    assert data == body and env.sender == "a@b" and env.queue_id == stored.queue_id
    assert list(spool.iter_committed()) == [stored.spool_path]
    assert await spool.remove(stored.spool_path)
    assert not await spool.remove(stored.spool_path)
    assert list(spool.iter_committed()) == []


async def test_a_small_message_is_read_on_the_callers_thread(spool: Spool) -> None:
    body = b"Subject: x\r\n\r\nbody\r\n"
    stored = await spool.commit(Envelope(queue_id=new_queue_id()), body)
    spool._pool.shutdown(wait=True)  # only a read on the caller's thread can answer now
    _, data = await spool.read(stored.spool_path, size=stored.size, inline_max=stored.size)
    assert data == body
    for size, inline_max in ((stored.size, stored.size - 1), (stored.size, 0), (0, 65536)):
        with pytest.raises(RuntimeError):  # past the bound, off, or the size unknown: pool
            await spool.read(stored.spool_path, size=size, inline_max=inline_max)


async def test_checksum_mismatch_is_detected(spool: Spool) -> None:
    stored = await spool.commit(Envelope(queue_id=new_queue_id()), b"hello\r\n")
    path = spool.root / stored.spool_path
    raw = path.read_bytes()
    path.write_bytes(raw[:-3] + b"XX\n")
    with pytest.raises(ChecksumMismatch):
        await spool.read(stored.spool_path)


async def test_failed_commit_leaves_nothing(spool: Spool) -> None:
    qid = new_queue_id()
    bucket = spool.mess / qid[-2:]
    bucket.rmdir()
    bucket.write_text("not a dir")  # the rename target cannot be created (root or not)
    with pytest.raises(SpoolError):
        await spool.commit(Envelope(queue_id=qid), b"x")
    assert list(spool.tmp.iterdir()) == []
    assert list(spool.iter_committed()) == []


def test_every_bucket_exists_before_the_first_commit(spool: Spool) -> None:
    buckets = {p.name for p in spool.mess.iterdir() if p.is_dir()}
    assert len(buckets) == 1024
    assert all(bucket_of(new_queue_id()) in buckets for _ in range(1000))


async def test_paths_outside_the_spool_are_refused(spool: Spool) -> None:
    with pytest.raises(SpoolError):
        await spool.read("../../etc/passwd")


async def test_a_failed_message_does_not_fail_its_batch(spool: Spool) -> None:
    """Concurrent commits share a batch; each keeps its own outcome."""
    bad = new_queue_id()
    (spool.mess / bad[-2:]).rmdir()
    (spool.mess / bad[-2:]).write_text("not a dir")  # only this message's bucket is broken
    good = [new_queue_id() for _ in range(20)]
    good = [q for q in good if q[-2:] != bad[-2:]]
    results = await asyncio.gather(
        *(spool.commit(Envelope(queue_id=q), f"body {q}".encode()) for q in [*good, bad]),
        return_exceptions=True)
    assert isinstance(results[-1], SpoolError)
    assert all(isinstance(r, Envelope) for r in results[:-1])
    assert sorted(spool.iter_committed()) == sorted(spool.relpath(q) for q in good)
    assert list(spool.tmp.iterdir()) == []
    for q in good:
        _, data = await spool.read(spool.relpath(q))
        assert data == f"body {q}".encode()


async def test_commits_arriving_during_a_batch_form_the_next_one(spool: Spool) -> None:
    first = asyncio.ensure_future(spool.commit(Envelope(queue_id=new_queue_id()), b"1"))
    await asyncio.sleep(0)  # the first batch is in the writer thread now
    later = [new_queue_id() for _ in range(30)]
    stored = await asyncio.gather(first, *(spool.commit(Envelope(queue_id=q), b"2")
                                           for q in later))
    assert len(set(spool.iter_committed())) == 31 == len(stored)


def test_plain_and_tricky_paths(spool: Spool) -> None:
    qid = new_queue_id()
    assert spool.path(spool.relpath(qid)) == spool.root / "mess" / qid[-2:] / qid
    for bad in ("mess/../../etc/passwd", "mess/ab/../../../x", "/etc/passwd", "tmp/x"):
        with pytest.raises(SpoolError):
            spool.path(bad)


async def test_commit_with_a_spill_file_tail(spool: Spool) -> None:
    """A message streamed into a spill file: committed as data + the file's bytes, with
    the checksum of both, through the same batch (and recycled files) as any commit."""
    import os

    fd = await spool.spill_file()
    try:
        assert not list(spool.tmp.iterdir())  # unnamed: nothing to clean up after a crash
        chunks = [os.urandom(300_000) for _ in range(4)]
        for chunk in chunks:
            await spool.spill(fd, chunk)
        await spool.spill(fd, b"not part of the message")
        size = sum(map(len, chunks))
        assert await spool.read_spill(fd, size) == b"".join(chunks)
        prefix = b"Received: by us\r\n"
        first = await spool.commit(Envelope(queue_id=new_queue_id()), prefix, (fd, 0, size))
        assert await spool.remove(first.spool_path)  # parked in free/, reused below
        stored = await spool.commit(Envelope(queue_id=new_queue_id()), prefix, (fd, 7, size - 7))
    finally:
        os.close(fd)
    env, data = await spool.read(stored.spool_path)  # verifies the checksum
    assert data == prefix + b"".join(chunks)[7:]
    assert env.size == len(data) == stored.size
    assert not list(spool.tmp.iterdir())
