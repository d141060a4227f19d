"""STATE_DIR is refused on a network file system (here a real FUSE mount) and held by one
process: both refusals are one line and exit status 2, never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailyard.core.errors import SettingsError
from mailyard.queue.statedir import StateDir, check_local, fs_magic


def _queue(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "MAILYARD_QUEUE_NATS_URL": "nats://127.0.0.1:9",
            "MAILYARD_QUEUE_HTTP_PORT": "0", **env}
    return subprocess.run([sys.executable, "-m", "mailyard.queue"], env=full, text=True,
                          capture_output=True, timeout=60, check=False)


def _errors(stderr: str) -> list[str]:
    """The error lines of a service's JSON log (a traceback would be more)."""
    assert "Traceback" not in stderr, stderr
    return [json.loads(line)["msg"] for line in stderr.splitlines()
            if json.loads(line)["level"] == "error"]


@pytest.fixture
def fuse_dir(tmp_path: Path) -> Iterator[Path]:
    """A real FUSE mount (fuse-overlayfs, installed with podman)."""
    tool = shutil.which("fuse-overlayfs")
    why = ("fuse-overlayfs is not installed (apt-get install fuse-overlayfs)" if not tool
           else "no /dev/fuse or not root" if not (os.path.exists("/dev/fuse")
                                                   and os.geteuid() == 0) else "")
    if why:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    for name in ("lower", "upper", "work", "mnt"):
        (tmp_path / name).mkdir()
    assert tool
    subprocess.run([tool, "-o", f"lowerdir={tmp_path / 'lower'},upperdir={tmp_path / 'upper'},"
                    f"workdir={tmp_path / 'work'}", str(tmp_path / "mnt")], check=True)
    try:
        yield tmp_path / "mnt"
    finally:
        subprocess.run(["fusermount3" if shutil.which("fusermount3") else "umount",
                        *(["-u"] if shutil.which("fusermount3") else []),
                        str(tmp_path / "mnt")], check=False)


def test_network_file_system_is_refused_in_one_line(fuse_dir: Path) -> None:
    assert fs_magic(fuse_dir) == 0x65735546
    with pytest.raises(SettingsError, match="network file system"):
        check_local(fuse_dir / "not" / "made" / "yet")
    out = _queue({"MAILYARD_QUEUE_STATE_DIR": str(fuse_dir / "state")})
    assert out.returncode == 2, out.stderr
    [reason] = _errors(out.stderr)
    assert "network file system (FUSE)" in reason, out.stderr
    assert not (fuse_dir / "state").exists()


def test_local_disk_is_accepted_and_held_by_one_process(tmp_path: Path) -> None:
    check_local(tmp_path)  # tmp is a local file system
    first = StateDir(tmp_path / "state")
    first.acquire()
    try:
        out = _queue({"MAILYARD_QUEUE_STATE_DIR": str(tmp_path / "state")})
        assert out.returncode == 2
        [reason] = _errors(out.stderr)
        assert "held by another queue process" in reason, out.stderr
    finally:
        first.release()
    again = StateDir(tmp_path / "state")
    again.acquire()  # released on close: a restarted process takes it over
    again.release()


def test_state_id_belongs_to_the_database(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.acquire()
    first = state.state_id
    (tmp_path / "queue.db").write_bytes(b"")  # the store made its database under that id
    state.release()
    state.acquire()
    assert state.state_id == first  # a restart keeps its state and its id
    state.discard()
    assert state.state_id != first and not (tmp_path / "queue.db").exists()
    state.release()
    state.acquire()
    assert state.state_id not in ("", first)  # no database: a new state, a new id
    state.release()
