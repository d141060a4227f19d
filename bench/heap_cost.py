"""What a message-sized buffer costs with glibc's default heap bounds and with those
core.heap sets: a body joined from 64 KB pieces with our headers put in front, as
smtp-ingress's commit did, in a fresh process each way (mallopt is process-wide).

    python -m bench.heap_cost
"""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import os, resource, sys, timeit
if sys.argv[1] == "raised":
    from mailyard.core import heap
    assert heap.keep_freed_buffers()
for size in (30_000, 150_000, 600_000, 1_000_000):
    parts = [os.urandom(min(65536, size - i)) for i in range(0, size, 65536)]
    ours = b"Received: from a by b; date" * 3
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    seconds = timeit.timeit(lambda: ours + b"".join(parts), number=2000) / 2000
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / 2000
    print(f"{sys.argv[1]:8} {size:>9,} bytes: {seconds * 1e6:7.1f} us, {faults:6.1f} page faults")
"""


def main() -> int:
    for mode in ("default", "raised"):
        subprocess.run([sys.executable, "-c", CHILD, mode], check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
