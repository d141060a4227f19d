"""The spool on the shared volume: the source of truth for message bytes.

One file per message, `mess/<bucket>/<queue-id>`, holding a small header, the Envelope and
the message bytes. Its rename into place is the single commit point (qmail's rule): write
to `tmp/`, fsync the file, rename, fsync the directory. A file under `mess/` is committed;
anything under `tmp/` is not and may be removed by the reconciler when old.

All disk work runs in a thread pool of its own so the event loop never waits on fsync, and
enough fsyncs run at once for the filesystem to fold them into shared journal commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import struct
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mailyard.api.mail.v1.envelope_pb2 import Envelope
from mailyard.core.errors import ChecksumMismatch, SpoolError

MAGIC = b"MYSPOOL1"
_HEADER = struct.Struct(">8sI")  # magic, envelope length
_DIR_MODE = 0o700
_FILE_MODE = 0o600


def bucket_of(queue_id: str) -> str:
    """Two random characters of the id: 1,024 directories, none of them huge."""
    return queue_id[-2:]


class Spool:
    def __init__(self, root: Path | str, *, threads: int = 32) -> None:
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        self.mess = self.root / "mess"
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="spool")
        self._made: set[Path] = set()

    # -- setup and paths ---------------------------------------------------------------

    def ensure(self) -> None:
        for path in (self.root, self.tmp, self.mess):
            path.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)

    def relpath(self, queue_id: str) -> str:
        return f"mess/{bucket_of(queue_id)}/{queue_id}"

    def path(self, spool_path: str) -> Path:
        resolved = (self.root / spool_path).resolve()
        if self.mess.resolve() not in resolved.parents:
            raise SpoolError(f"spool path outside the spool: {spool_path!r}")
        return resolved

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    async def _run(self, fn, *args):  # type: ignore[no-untyped-def]
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # -- commit ------------------------------------------------------------------------

    async def commit(self, envelope: Envelope, data: bytes) -> Envelope:
        """Durably store `data` under envelope.queue_id; return the envelope as stored
        (spool_path, size and sha256 filled in). Raises SpoolError and leaves nothing."""
        stored = Envelope()
        stored.CopyFrom(envelope)
        stored.spool_path = self.relpath(envelope.queue_id)
        stored.size = len(data)
        stored.sha256 = hashlib.sha256(data).hexdigest()
        await self._run(self._commit_sync, stored, data)
        return stored

    def _commit_sync(self, envelope: Envelope, data: bytes) -> None:
        qid = envelope.queue_id
        final = self.root / envelope.spool_path
        tmp = self.tmp / f"{qid}.{os.getpid()}"
        header = envelope.SerializeToString()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
            try:
                with memoryview(data) as view:
                    _write_all(fd, _HEADER.pack(MAGIC, len(header)) + header)
                    _write_all(fd, view)
                os.fsync(fd)
            finally:
                os.close(fd)
            folder = final.parent
            if folder not in self._made:
                folder.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
                self._made.add(folder)
            os.rename(tmp, final)
            _fsync_dir(folder)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise SpoolError(f"spool commit failed: {exc.strerror or exc}", queue_id=qid) from exc

    # -- read --------------------------------------------------------------------------

    async def read(self, spool_path: str, *, verify: bool = True) -> tuple[Envelope, bytes]:
        return await self._run(self.read_sync, spool_path, verify)

    def read_sync(self, spool_path: str, verify: bool = True) -> tuple[Envelope, bytes]:
        try:
            raw = self.path(spool_path).read_bytes()
        except OSError as exc:
            raise SpoolError(f"cannot read {spool_path}: {exc.strerror or exc}") from exc
        return decode(raw, spool_path, verify=verify)

    async def exists(self, spool_path: str) -> bool:
        return await self._run(lambda: self.path(spool_path).exists())

    # -- remove ------------------------------------------------------------------------

    async def remove(self, spool_path: str) -> bool:
        """Remove a committed message (every recipient is final). False if already gone."""
        return bool(await self._run(self._remove_sync, spool_path))

    def _remove_sync(self, spool_path: str) -> bool:
        path = self.path(spool_path)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        _fsync_dir(path.parent)
        return True

    # -- scanning (reconciler) ---------------------------------------------------------

    def iter_committed(self) -> Iterator[str]:
        """Spool paths of every committed message, in no particular order."""
        if not self.mess.exists():
            return
        for bucket in os.scandir(self.mess):
            if bucket.is_dir():
                for entry in os.scandir(bucket.path):
                    if entry.is_file():
                        yield f"mess/{bucket.name}/{entry.name}"

    def stale_temporaries(self, older_than: float) -> list[Path]:
        """Uncommitted leftovers of crashed writers (never part of any promise)."""
        cutoff = time.time() - older_than
        if not self.tmp.exists():
            return []
        return [Path(e.path) for e in os.scandir(self.tmp)
                if e.is_file() and e.stat().st_mtime < cutoff]


def decode(raw: bytes, spool_path: str = "", *, verify: bool = True) -> tuple[Envelope, bytes]:
    if len(raw) < _HEADER.size:
        raise SpoolError(f"truncated spool file {spool_path}")
    magic, length = _HEADER.unpack_from(raw)
    if magic != MAGIC or _HEADER.size + length > len(raw):
        raise SpoolError(f"not a spool file: {spool_path}")
    envelope = Envelope.FromString(raw[_HEADER.size:_HEADER.size + length])
    data = raw[_HEADER.size + length:]
    if verify and hashlib.sha256(data).hexdigest() != envelope.sha256:
        raise ChecksumMismatch(f"checksum mismatch in {spool_path}", queue_id=envelope.queue_id)
    return envelope, data


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
