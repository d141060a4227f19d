"""Relay decisions under contention (issue 14 item 1): bursts of `smtp-source -s 50 -m 500`
from an allowed relay client after 20 s idle, with the CPU oversubscribed twice over (one
busy loop per core beside the platform), counting every 4xx the client got.

    python -m bench.relay_burst [--rounds 3] [--idle 20] [--sessions 50] [--messages 500]
                                [--busy 2]

Processes on 127.0.0.1: a nats-server, relay-auth and smtp-ingress (`python -m ...`, their
defaults, no tcp.smtp imported: relay-auth's default rules let 127.0.0.0/8 relay), plus
`--busy` shell busy loops (ended with the run). Each round waits `--idle` seconds, then
runs Postfix's smtp-source to a domain that is not ours (so every RCPT needs the relay
decision); smtp-source stops at its first 4xx, so `temp_fails` counts the 4xx lines it
printed and `exit` is its status. Also reported: smtp-ingress's relay decisions by source
(local view, relay-auth over gRPC, failed) from its /metrics. Figures only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from mailyard.core.natsserver import NatsServer, free_port
from mailyard.testing import ServiceProcess


def _decisions(http_port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10).read()
    out = {}
    for m in re.finditer(rb'mailyard_smtp_relay_decisions_total\{source="(\w+)"\} (\S+)', text):
        out[m.group(1).decode()] = float(m.group(2))
    return out


def main(rounds: int, idle: float, sessions: int, messages: int, busy: int) -> dict[str, Any]:
    source = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    if not os.path.exists(source):
        raise SystemExit("smtp-source not found (apt-get install postfix)")
    with tempfile.TemporaryDirectory(prefix="mailyard-relay-burst-") as tmp:
        base = Path(tmp)
        nats = NatsServer(base / "js")
        nats.start(base / "nats.log")
        procs: list[ServiceProcess] = []
        loops: list[subprocess.Popen[bytes]] = []
        try:
            grpc_port, ra_http, in_http, smtp = free_port(), free_port(), free_port(), free_port()
            procs.append(ServiceProcess("mailyard.relay_auth", {
                "MAILYARD_RELAYAUTH_NATS_URL": nats.url,
                "MAILYARD_RELAYAUTH_GRPC_PORT": str(grpc_port),
                "MAILYARD_RELAYAUTH_HTTP_PORT": str(ra_http),
            }, base / "logs", http_port=ra_http).start())
            procs.append(ServiceProcess("mailyard.smtp_ingress", {
                "MAILYARD_INGRESS_NATS_URL": nats.url,
                "MAILYARD_INGRESS_SPOOL_DIR": str(base / "spool"),
                "MAILYARD_INGRESS_TLS_DIR": str(base / "tls"),
                "MAILYARD_INGRESS_SMTP_PORT": str(smtp),
                "MAILYARD_INGRESS_SUBMISSION_PORT": "0",
                "MAILYARD_INGRESS_SMTPS_PORT": "0",
                "MAILYARD_INGRESS_HTTP_PORT": str(in_http),
                "MAILYARD_INGRESS_RELAY_AUTH_ADDR": f"127.0.0.1:{grpc_port}",
                "MAILYARD_INGRESS_REVERSE_DNS": "false",
                "MAILYARD_INGRESS_ME": "mx.bench.test",
            }, base / "logs", http_port=in_http).start())
            loops = [subprocess.Popen(["sh", "-c", "while :; do :; done"])
                     for _ in range(busy)]
            out: dict[str, Any] = {"cpus": os.cpu_count(), "busy_loops": busy, "rounds": []}
            for _ in range(rounds):
                time.sleep(idle)
                load = os.getloadavg()[0]
                started = time.perf_counter()
                done = subprocess.run(
                    [source, "-s", str(sessions), "-m", str(messages), "-f", "a@client.test",
                     "-t", "x@elsewhere.test", f"127.0.0.1:{smtp}"],
                    capture_output=True, text=True, timeout=600, check=False)
                wall = time.perf_counter() - started
                text = done.stdout + done.stderr
                temp = [line for line in text.splitlines() if re.search(r"\b4\d\d[ -]", line)]
                out["rounds"].append({"exit": done.returncode, "temp_fails": len(temp),
                                      "first_4xx": temp[:1], "seconds": round(wall, 2),
                                      "load": round(load, 1)})
            out["decisions"] = _decisions(in_http)
            return out
        finally:
            for loop in loops:
                loop.kill()
                loop.wait()
            for proc in reversed(procs):
                proc.stop()
            nats.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=float, default=20.0)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--busy", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps(main(args.rounds, args.idle, args.sessions, args.messages, args.busy),
                     indent=1))
