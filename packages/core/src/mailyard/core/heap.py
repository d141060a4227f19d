"""glibc's heap, told to keep what a message's buffers free for the next message.

A message's body passes through bytes objects of its own size (the joined pieces of DATA,
the file remote-delivery reads, ...). glibc serves an allocation of 128 KiB or more with
mmap, and returns the top of the heap to the kernel once 256 KiB are free there (both
bounds grow a little as it goes): so a big message's buffers came as fresh pages each time,
each page faulted in and zeroed by the kernel, and were unmapped again. Joining a 600 KB
body and putting our headers in front cost 578 us that way, 28 us with the bounds below
(bench/heap_cost.py); one to two such buffers per big message in each of smtp-ingress,
remote-delivery and local-delivery.

So every service raises both bounds at start: buffers up to MMAP_THRESHOLD come from the
heap and, once freed, stay there for the next message up to TRIM_THRESHOLD of free memory at
its top. The price is memory the process keeps after a burst of big messages (at most
TRIM_THRESHOLD more per heap than before). Not glibc (musl, macOS): nothing to do.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)
MMAP_THRESHOLD = 4 << 20   # allocations below this come from the heap, not mmap
TRIM_THRESHOLD = 16 << 20  # free memory kept at the top of a heap before it goes back
_M_TRIM_THRESHOLD = -1     # mallopt's parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3


def keep_freed_buffers() -> bool:
    """Raise glibc's mmap and trim thresholds; False where there is no glibc mallopt."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library (no ldconfig run)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
        bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not done:
        log.warning("heap thresholds not raised: mallopt refused them")
    return done
