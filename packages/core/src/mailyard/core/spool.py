"""The spool on the shared volume: the source of truth for message bytes.

One file per message, `mess/<bucket>/<queue-id>`, holding a small header, the Envelope and
the message bytes. Its rename into place is the single commit point (qmail's rule): write
to `tmp/`, fsync the file, rename, fsync the directory. A file under `mess/` is committed;
anything under `tmp/` is not and may be removed by the reconciler when old.

All disk work runs in a thread pool of its own so the event loop never waits on fsync.
Commits are grouped: while one batch is being written, new commits queue up and go out
together as the next batch (no added delay when idle). A batch writes every file, fsyncs
them all at once (fsyncs issued together share journal commits; one after another they
would not), renames them, and fsyncs each directory once: one loop-to-thread hand-off per
batch instead of per message. Each message keeps its own outcome: one failed file fails
only its own commit. "At once" is one io_submit of Linux AIO fsyncs from the writer thread
(core.aiofsync) where the kernel has them, else a thread per fsync (core.fanout): a thread
each cost smtp-ingress more in wake-ups and GIL hand-offs than the fsyncs themselves.

Removed messages are recycled, not unlinked: parked in `free/`, and the next commit renames
one back into `tmp/` and writes over it instead of creating a file. On ext4 without a journal
(common on VM and container volumes) the kernel will not reuse an inode deleted in the last
one to five minutes, and every create scans past all of them: measured here, creating a
file went from 16 us to 450 us after a few thousand deletions, and smtp-ingress's CPU per
message doubled. A recycled file needs no inode allocation at all. At most `recycle` files
are parked (0 turns it off). A file of up to KEEP bytes is parked as it is and written over
(emptying it at removal and filling it again at the commit had the file system free its
blocks and allocate them again, and with `discard` in the mount options send each free to
the disk: half the spool's cost per message on the benchmark machine); a bigger one is emptied
first, so free/ holds at most recycle x KEEP bytes (128 MiB) of mail already delivered,
readable only by the spool's owner, as the queue itself is. smtp-ingress parks a reserve of
empty files as it starts (reserve()), so a new spool does not allocate an inode per commit
until the first removals come back.

A large message need not be held in memory: its writer streams it into a spill file (an
unnamed O_TMPFILE on the spool's file system, gone by itself when closed or on a crash)
and commits with `tail=`: the committed file is then the header, `data`, and a range of
the spill file's bytes, copied by the kernel (copy_file_range) in the writer thread; its checksum is
computed in the pool beforehand. Same commit point, same batch, same recycled files.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import os
import re
import secrets
import struct
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mailyard.api.mail.v1.envelope_pb2 import Envelope
from mailyard.core import aiofsync
from mailyard.core.errors import ChecksumMismatch, SpoolError
from mailyard.core.fanout import Fanout
from mailyard.core.ids import ALPHABET

MAGIC = b"MYSPOOL1"
_HEADER = struct.Struct(">8sI")  # magic, envelope length
_PLAIN_PATH = re.compile(r"mess/[0-9A-Za-z]{2}/[0-9A-Za-z]{1,64}")
_DIR_MODE = 0o700
_FILE_MODE = 0o600
RECYCLE = 4096          # removed files kept in free/ for reuse
RESERVE = 2048          # empty files smtp-ingress keeps parked in free/ at its start
KEEP = 32768            # bytes a parked file may keep (bigger ones are emptied first)
_LIST_AGAIN = 1.0       # seconds before a (nearly) empty free/ is listed again
_FEW = 32               # a listing with fewer parked files than this is "nearly empty"
_RECOUNT = 10.0         # seconds between counts of free/ (other processes take from it)
_RECOUNT_FULL = 0.5     # ... and while it looks full


@dataclass
class _Pending:
    """One message of a commit batch; error set by the writer thread if it failed."""

    envelope: Envelope
    data: bytes
    waiter: asyncio.Future[None]
    tail: tuple[int, int, int] = (-1, 0, 0)  # (spill file fd, offset, bytes) after data
    error: SpoolError | None = None
    tmp: str = ""
    fd: int = -1
    reused: bool = False  # a parked file, written over (may be longer than this message)


def bucket_of(queue_id: str) -> str:
    """Two random characters of the id: 1,024 directories, none of them huge."""
    return queue_id[-2:]


class Spool:
    def __init__(self, root: Path | str, *, threads: int = 32, recycle: int = RECYCLE) -> None:
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        self.mess = self.root / "mess"
        self.free = self.root / "free"
        self.recycle = recycle
        # the commit path joins strings: pathlib's joins and conversions were 5 % of
        # smtp-ingress's busy time
        self._root = str(self.root)
        self._tmp = str(self.tmp)
        self._free = str(self.free)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="spool")
        self._syncers = Fanout(threads, "fsync")
        # the commit batch's fsyncs, where Linux AIO can; opened at the first batch that
        # needs it (a context takes from the machine's fs.aio-max-nr)
        self._aio = aiofsync.Lazy()
        self._made: set[str] = set()  # bucket folders known to exist
        self._queued: list[_Pending] = []   # commits waiting for the next batch
        self._writing = False               # a batch is in the writer thread
        self._spare: list[str] = []         # names last seen in free/ (writer thread only)
        self._scarce_at = 0.0               # when free/ was last found (nearly) empty
        self._parked = 0                    # files in free/: last count plus ours since
        self._counted = -_RECOUNT
        self._parking = threading.Lock()

    # -- setup and paths ---------------------------------------------------------------

    def ensure(self) -> None:
        """The folders, all 1,024 buckets included (qmail makes its split directories at
        install time too): no mkdir on the commit path, and every new directory entry is
        made durable before a message is committed under it."""
        for path in (self.root, self.tmp, self.mess, self.free):
            path.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        made = False
        for bucket in (a + b for a in ALPHABET for b in ALPHABET):
            folder = self.mess / bucket
            if (name := str(folder)) not in self._made:
                if not folder.is_dir():
                    folder.mkdir(mode=_DIR_MODE, exist_ok=True)
                    made = True
                self._made.add(name)
        if made:
            _fsync_dir(self.mess)
            _fsync_dir(self.root)

    def reserve(self, count: int) -> int:
        """Top free/ up to `count` empty parked files (at most recycle) as a committing
        process starts; returns how many it made. A new spool (or one a backlog emptied)
        would otherwise allocate an inode per commit until removals catch up (see the
        module's docstring; in the mixed benchmark a fifth of smtp-ingress's CPU). The lock
        on free/ keeps replicas starting together from each making `count`."""
        if count <= 0:  # SPOOL_RESERVE=0: not even a look at free/
            return 0
        folder = os.open(self._free, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(folder, fcntl.LOCK_EX)
            with os.scandir(folder) as entries:
                have = sum(1 for e in entries if not e.name.startswith("."))
            missing = max(0, min(count, self.recycle) - have)
            stem = secrets.token_hex(6)
            for n in range(missing):
                os.close(os.open(f"{stem}{n:04x}", os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                                 _FILE_MODE, dir_fd=folder))
            if missing:
                os.fsync(folder)
            return missing
        finally:
            os.close(folder)  # the lock goes with it

    def relpath(self, queue_id: str) -> str:
        return f"mess/{bucket_of(queue_id)}/{queue_id}"

    def path(self, spool_path: str) -> Path:
        if _PLAIN_PATH.fullmatch(spool_path):  # what relpath() makes: nothing to resolve
            return self.root / spool_path
        resolved = (self.root / spool_path).resolve()
        if self.mess.resolve() not in resolved.parents:
            raise SpoolError(f"spool path outside the spool: {spool_path!r}")
        return resolved

    def file(self, spool_path: str) -> str:
        """path() as a string, joined without pathlib for what relpath() makes (the
        commit, removal and lookup paths: pathlib's joins cost more than the syscalls)."""
        if _PLAIN_PATH.fullmatch(spool_path):
            return f"{self._root}/{spool_path}"
        return str(self.path(spool_path))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._syncers.close()
        self._aio.close()

    async def _run(self, fn, *args):  # type: ignore[no-untyped-def]
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # -- commit ------------------------------------------------------------------------

    async def commit(self, envelope: Envelope, data: bytes,
                     tail: tuple[int, int, int] | None = None) -> Envelope:
        """Durably store `data` (followed by tail[2] bytes from offset tail[1] of the spill
        file tail[0], if given) under envelope.queue_id; return the envelope as stored
        (spool_path, size and sha256 filled in). Raises SpoolError and leaves nothing.
        The spill file stays the caller's to close."""
        stored = Envelope()
        stored.CopyFrom(envelope)
        stored.spool_path = self.relpath(envelope.queue_id)
        if tail is None:
            stored.size = len(data)
            stored.sha256 = hashlib.sha256(data).hexdigest()
        else:
            stored.size = len(data) + tail[2]
            try:
                stored.sha256 = await self._run(_checksum, data, *tail)
            except OSError as exc:
                raise SpoolError(f"spill file unreadable: {exc.strerror or exc}",
                                 queue_id=envelope.queue_id) from exc
        loop = asyncio.get_running_loop()
        item = _Pending(stored, data, loop.create_future(), tail or (-1, 0, 0))
        self._queued.append(item)
        if not self._writing:
            self._start_batch(loop)
        await asyncio.shield(item.waiter)  # a cancelled caller must not unhook the batch
        return stored

    # -- spill files (a message being received) -----------------------------------------

    async def spill_file(self) -> int:
        """A new, empty, unnamed file on the spool's file system for a message being
        received; the caller closes it. Raises SpoolError."""
        try:
            return int(await self._run(self._open_spill))
        except OSError as exc:
            raise SpoolError(f"cannot make a spill file: {exc.strerror or exc}") from exc

    def _open_spill(self) -> int:
        try:
            return os.open(self.tmp, os.O_TMPFILE | os.O_RDWR, _FILE_MODE)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
        # no O_TMPFILE on this file system: a named file, unlinked at once
        path = self.tmp / f".spill.{os.getpid()}.{threading.get_ident()}.{time.monotonic_ns()}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, _FILE_MODE)
        os.unlink(path)
        return fd

    async def spill(self, fd: int, data: bytes) -> None:
        """Append `data` to a spill file (in the pool: a slow disk never stalls the loop)."""
        try:
            await self._run(_write_all, fd, data)
        except OSError as exc:
            raise SpoolError(f"cannot write a spill file: {exc.strerror or exc}") from exc

    async def read_spill(self, fd: int, size: int) -> bytes:
        """The first `size` bytes of a spill file."""
        try:
            return bytes(await self._run(_pread_all, fd, size))
        except OSError as exc:
            raise SpoolError(f"cannot read a spill file: {exc.strerror or exc}") from exc

    def _start_batch(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._queued = self._queued, []
        self._writing = True

        def finished(_: Future[None]) -> None:
            try:
                loop.call_soon_threadsafe(self._finish_batch, loop, batch)
            except RuntimeError:  # the loop is gone (shutdown): nobody is waiting
                self._writing = False

        self._pool.submit(self._commit_batch, batch).add_done_callback(finished)

    def _finish_batch(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        for item in batch:
            if item.waiter.done():
                continue
            if item.error is not None:
                item.waiter.set_exception(item.error)
            else:
                item.waiter.set_result(None)
        self._writing = False
        if self._queued:
            self._start_batch(loop)

    def _commit_batch(self, batch: list[_Pending]) -> None:
        """Writer thread: never raises, every item ends with error set or committed."""
        try:
            live = [item for item in batch if self._write_tmp(item)]
            # fsyncs at once, not one after another: the journal folds them together
            if not self._fsync_at_once(live):
                self._syncers.each(lambda it: self._step(it, _fsync_file), live)
            folders: dict[str, list[_Pending]] = {}
            for item in live:
                if item.error is None and self._step(item, self._rename):
                    folders.setdefault(os.path.dirname(self._final(item)), []).append(item)
            if not self._fsync_folders_at_once(folders):
                self._syncers.each(self._sync_folder, list(folders.items()))
        except BaseException as exc:  # a bug must not leave callers waiting forever
            for item in batch:
                if item.error is None:
                    item.error = SpoolError(f"spool commit failed: {exc}",
                                            queue_id=item.envelope.queue_id)
        finally:
            for item in batch:
                if item.fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(item.fd)

    def _fsync_at_once(self, live: list[_Pending]) -> bool:
        outcomes = self._aio.sync([item.fd for item in live])
        if outcomes is None:
            return False
        for item, outcome in zip(live, outcomes, strict=True):
            if outcome is not None:
                self._fail(item, outcome)
        return True

    def _fsync_folders_at_once(self, folders: dict[str, list[_Pending]]) -> bool:
        if self._aio.refused or len(folders) < 2:
            return False
        opened: list[tuple[int, list[_Pending]]] = []
        try:
            for folder, items in folders.items():
                try:
                    opened.append((os.open(folder, os.O_RDONLY | os.O_DIRECTORY), items))
                except OSError as exc:
                    self._withdraw(items, exc)
            outcomes = self._aio.sync([fd for fd, _ in opened])
            if outcomes is None:  # AIO gave up: sync these through the threads
                self._syncers.each(lambda entry: self._sync_fd(*entry), opened)
                return True
            for (_, items), outcome in zip(opened, outcomes, strict=True):
                if outcome is not None:
                    self._withdraw(items, outcome)
        finally:
            for fd, _ in opened:
                with contextlib.suppress(OSError):
                    os.close(fd)
        return True

    def _sync_fd(self, fd: int, items: list[_Pending]) -> None:
        try:
            os.fsync(fd)
        except OSError as exc:
            self._withdraw(items, exc)

    def _withdraw(self, items: list[_Pending], exc: OSError) -> None:
        """A folder's renames are not durable: fail and take out its items."""
        for item in items:
            self._fail(item, exc)
            with contextlib.suppress(OSError):
                os.unlink(self._final(item))

    def _sync_folder(self, entry: tuple[str, list[_Pending]]) -> None:
        folder, items = entry
        try:
            _fsync_dir(folder)
        except OSError as exc:  # the renames are not durable: withdraw them
            self._withdraw(items, exc)

    def _write_tmp(self, item: _Pending) -> bool:
        envelope = item.envelope
        item.tmp = f"{self._tmp}/{envelope.queue_id}.{os.getpid()}"
        if self._claim(item.tmp):
            try:
                item.fd = os.open(item.tmp, os.O_WRONLY | os.O_NOFOLLOW)
                item.reused = True
            except OSError:  # not ours to write (another owner?): make a new one instead
                with contextlib.suppress(OSError):
                    os.unlink(item.tmp)
        if item.fd < 0:
            try:
                item.fd = os.open(item.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
            except OSError as exc:
                self._fail(item, exc, created=False)
                return False
        return self._step(item, _write_file)

    def _claim(self, tmp: str) -> bool:
        """Writer thread: rename a parked file to `tmp`. Other processes take from free/
        too; rename is the arbiter (the loser gets ENOENT and tries the next name).
        A listing reads the whole folder (its size is that of its fullest day), so while
        only a few files are parked it is not repeated for a while: creating a file costs
        little as long as nothing is unlinked, and parked files pile up to be taken in bulk."""
        if not self._spare:
            if self.recycle <= 0 or time.monotonic() - self._scarce_at < _LIST_AGAIN:
                return False
            try:
                with os.scandir(self.free) as entries:
                    self._spare = [e.name for e in entries if not e.name.startswith(".")
                                   and e.is_file(follow_symlinks=False)]
            except OSError:
                self._spare = []
            if len(self._spare) < _FEW:
                self._scarce_at = time.monotonic()
            if not self._spare:
                return False
        while self._spare:
            try:
                os.rename(f"{self._free}/{self._spare.pop()}", tmp)
                return True
            except FileNotFoundError:
                continue
            except OSError:
                return False
        return False

    def _step(self, item: _Pending, action: Callable[[_Pending], object]) -> bool:
        """Run one file operation; on OSError fail the item and remove its temp file."""
        try:
            action(item)
            return True
        except OSError as exc:
            self._fail(item, exc)
            return False

    def _final(self, item: _Pending) -> str:
        return f"{self._root}/{item.envelope.spool_path}"

    def _rename(self, item: _Pending) -> None:
        final = self._final(item)
        folder = os.path.dirname(final)
        if folder not in self._made:  # a bucket ensure() did not make (an unusual id)
            os.makedirs(folder, mode=_DIR_MODE, exist_ok=True)
            _fsync_dir(os.path.dirname(folder))
            self._made.add(folder)
        os.rename(item.tmp, final)

    def _fail(self, item: _Pending, exc: OSError, *, created: bool = True) -> None:
        item.error = SpoolError(f"spool commit failed: {exc.strerror or exc}",
                                queue_id=item.envelope.queue_id)
        if created:
            with contextlib.suppress(OSError):
                os.unlink(item.tmp)

    # -- read --------------------------------------------------------------------------

    async def read(self, spool_path: str, *, verify: bool = True, size: int = 0,
                   inline_max: int = 0) -> tuple[Envelope, bytes]:
        """The file in a pool thread; on the caller's thread when its message is known
        (`size`, from the job) to be at most `inline_max` bytes: a small file comes from the
        page cache faster than a thread hand-off. inline_max 0 (a volume that can hang
        must not stall an event loop): always the pool."""
        if size and size <= inline_max:
            return self.read_sync(spool_path, verify)
        return await self._run(self.read_sync, spool_path, verify)

    def read_sync(self, spool_path: str, verify: bool = True) -> tuple[Envelope, bytes]:
        try:
            raw = _read_file(self.file(spool_path))
        except OSError as exc:
            raise SpoolError(f"cannot read {spool_path}: {exc.strerror or exc}") from exc
        return decode(raw, spool_path, verify=verify)

    async def exists(self, spool_path: str) -> bool:
        return bool(await self._run(self.exists_sync, spool_path))

    def exists_sync(self, spool_path: str) -> bool:
        """Whether the committed file is there; SpoolError for a path outside the spool."""
        return os.path.exists(self.file(spool_path))

    # -- remove ------------------------------------------------------------------------

    async def remove(self, spool_path: str) -> bool:
        """Remove a committed message (every recipient is final). False if already gone;
        SpoolError if it could not be removed durably."""
        (outcome,) = await self.remove_many([spool_path])
        if isinstance(outcome, SpoolError):
            raise outcome
        return outcome

    async def remove_many(self, spool_paths: list[str], *,
                          durable: bool = True) -> list[bool | SpoolError]:
        """remove() for many messages in one hand-off, each with its own outcome. Durable:
        each folder is fsynced before this returns (a file that came back after an OS crash
        would look like mail never delivered). durable=False skips those fsyncs, for a
        caller that can recognise such a file as done (the queue keeps completion marks)."""
        return list(await self._run(self._remove_batch, spool_paths, durable))

    def _remove_batch(self, spool_paths: list[str],
                      durable: bool = True) -> list[bool | SpoolError]:
        out: list[bool | SpoolError] = []
        folders: dict[str, list[int]] = {}
        for spool_path in spool_paths:
            try:
                path = self.file(spool_path)
                gone = self._take_out(path)
            except SpoolError as exc:
                out.append(exc)
                continue
            except OSError as exc:
                out.append(SpoolError(f"cannot remove {spool_path}: {exc.strerror or exc}"))
                continue
            if gone:
                folders.setdefault(os.path.dirname(path), []).append(len(out))
            out.append(gone)

        def sync(entry: tuple[str, list[int]]) -> None:
            folder, indexes = entry
            try:
                _fsync_dir(folder)
            except OSError as exc:
                for i in indexes:
                    out[i] = SpoolError(f"removal of {spool_paths[i]} not durable: {exc}")

        if durable:
            self._syncers.each(sync, list(folders.items()))
        return out

    def _take_out(self, path: str) -> bool:
        """Take a committed file out of mess/: parked in free/ or unlinked. False if it was
        gone already. A file of up to KEEP bytes is parked as it is, in one rename (the
        next commit writes over it: emptying it here and filling it there made the
        file system free its blocks and allocate them again; see the module's docstring);
        a bigger one is emptied first, under a dot name nobody claims, so that free/ never
        holds more than recycle x KEEP bytes."""
        if self._room():
            name = os.path.basename(path)
            try:
                small = os.stat(path).st_size <= KEEP
            except FileNotFoundError:
                return False
            staging = f"{self._free}/{name}" if small else f"{self._free}/.{name}"
            try:
                os.rename(path, staging)
            except FileNotFoundError:
                return False
            except OSError:
                pass  # free/ unusable: unlink as before
            else:
                try:
                    if not small:
                        os.truncate(staging, 0)
                        os.rename(staging, f"{self._free}/{name}")
                    with self._parking:
                        self._parked += 1
                    self._scarce_at = 0.0  # our own writer may look in free/ again at once
                except OSError:
                    with contextlib.suppress(OSError):
                        os.unlink(staging)
                return True
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        return True

    def _room(self) -> bool:
        if self.recycle <= 0:
            return False
        with self._parking:
            # Writers take from free/ all the time, so a full count is checked again soon
            # (else this remover would unlink for the whole period while writers find
            # nothing parked and create files again).
            since = time.monotonic() - self._counted
            if since >= _RECOUNT or (self._parked >= self.recycle and since >= _RECOUNT_FULL):
                self._counted = time.monotonic()
                try:
                    self._parked = sum(1 for _ in os.scandir(self.free))
                except OSError:
                    return False
            return self._parked < self.recycle

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
        """Leftovers of crashed processes (never part of any promise): uncommitted files in
        tmp/, and files a remover was emptying in free/ (the dot names). A parked file
        claimed into tmp/ gets a new mtime from the write that follows its open; should one be
        taken in between, the claim makes a new file or fails that commit (451), no more."""
        cutoff = time.time() - older_than
        found: list[Path] = []
        for folder, prefix in ((self.tmp, ""), (self.free, ".")):
            if folder.exists():
                found += [Path(e.path) for e in os.scandir(folder)
                          if e.name.startswith(prefix) and e.is_file()
                          and e.stat().st_mtime < cutoff]
        return found


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


def _fsync_file(item: _Pending) -> None:
    os.fsync(item.fd)


def _write_file(item: _Pending) -> None:
    header = item.envelope.SerializeToString()
    _write_all(item.fd, _HEADER.pack(MAGIC, len(header)) + header)
    _write_all(item.fd, item.data)
    source, offset, size = item.tail
    if source >= 0:
        _copy(source, item.fd, offset, size)
    if item.reused:  # what is left of the parked file's last message goes
        end = _HEADER.size + len(header) + len(item.data) + size  # size 0 without a tail
        if os.fstat(item.fd).st_size > end:
            os.ftruncate(item.fd, end)


_CHUNK = 1 << 20


def _checksum(data: bytes, fd: int, offset: int, size: int) -> str:
    digest = hashlib.sha256(data)
    end = offset + size
    while offset < end:
        block = os.pread(fd, min(_CHUNK, end - offset), offset)
        if not block:
            raise OSError(errno.EIO, "spill file shorter than expected")
        digest.update(block)
        offset += len(block)
    return digest.hexdigest()


def _read_file(path: str) -> bytes:
    """A whole file in one read() as a rule: Path.read_bytes's file object, buffer and
    size probing cost remote-delivery more than the read itself."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        data = os.read(fd, size + 1)
        if len(data) == size:  # all of it (asking one more byte showed the end)
            return data
        parts = [data]
        while block := os.read(fd, _CHUNK):  # a short read, or it grew since fstat
            parts.append(block)
        return b"".join(parts)
    finally:
        os.close(fd)


def _pread_all(fd: int, size: int) -> bytearray:
    out = bytearray()
    while len(out) < size:
        block = os.pread(fd, min(_CHUNK, size - len(out)), len(out))
        if not block:
            raise OSError(errno.EIO, "spill file shorter than expected")
        out += block
    return out


def _copy(source: int, target: int, offset: int, size: int) -> None:
    """`size` bytes of `source` from `offset` appended to `target`: in the kernel where it
    can (no bytes through Python), read/write where it cannot."""
    start, end = offset, offset + size
    try:
        while offset < end:
            done = os.copy_file_range(source, target, end - offset, offset)
            if done == 0:
                raise OSError(errno.EIO, "spill file shorter than expected")
            offset += done
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP) \
                or offset != start:
            raise
    while offset < end:
        block = os.pread(source, min(_CHUNK, end - offset), offset)
        if not block:
            raise OSError(errno.EIO, "spill file shorter than expected")
        _write_all(target, block)
        offset += len(block)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
