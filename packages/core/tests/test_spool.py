from __future__ import annotations

import os
import stat

import pytest

from mailyard.api.mail.v1.envelope_pb2 import Envelope
from mailyard.core.errors import ChecksumMismatch, SpoolError
from mailyard.core.ids import is_queue_id, new_queue_id, queue_id_time
from mailyard.core.spool import Spool


def test_queue_ids_sort_by_time_and_are_unique() -> None:
    a, b = new_queue_id(1000.0), new_queue_id(2000.0)
    assert is_queue_id(a) and is_queue_id(b)
    assert a < b
    assert queue_id_time(a) == 1000.0
    assert len({new_queue_id() for _ in range(10_000)}) == 10_000


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


async def test_checksum_mismatch_is_detected(spool: Spool) -> None:
    stored = await spool.commit(Envelope(queue_id=new_queue_id()), b"hello\r\n")
    path = spool.root / stored.spool_path
    raw = path.read_bytes()
    path.write_bytes(raw[:-3] + b"XX\n")
    with pytest.raises(ChecksumMismatch):
        await spool.read(stored.spool_path)


async def test_failed_commit_leaves_nothing(spool: Spool) -> None:
    qid = new_queue_id()
    os.chmod(spool.mess, 0o500)  # the rename target cannot be created
    try:
        if os.geteuid() == 0:  # root ignores modes: make the bucket a file instead
            os.chmod(spool.mess, 0o700)
            (spool.mess / qid[-2:]).write_text("not a dir")
        with pytest.raises(SpoolError):
            await spool.commit(Envelope(queue_id=qid), b"x")
    finally:
        os.chmod(spool.mess, 0o700)
    assert list(spool.tmp.iterdir()) == []
    assert list(spool.iter_committed()) == []


async def test_paths_outside_the_spool_are_refused(spool: Spool) -> None:
    with pytest.raises(SpoolError):
        await spool.read("../../etc/passwd")
