"""natshealth against a real nats-server whose store is on a small tmpfs that fills up: the
write error is seen, left alone while the volume is full, named once space is back, and not
named again within the backoff; a config reload does not clear it, a restart does (root
only: mounting skips with its reason otherwise)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import nats
import pytest
from nats.js.api import StreamConfig

from mailyard.cli.natshealth import StorageWatch, has_space, health_error
from mailyard.core.natsserver import NatsServer, free_port


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "volume"
    folder.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {proc.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb") as out:
        try:
            while True:
                out.write(b"x" * 65536)
                out.flush()
        except OSError:
            pass
    return filler


async def _publish_once(url: str) -> None:
    """One message to a file stream (it fails on a full volume: no ack comes)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="PROBE", subjects=["probe"]))
        try:
            await js.publish("probe", b"x" * 4096, timeout=2)
        except Exception:  # the full volume's answer (no ack); the test reads /healthz
            pass
    finally:
        await nc.close()


def _wait(predicate: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "not within 30 s"
        time.sleep(0.1)


def test_write_error_named_once_space_is_back(small_volume: Path, tmp_path: Path) -> None:
    monitor = free_port()
    server = NatsServer(small_volume / "nats", monitor_port=monitor)
    server.start(tmp_path / "nats.log")
    try:
        asyncio.run(_publish_once(server.url))  # the stream exists before the volume fills
        watch = StorageWatch(monitor, small_volume, period=0.0, backoff=3600.0)
        assert watch.due() is None and health_error(monitor) is None
        filler = _fill(small_volume)
        assert not has_space(small_volume)
        asyncio.run(_publish_once(server.url))
        _wait(lambda: watch.due() is None and "write error" in watch.waiting)
        filler.unlink()
        assert has_space(small_volume)
        error = watch.due()
        assert error is not None and "'$G > PROBE' write error" in error
        assert "no space left on device" in error
        assert watch.due() is None  # within the backoff: no second restart
        # still stuck, even after a config reload (SIGHUP): only a new process clears it
        assert server.proc is not None
        server.proc.send_signal(signal.SIGHUP)
        log = tmp_path / "nats.log"
        _wait(lambda: "Reloaded server configuration" in log.read_text(errors="replace"))
        assert "write error" in (health_error(monitor) or "")
        server.stop()
        server.start(tmp_path / "nats.log")
        _wait(lambda: health_error(monitor) is None)  # a new process has no write error
    finally:
        server.stop()
