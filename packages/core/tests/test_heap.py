"""core.heap: with the raised bounds a freed message-sized buffer is reused, not mapped and
faulted in again (counted in page faults, in fresh processes: mallopt is process-wide)."""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import os, resource, sys
if sys.argv[1] == "raised":
    from mailyard.core import heap
    assert heap.keep_freed_buffers()
parts = [os.urandom(65536) for _ in range(10)]
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    body = b"Received: ..." + b"".join(parts)
    del body
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True,
                         text=True, check=True).stdout
    return int(out)


def test_a_freed_big_buffer_is_reused_not_faulted_in_again() -> None:
    assert faults("default") > 200 * 100  # ~160 pages of 650 KB, twice, every time
    assert faults("raised") < 1000        # the heap grew once


SERVICE = """
import os, resource
from mailyard.core.service import run
from mailyard.core.settings import ServiceSettings

async def serve(settings, stop):
    parts = [os.urandom(65536) for _ in range(10)]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(200):
        body = b"Received: ..." + b"".join(parts)
        del body
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, flush=True)

run("heap-test", ServiceSettings, serve)
"""


def test_every_service_raises_them_at_start() -> None:
    out = subprocess.run([sys.executable, "-c", SERVICE], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert int(out) < 1000  # what core.service.run serves runs with the raised bounds
