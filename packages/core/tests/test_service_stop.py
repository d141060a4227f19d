"""A service told to stop ends, even when its graceful stop never finishes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

HANGING = """
import asyncio
from mailyard.core.service import run
from mailyard.core.settings import ServiceSettings

async def serve(settings, stop):
    print("serving", flush=True)
    await stop.wait()
    await asyncio.Event().wait()  # a stop that waits on something that never comes

run("test", ServiceSettings, serve)
"""


def test_a_stop_that_hangs_ends_after_the_grace() -> None:
    proc = subprocess.Popen([sys.executable, "-c", HANGING], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "MAILYARD_STOP_GRACE": "1"})
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "serving\n"
        os.kill(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        proc.kill()
    assert code == 1
    assert proc.stderr is not None and "graceful stop took more than" in proc.stderr.read()
