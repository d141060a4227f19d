"""One Mailyard service as a real child process (`python -m mailyard.<service>`), ready when
its /readyz says so; kill() is the kill -9 every durability promise is about."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from mailyard.core.natsserver import free_port


class ServiceProcess:
    """`python -m mailyard.<module>` with the given environment, logs in a file."""

    def __init__(self, module: str, env: dict[str, str], log_dir: Path,
                 http_port: int | None = None) -> None:
        self.module = module
        self.env = {**os.environ, **env}
        self.log_path = log_dir / f"{module.rsplit('.', 1)[-1]}-{time.time_ns()}.log"
        self.http_port = http_port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: float | None = 30.0) -> ServiceProcess:
        """Start it; with an http_port, wait up to `wait` seconds for /readyz (None: return
        at once, for a process expected to wait for something first)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", self.module], env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT)
        if self.http_port and wait is not None:
            try:
                self.wait_ready(wait)
            except BaseException:
                self.kill()  # the caller never gets a handle to stop it: leave nothing running
                raise
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.http_port}/readyz"
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"{self.module} exited {self.proc.returncode}:\n{self.logs()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (OSError, http.client.HTTPException):  # not up yet (or not ours)
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.module} not ready after {timeout}s:\n{self.logs()}")

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def kill(self) -> None:
        """kill -9: the crash every durability promise is about."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None


def grpc_service(module: str, prefix: str, nats_url: str, log_dir: Path,
                 **settings: str) -> tuple[ServiceProcess, str]:
    """A service with a gRPC and an HTTP port (relay-auth, directory, queue, remote-delivery)
    on free loopback ports, not started yet: the process and its gRPC address. `settings` are
    the service's own, by name: grpc_service(..., "RELAYAUTH", ..., auth_workers="1") sets
    MAILYARD_RELAYAUTH_AUTH_WORKERS=1."""
    grpc_port, http_port = free_port(), free_port()
    proc = ServiceProcess(module, {
        f"MAILYARD_{prefix}_NATS_URL": nats_url,
        f"MAILYARD_{prefix}_GRPC_PORT": str(grpc_port),
        f"MAILYARD_{prefix}_HTTP_PORT": str(http_port),
        **{f"MAILYARD_{prefix}_{name.upper()}": value for name, value in settings.items()},
    }, log_dir, http_port=http_port)
    return proc, f"127.0.0.1:{grpc_port}"
