"""NSD (Debian's `nsd`), an authoritative DNS server in C, serving a bench's zone on loopback.

A sender-check bench with a new sender domain per message makes four or five queries a
message; the Python test server (mailyard.testing.DnsServer) spent more CPU answering them
than smtp-ingress spent asking, on the same two cores. Mail servers ask a resolver in C
(unbound, or their provider's), so the bench does too when NSD is installed (`.ci/run`
installs it); without it the Python server stands in, and the bench says which it used.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from bench import proc
from mailyard.cli.platform import spawn_supervised
from mailyard.core.natsserver import free_port, stop_process

ORIGIN = "test"
NEGATIVE_TTL = 300   # the SOA minimum: how long resolvers keep "no such name"

CONF = """server:
    ip-address: 127.0.0.1
    port: {port}
    do-ip6: no
    username: ""
    chroot: ""
    zonesdir: "{folder}"
    zonelistfile: "{folder}/zone.list"
    database: ""
    pidfile: "{folder}/nsd.pid"
    xfrdfile: "{folder}/xfrd.state"
    xfrdir: "{folder}"
    logfile: "{folder}/nsd.log"
    server-count: 1
    verbosity: 0
remote-control:
    control-enable: no
zone:
    name: "{origin}"
    zonefile: "{origin}.zone"
"""


def available() -> bool:
    return shutil.which("nsd") is not None


def zone_text(zone: dict[str, dict[str, list[str]]], ttl: int = 60) -> str:
    """A zone file for names under .test, from {"name": {"TXT": ['"text"'], ...}}."""
    lines = [f"$ORIGIN {ORIGIN}.", f"$TTL {ttl}",
             f"@ IN SOA ns.{ORIGIN}. hostmaster.{ORIGIN}. 1 3600 600 86400 {NEGATIVE_TTL}",
             f"@ IN NS ns.{ORIGIN}.", "ns IN A 127.0.0.1"]
    for name, records in zone.items():
        if not name.endswith("." + ORIGIN):
            raise ValueError(f"{name} is not under .{ORIGIN}")
        for rtype, values in records.items():
            lines.extend(f"{name}. IN {rtype} {value}" for value in values)
    return "\n".join(lines) + "\n"


class NsdServer:
    def __init__(self, zone: dict[str, dict[str, list[str]]], folder: Path) -> None:
        folder = folder / "nsd"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{ORIGIN}.zone").write_text(zone_text(zone))
        self.port = free_port()
        conf = folder / "nsd.conf"
        conf.write_text(CONF.format(port=self.port, folder=folder, origin=ORIGIN))
        self.proc = spawn_supervised(["nsd", "-d", "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait_ready(folder)

    def _wait_ready(self, folder: Path) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (folder / "nsd.log").read_text() if (folder / "nsd.log").exists() else ""
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr \
                    else ""
                raise RuntimeError(f"nsd exited: {(log + err).strip()[-500:]}")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(0.2)
                # a query for the SOA of the origin (id 1, RD off)
                query = (b"\x00\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00"
                         + bytes([len(ORIGIN)]) + ORIGIN.encode() + b"\x00\x00\x06\x00\x01")
                try:
                    sock.sendto(query, ("127.0.0.1", self.port))
                    if sock.recv(512)[:2] == b"\x00\x01":
                        return
                except OSError:
                    time.sleep(0.1)
        raise RuntimeError("nsd did not answer within 30 s")

    def cpu_seconds(self) -> float:
        """CPU of nsd and the processes it forked (xfrd, and the server that answers)."""
        return proc.tree_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        stop_process(self.proc)

