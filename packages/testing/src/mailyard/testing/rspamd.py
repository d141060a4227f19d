"""A private rspamd (Debian's /usr/bin/rspamd) for tests: the system service is never
touched; this one has its own config, run and log folders, binds its normal worker and
controller to free 127.0.0.1 ports and sends every DNS query to the nameserver it is given
(a loopback test server), so it never reaches out.

rspamd compiles its regular expressions with Hyperscan at start (minutes on a busy
2-core machine); the compiled cache is kept in CACHE_DIR across runs, which brings a
start down to seconds.

`Rspamd.available()` is False when the binary is missing: tests skip locally and fail
under CI=true (CI installs it).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from mailyard.core.natsserver import free_port

BINARY = "/usr/bin/rspamd"
SYSTEM_CONFDIR = Path("/etc/rspamd")
CACHE_DIR = Path(os.environ.get("MAILYARD_RSPAMD_CACHE",
                                Path(tempfile.gettempdir()) / "mailyard-rspamd-cache"))

CONFIG = """
.include "$CONFDIR/common.conf"
options {{
    pidfile = "$RUNDIR/rspamd.pid";
    .include "$CONFDIR/options.inc"
}}
# after options.inc, which has a dns section of its own: ours wins (never resolv.conf's)
options {{
    dns {{ nameserver = ["127.0.0.1:{dns_port}"]; timeout = 1s; retransmits = 1; }}
    hs_cache_dir = "{cache}";
}}
logging {{ type = "file"; filename = "$LOGDIR/rspamd.log"; level = "info"; }}
worker "normal" {{
    bind_socket = "127.0.0.1:{normal}";
    .include "$CONFDIR/worker-normal.inc"
    count = 1;
}}
worker "controller" {{
    bind_socket = "127.0.0.1:{controller}";
    .include "$CONFDIR/worker-controller.inc"
    count = 1;
}}
"""


class Rspamd:
    def __init__(self, folder: Path, dns_port: int) -> None:
        self.folder = folder
        self.dns_port = dns_port
        self.normal = free_port()
        self.controller = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return os.access(BINARY, os.X_OK) and (SYSTEM_CONFDIR / "common.conf").exists()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.normal}"

    def start(self, timeout: float = 600.0) -> Rspamd:
        for name in ("run", "db", "log", "local"):
            (self.folder / name).mkdir(parents=True, exist_ok=True)
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        # fuzzy_check resolves its public servers with the system resolver at start and
        # would then query them: off, like everything else that would leave this machine
        (self.folder / "local" / "override.d").mkdir(parents=True, exist_ok=True)
        (self.folder / "local" / "override.d" / "fuzzy_check.conf").write_text(
            "enabled = false;\n")
        config = self.folder / "rspamd.conf"
        config.write_text(CONFIG.format(dns_port=self.dns_port, cache=CACHE_DIR,
                                        normal=self.normal, controller=self.controller))
        args = [BINARY, "-f", "-c", str(config), f"--var=CONFDIR={SYSTEM_CONFDIR}",
                f"--var=LOCAL_CONFDIR={self.folder / 'local'}",
                f"--var=RUNDIR={self.folder / 'run'}", f"--var=DBDIR={self.folder / 'db'}",
                f"--var=LOGDIR={self.folder / 'log'}"]
        if os.geteuid() == 0:
            args += ["-i", "-u", "root", "-g", "root"]
        with open(self.folder / "stdout.log", "ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rspamd exited with {self.proc.returncode}:\n{self.logs()}")
            if self.ping():
                return self
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"rspamd not ready within {timeout}s:\n{self.logs()}")

    def ping(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.controller}/ping",
                                        timeout=2) as response:
                return bool(response.read().strip() == b"pong")
        except OSError:
            return False

    def logs(self) -> str:
        text = ""
        for name in ("stdout.log", "log/rspamd.log"):
            path = self.folder / name
            if path.exists():
                text += path.read_text(errors="replace")[-3000:]
        return text

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
