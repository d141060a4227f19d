"""Every service runs on uvloop unless its settings say asyncio; a wrong name is refused."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SERVICE = """
import asyncio
from mailyard.core.service import run
from mailyard.core.settings import ServiceSettings

async def serve(settings, stop):
    print(type(asyncio.get_running_loop()).__module__, flush=True)

run("test", ServiceSettings, serve)
"""


def _run(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SERVICE], capture_output=True, text=True,
                          check=False, timeout=60, env={**os.environ, **env})


@pytest.mark.parametrize(("setting", "module", "named"), [
    (None, "uvloop", "uvloop"), ("uvloop", "uvloop", "uvloop"),
    ("asyncio", "asyncio.unix_events", "asyncio")])
def test_the_event_loop_a_service_runs_on(setting: str | None, module: str, named: str) -> None:
    done = _run(**({"MAILYARD_COMMON_EVENT_LOOP": setting} if setting else {}))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == module
    assert f'"event_loop": "{named}"' in done.stderr  # the "starting" line


def test_an_unknown_event_loop_is_refused_in_one_line() -> None:
    done = _run(MAILYARD_COMMON_EVENT_LOOP="trio")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "EVENT_LOOP" in done.stderr, done.stderr
