"""The whole data folder on a volume that fills up, then gets space again (issue 14, item
15): mail must flow again without anyone restarting anything.

A real full volume: a 40 MB tmpfs mounted as the platform's data folder (root only; the
test skips with the reason when mounting is not permitted). nats-server 2.15 keeps a
stream's write error after a failed write ("JetStream failed to store a msg ... no space
left on device" goes on after the space is back), so the results the delivery worker
publishes never land; `mailyard up`'s supervisor must notice and restart nats-server.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailyard.cli.platform import Platform, free_ports
from mailyard.testing import DnsServer, SmtpSink
from tests.e2e.conftest import E2E_ME, Mailyard

VOLUME = "40m"
MESSAGES = 3


def _mount(folder: Path) -> None:
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs as the data folder needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={VOLUME},mode=0711", "tmpfs",
                           str(folder)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {proc.stderr.strip()}")


class Supervisor:
    """`mailyard up`'s loop (supervise_once every 0.5 s) in a thread: what it restarts is
    what an operator running `mailyard up` would get, nothing the test does by hand."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.stopping = threading.Event()
        self.restarted: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.wait(0.5):
            self.restarted += self.platform.supervise_once()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(10)


@pytest.fixture
def full_volume(tmp_path: Path) -> Iterator[Mailyard]:
    data = tmp_path / "data"
    data.mkdir()
    _mount(data)
    sink = SmtpSink().start()
    dns_server = DnsServer().start()
    platform = Platform(data, ports=free_ports(), me=E2E_ME, dovecot=False,
                        # a deferred local delivery is tried again seconds later, not minutes
                        env={"queue": {"RETRY_C_LOCAL": "1"},
                             "smtp-ingress": {"DNS_SERVERS": dns_server.address},
                             "remote-delivery": {"DNS_SERVER": dns_server.address}})
    try:
        platform.start()
        yield Mailyard(platform, sink)
    finally:
        platform.stop()
        sink.stop()
        dns_server.stop()
        # the logs outlive the volume (pytest keeps tmp_path), for whoever reads a failure
        shutil.copytree(platform.logs, tmp_path / "log", dirs_exist_ok=True)
        subprocess.run(["umount", "-l", str(data)], check=False)


def _fill(folder: Path) -> Path:
    """Write a file until the volume says ENOSPC."""
    filler = folder / "filler"
    chunk = b"x" * 65536
    with open(filler, "wb") as out:
        try:
            while True:
                out.write(chunk)
                out.flush()
        except OSError:
            pass
    return filler


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"{what} not within {timeout:.0f} s")


def test_mail_flows_again_once_the_full_volume_has_space(full_volume: Mailyard) -> None:
    my = full_volume
    platform = my.platform
    my.cli("domain", "add", "example.test")
    my.cli("user", "add", "postmaster@example.test", "--password-stdin",
           stdin="correct horse battery\n")
    supervisor = Supervisor(platform)
    try:
        # Accepted while there is space; delivered only once the volume is full (the worker
        # is paused meanwhile: started on a full volume it could not even come up).
        worker = platform.running["local-delivery"].proc
        worker.send_signal(signal.SIGSTOP)
        with my.smtp() as client:
            for i in range(MESSAGES):
                client.sendmail("sender@client.test", ["postmaster@example.test"],
                                f"Subject: full volume {i}\r\n\r\nbody {i}\r\n".encode())
        my.wait_cli(f"messages in queue: {MESSAGES}", "queue", "stat")
        filler = _fill(platform.data)
        worker.send_signal(signal.SIGCONT)
        # The Maildir write fails (deferred) and so does the result's JetStream write.
        _wait(lambda: _metric(platform.ports.local_http,
                              'mailyard_local_deliveries_total{result="deferred"}') >= 1,
              60, "a deferred delivery on the full volume")
        # Seen, and left alone while the volume is full: a new process would fail the same.
        watch = platform.nats_watch
        assert watch is not None
        _wait(lambda: "write error" in watch.waiting, 60, "the write error in nats' /healthz")
        assert not supervisor.restarted, supervisor.restarted
        filler.unlink()
        freed = time.monotonic()
        my.wait_maildir("postmaster@example.test", MESSAGES, timeout=120)
        print(f"\nall {MESSAGES} messages delivered {time.monotonic() - freed:.1f} s after "
              f"space was freed; the supervisor: {supervisor.restarted}")
        assert any(e.startswith("nats-server restarted: JetStream stream") and "write error" in e
                   for e in supervisor.restarted), supervisor.restarted
        my.queue_empty(timeout=60)
    finally:
        supervisor.stop()
