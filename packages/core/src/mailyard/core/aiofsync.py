"""Many fsyncs at once from one thread: Linux AIO's IOCB_CMD_FSYNC (kernel 4.18 and later).

The spool fsyncs every file of a commit batch, and then every folder it renamed into, at
once: fsyncs issued together overlap in the disk's queue, one after another they do not.
Issued from a Python thread each (core.fanout), every fsync cost its thread a wake-up and
two takes of the GIL from the busy event loop: 10 of smtp-ingress's 16 context switches
per message, and more of its kernel time in futex than in the fsyncs themselves. Here the
writer thread hands the kernel the whole list in one io_submit, the kernel runs the fsyncs
concurrently on its own workers, and one io_getevents collects the outcomes: no Python
thread and no GIL in between. The durability is the same: each fsync is vfs_fsync of the
file, as fsync(2) is, and its error comes back with it.

Only the raw system calls are used (through ctypes, no library): io_setup, io_submit,
io_getevents, io_destroy. Where they are missing (another OS or architecture, a seccomp
profile refusing them, an old kernel answering EINVAL to the fsync opcode), `open()`
returns None or `sync` raises Unsupported, and the caller keeps fsyncing from threads.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
import sys
import threading
from collections.abc import Sequence

# io_setup, io_destroy, io_getevents, io_submit
_SYSCALLS = {"x86_64": (206, 207, 208, 209), "aarch64": (0, 1, 4, 2)}
_IOCB = struct.Struct("=QIIHhIQQqQII")  # struct iocb (include/uapi/linux/aio_abi.h)
_EVENT = struct.Struct("=QQqq")         # struct io_event: data, obj, res, res2
_CMD_FSYNC = 2
DEPTH = 128  # fsyncs in flight per context; a longer list goes in several rounds


class Unsupported(Exception):
    """This kernel cannot fsync through AIO: fsync some other way."""


class AioFsync:
    def __init__(self, libc: ctypes.CDLL, numbers: tuple[int, int, int, int], context: int) -> None:
        self._syscall = libc.syscall
        self._setup, self._destroy, self._getevents, self._submit = numbers
        self._context = ctypes.c_ulong(context)
        self._iocbs = ctypes.create_string_buffer(_IOCB.size * DEPTH)
        base = ctypes.addressof(self._iocbs)
        self._pointers = (ctypes.c_void_p * DEPTH)(*(base + i * _IOCB.size
                                                      for i in range(DEPTH)))
        self._events = ctypes.create_string_buffer(_EVENT.size * DEPTH)
        self._lock = threading.Lock()  # one caller at a time: events are the context's

    @classmethod
    def open(cls) -> AioFsync | None:
        numbers = _SYSCALLS.get(platform.machine()) if sys.platform == "linux" else None
        if numbers is None:
            return None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
        except OSError:
            return None
        context = ctypes.c_ulong(0)
        if libc.syscall(ctypes.c_long(numbers[0]), ctypes.c_uint(DEPTH),
                        ctypes.byref(context)) != 0:
            return None  # ENOSYS, EPERM (seccomp), EAGAIN (fs.aio-max-nr reached)
        return cls(libc, numbers, context.value)

    def sync(self, fds: Sequence[int]) -> list[OSError | None]:
        """fsync every fd, all at once; each fd's outcome (None: durable). Raises
        Unsupported when the kernel refuses the fsync opcode itself (nothing was synced
        then)."""
        outcomes: list[OSError | None] = [None] * len(fds)
        with self._lock:
            if not self._context.value:
                raise Unsupported("closed")
            for start in range(0, len(fds), DEPTH):
                self._round(fds[start:start + DEPTH], outcomes, start)
        return outcomes

    def _round(self, fds: Sequence[int], outcomes: list[OSError | None], first: int) -> None:
        for i, fd in enumerate(fds):
            _IOCB.pack_into(self._iocbs, i * _IOCB.size,
                            i, 0, 0, _CMD_FSYNC, 0, fd, 0, 0, 0, 0, 0, 0)
        submitted = in_flight = 0
        while submitted < len(fds):
            done = self._syscall(ctypes.c_long(self._submit), self._context,
                                 ctypes.c_long(len(fds) - submitted),
                                 ctypes.byref(self._pointers,
                                              submitted * ctypes.sizeof(ctypes.c_void_p)))
            if done > 0:
                submitted += done
                in_flight += done
                continue
            code = ctypes.get_errno() if done < 0 else errno.EAGAIN
            if code == errno.EINTR:
                continue
            if code == errno.EINVAL and first == submitted == 0:
                # before 4.18 the opcode itself is refused; nothing is in flight yet
                raise Unsupported("the kernel does not fsync through AIO")
            # io_submit stops at a refused iocb (a closed fd...): that one fails alone
            outcomes[first + submitted] = OSError(code, os.strerror(code))
            submitted += 1
        while in_flight > 0:
            got = self._syscall(ctypes.c_long(self._getevents), self._context,
                                ctypes.c_long(in_flight), ctypes.c_long(in_flight),
                                self._events, None)
            if got < 0:
                code = ctypes.get_errno()
                if code == errno.EINTR:
                    continue
                # not expected (EFAULT, EINVAL): give the context up (io_destroy waits for
                # what is in flight) and let the caller fsync the whole list its own way
                self._syscall(ctypes.c_long(self._destroy), self._context)
                self._context = ctypes.c_ulong(0)
                raise Unsupported(f"io_getevents: {os.strerror(code)}")
            for k in range(got):
                index, _, res, _ = _EVENT.unpack_from(self._events, k * _EVENT.size)
                if res < 0:
                    outcomes[first + index] = OSError(-res, os.strerror(-res))
            in_flight -= got

    def close(self) -> None:
        with self._lock:
            if self._context.value:
                self._syscall(ctypes.c_long(self._destroy), self._context)
                self._context = ctypes.c_ulong(0)


class Lazy:
    """An AioFsync opened by the first caller that needs one, and given up for good once
    the kernel refuses it: for the spool's writer and core.fsync_batch, which fsync their
    own way (threads) wherever `sync` says None. Any thread may call it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._aio: AioFsync | None = None
        self._tried = False

    @property
    def refused(self) -> bool:
        """Tried, and AIO cannot fsync here."""
        return self._tried and self._aio is None

    def sync(self, fds: Sequence[int]) -> list[OSError | None] | None:
        """AioFsync.sync(fds), or None: a single fd (done where it is, as before), or no
        AIO here (from now on)."""
        if len(fds) < 2:
            return None
        with self._lock:
            if not self._tried:
                self._tried = True
                self._aio = AioFsync.open()
            aio = self._aio
        if aio is None:
            return None
        try:
            return aio.sync(fds)
        except Unsupported:
            with self._lock:
                self._aio = None
            aio.close()
            return None

    def close(self) -> None:
        with self._lock:
            aio, self._aio = self._aio, None
        if aio is not None:
            aio.close()

