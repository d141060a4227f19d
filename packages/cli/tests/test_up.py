"""`mailyard up` as an operator runs it: a real process with its nats-server and services.

A second `mailyard up` on the same ports is refused with one line, a kill -9'd nats-server
is started again like every service, and a kill -9'd `mailyard up` takes its children with it.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailyard.cli.mailuser import MailUser
from mailyard.cli.platform import Platform, default_ingress_replicas, free_ports, nats_procs
from mailyard.mail_access import dovecot_conf


def children(pid: int) -> dict[int, str]:
    """pid -> command line of every process whose parent is `pid`."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found[int(entry.name)] = cmdline
    return found


def gomaxprocs(pid: int) -> str | None:
    for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        if item.startswith(b"GOMAXPROCS="):
            return item.split(b"=", 1)[1].decode()
    return None


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def wait_for(what: str, check: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not after {timeout}s")


class Up:
    def __init__(self, data: Path) -> None:
        self.ports = free_ports()
        self.arg = ",".join(f"{k}={v}" for k, v in dataclasses.asdict(self.ports).items())
        self.proc = self.run(data)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def run(self, data: Path) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "mailyard.cli.main", "up", "--data", str(data),
             "--ports", self.arg], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    running = Up(tmp_path_factory.mktemp("up"))
    try:
        wait_for("mailyard up is up", lambda: running.said("mailyard: up.")
                 or running.proc.poll() is not None, timeout=120)
        assert running.said("mailyard: up."), running.proc.stderr.read()  # type: ignore[union-attr]
        yield running
    finally:
        if running.proc.poll() is None:
            running.proc.terminate()
            running.proc.wait(60)


def test_a_second_up_on_taken_ports_is_refused_in_one_line(
        up: Up, tmp_path: Path) -> None:
    second = up.run(tmp_path)
    out, err = second.communicate(timeout=60)
    assert second.returncode == 1
    assert "mailyard: up." not in out
    assert err.count("\n") == 1 and "port in use" in err and "another `mailyard up`" in err
    assert f"127.0.0.1:{up.ports.smtp}" in err
    assert ready(up.ports.queue_http)  # the first one is untouched


def test_a_killed_nats_server_is_started_again(up: Up) -> None:
    nats = [pid for pid, cmd in children(up.proc.pid).items() if "nats-server" in cmd]
    assert len(nats) == 1
    procs = os.environ.get("GOMAXPROCS", str(nats_procs()))  # the operator's, else ours
    assert gomaxprocs(nats[0]) == procs
    os.kill(nats[0], signal.SIGKILL)
    wait_for("supervisor restarts nats-server",
             lambda: up.said("nats-server died; started again"))
    restarted = [pid for pid, cmd in children(up.proc.pid).items() if "nats-server" in cmd]
    assert restarted and restarted != nats
    assert gomaxprocs(restarted[0]) == procs
    # the services reconnect to it and are ready again
    for port in (up.ports.queue_http, up.ports.remote_http, up.ports.local_http,
                 up.ports.ingress_http):
        wait_for(f"service on {port} ready again", lambda port=port: ready(port))


def test_remote_delivery_reads_the_key_folder_of_smtp_ingress(tmp_path: Path) -> None:
    """Bounces and vacation replies are signed by remote-delivery with the keys smtp-ingress
    signs with (`mailyard dkim keygen` writes <data>/dkim): every replica of both is given
    that folder."""
    platform = Platform(tmp_path, ports=free_ports(), replicas=2, ingress_replicas=2,
                        dovecot=False, mail_user=MailUser("someone", 1000, 1000))
    folders = {spec.name: platform.env_for(spec)[f"MAILYARD_{spec.prefix}_DKIM_DIR"]
               for spec in platform.specs() if spec.group in ("smtp-ingress", "remote-delivery")}
    assert len(folders) == 4
    assert set(folders.values()) == {str(tmp_path / "dkim")}


def test_nats_procs_is_one_per_four_cores() -> None:
    assert [nats_procs(cpus) for cpus in (1, 2, 4, 7, 8, 16)] == [1, 1, 1, 1, 2, 4]


def test_kill_9_of_up_ends_every_service_it_started(up: Up) -> None:
    kids = children(up.proc.pid)
    # nats-server, five services, one smtp-ingress per core, and Dovecot with its login
    # bridge when Dovecot is installed
    dovecot = 2 if dovecot_conf.dovecot_binary() else 0
    assert len(kids) == 6 + default_ingress_replicas() + dovecot
    up.proc.kill()
    up.proc.wait()
    wait_for("every child of the killed supervisor ends",
             lambda: not any(alive(pid) for pid in kids))
