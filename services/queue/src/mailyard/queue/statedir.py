"""STATE_DIR: a local file system, held by one queue process, with an identity.

SQLite's WAL needs shared memory and POSIX locks that network file systems do not give
(NFS, SMB/CIFS, FUSE mounts, CephFS, ...): two hosts on one database corrupt it silently.
So the queue refuses such a directory at start with a one-line reason, and holds an
exclusive lock on a local one for its whole life (a second process given the same directory
refuses to start instead of writing beside the first).

Each state has an id (file `state-id`). The leader lock names the state of the process that
led last; a process that wins the lock while another state led last knows its own is stale
(its messages may have been delivered and removed meanwhile) and starts from an empty one,
which the reconciler rebuilds from the spool.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import os
import uuid
from pathlib import Path

from mailyard.core.errors import SettingsError

# statfs(2) f_type of the file systems SQLite must not live on (linux/magic.h and the
# file systems' own headers).
NETWORK_FS = {
    0x6969: "NFS", 0x517B: "SMB", 0xFF534D42: "CIFS", 0xFE534D42: "SMB2",
    0x65735546: "FUSE", 0x00C36400: "CephFS", 0x5346414F: "AFS", 0x6B414653: "AFS",
    0x01021997: "9P", 0x0BD00BD0: "Lustre", 0x47504653: "GPFS", 0x01161970: "GFS2",
    0x7461636F: "OCFS2", 0x73757245: "Coda", 0x564C: "NCP",
}
DB_FILES = ("queue.db", "queue.db-wal", "queue.db-shm")


def fs_magic(path: Path) -> int | None:
    """statfs(2) f_type of the file system holding path (None where statfs is missing)."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    libc = ctypes.CDLL(libc_name, use_errno=True)
    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit Linux
    if libc.statfs(os.fsencode(path), buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(path))
    # f_type is the struct's first member, a native long.
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


def existing(path: Path) -> Path:
    """path, or its nearest existing parent (STATE_DIR is made on first start)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_local(state_dir: Path) -> None:
    magic = fs_magic(existing(state_dir))
    kind = NETWORK_FS.get(magic) if magic is not None else None
    if kind:
        raise SettingsError(
            f"MAILYARD_QUEUE_STATE_DIR {state_dir} is on a network file system ({kind}): "
            "SQLite's WAL needs a local disk; give each queue replica a local volume")


class StateDir:
    """The checked, locked state directory of this process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.state_id = ""
        self._fd: int | None = None

    def acquire(self) -> None:
        check_local(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise SettingsError(
                f"MAILYARD_QUEUE_STATE_DIR {self.path} is held by another queue process "
                f"(pid {holder}); each replica needs a state directory of its own") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        self.state_id = self._load_id()

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def _load_id(self) -> str:
        """This state's id: the one made with it, or a new one for a new, empty state."""
        path = self.path / "state-id"
        if (self.path / "queue.db").exists():
            with contextlib.suppress(FileNotFoundError):
                value = path.read_text().strip()
                if value:
                    return value
        value = uuid.uuid4().hex
        tmp = path.with_suffix(".tmp")
        tmp.write_text(value + "\n")
        os.replace(tmp, path)
        return value

    def discard(self) -> None:
        """Drop a stale state: the next open starts empty, under a new id."""
        for name in DB_FILES:
            with contextlib.suppress(FileNotFoundError):
                (self.path / name).unlink()
        self.state_id = self._load_id()
