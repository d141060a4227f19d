"""SMTP AUTH under concurrency (issue 14 item 2): how many of N logins at the same moment get
235 on the submission port, how long they wait, and relay-auth's memory meanwhile.

    python -m bench.auth_load [--correct 50] [--memory 100] [--repeat 1]

Processes on 127.0.0.1: a nats-server, relay-auth and smtp-ingress (`python -m ...`, their
defaults: the platform's argon2id parameters, relay-auth's pool of one worker per core),
and this script as the clients (asyncio, STARTTLS then AUTH PLAIN, one connection each).

Phases: `correct` logins at once with the right password (replies counted by code,
latency from AUTH sent to its reply); then `memory` logins at once, half right and half
wrong, then `memory` wrong ones, while relay-auth's RSS is sampled every 20 ms from
/proc (peak reported, and the kernel's VmHWM). The failure limits are raised for the run so
every wrong password is really hashed (a throttled attempt costs nothing). Figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any

from mailyard.api.directory.v1 import directory_pb2 as dpb
from mailyard.core import bus, password_hashes
from mailyard.core.directory import domain_key, record_key
from mailyard.core.natsserver import NatsServer, free_port
from mailyard.testing import ServiceProcess

PASSWORD = "a correct password"  # noqa: S105
USERS = [f"user{i}@example.org" for i in range(20)]


def _rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


async def _reply(reader: asyncio.StreamReader) -> str:
    while True:
        line = (await reader.readline()).decode()
        if not line or line[3:4] != "-":
            return line.strip()


async def _login(port: int, user: str, password: str) -> tuple[str, float]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await _reply(reader)
        for line in ("EHLO bench.test", "STARTTLS"):
            writer.write(f"{line}\r\n".encode())
            await _reply(reader)
        await writer.start_tls(context)
        writer.write(b"EHLO bench.test\r\n")
        await _reply(reader)
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        sent = time.perf_counter()
        writer.write(f"AUTH PLAIN {token}\r\n".encode())
        answer = await asyncio.wait_for(_reply(reader), 300)
        return answer[:3], time.perf_counter() - sent
    finally:
        writer.close()


async def _burst(port: int, logins: list[tuple[str, str]], pid: int) -> dict[str, Any]:
    peak = [_rss_kib(pid)]
    before = peak[0]

    async def sample() -> None:
        while True:
            peak[0] = max(peak[0], _rss_kib(pid))
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    started = time.perf_counter()
    results = [r if isinstance(r, tuple) else (type(r).__name__, 0.0) for r in
               await asyncio.gather(*(_login(port, u, p) for u, p in logins),
                                    return_exceptions=True)]
    wall = time.perf_counter() - started
    sampler.cancel()
    codes: dict[str, int] = {}
    for code, _ in results:
        codes[code] = codes.get(code, 0) + 1
    waits = sorted(w for _, w in results)
    return {"logins": len(logins), "replies": codes, "wall_s": round(wall, 2),
            "auth_p50_s": round(waits[len(waits) // 2], 3), "auth_max_s": round(waits[-1], 3),
            "relay_auth_rss_before_mb": round(before / 1024, 1),
            "relay_auth_rss_peak_mb": round(peak[0] / 1024, 1)}


async def main(correct: int, memory: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mailyard-auth-bench-") as tmp:
        base = Path(tmp)
        nats = NatsServer(base / "js")
        nats.start(base / "nats.log")
        procs: list[ServiceProcess] = []
        try:
            nc = await bus.connect(nats.url, "bench")
            js = nc.jetstream()
            kv = await bus.ensure_kv(js, bus.KV_DIRECTORY)
            await kv.put(domain_key("example.org"),
                         dpb.Domain(name="example.org").SerializeToString())
            stored = password_hashes.hash_password(PASSWORD)
            for user in USERS:
                await kv.put(record_key("mailbox", user),
                             dpb.Mailbox(address=user, password_hash=stored).SerializeToString())
            control = await bus.ensure_kv(js, bus.KV_CONTROL)
            await control.put("tcp.smtp", b"127.0.0.1:allow\n")
            await nc.close()
            grpc_port, ra_http, in_http, sub = free_port(), free_port(), free_port(), free_port()
            relay = ServiceProcess("mailyard.relay_auth", {
                "MAILYARD_RELAYAUTH_NATS_URL": nats.url,
                "MAILYARD_RELAYAUTH_GRPC_PORT": str(grpc_port),
                "MAILYARD_RELAYAUTH_HTTP_PORT": str(ra_http),
                "MAILYARD_RELAYAUTH_AUTH_FAIL_LIMIT_IP": "1000000",
                "MAILYARD_RELAYAUTH_AUTH_FAIL_LIMIT_USER": "1000000",
            }, base / "logs", http_port=ra_http).start()
            procs.append(relay)
            procs.append(ServiceProcess("mailyard.smtp_ingress", {
                "MAILYARD_INGRESS_NATS_URL": nats.url,
                "MAILYARD_INGRESS_SPOOL_DIR": str(base / "spool"),
                "MAILYARD_INGRESS_TLS_DIR": str(base / "tls"),
                "MAILYARD_INGRESS_SMTP_PORT": str(free_port()),
                "MAILYARD_INGRESS_SUBMISSION_PORT": str(sub),
                "MAILYARD_INGRESS_SMTPS_PORT": "0",
                "MAILYARD_INGRESS_HTTP_PORT": str(in_http),
                "MAILYARD_INGRESS_RELAY_AUTH_ADDR": f"127.0.0.1:{grpc_port}",
                "MAILYARD_INGRESS_REVERSE_DNS": "false",
                "MAILYARD_INGRESS_MAX_PER_IP": "1000",  # every client is 127.0.0.1
                "MAILYARD_INGRESS_ME": "mx.bench.test",
            }, base / "logs", http_port=in_http).start())
            assert relay.proc is not None
            pid = relay.proc.pid
            await _login(sub, USERS[0], PASSWORD)  # warm up: channel, pool, TLS
            out: dict[str, Any] = {"cpus": os.cpu_count(), "load_before": os.getloadavg()[0]}
            out["correct"] = await _burst(
                sub, [(USERS[i % len(USERS)], PASSWORD) for i in range(correct)], pid)
            out["mixed"] = await _burst(sub, [
                (USERS[i % len(USERS)], PASSWORD if i % 2 else f"wrong {i}")
                for i in range(memory)], pid)
            out["wrong"] = await _burst(
                sub, [(USERS[i % len(USERS)], f"wrong {i}") for i in range(memory)], pid)
            out["relay_auth_vmhwm_mb"] = round(_rss_kib(pid, "VmHWM") / 1024, 1)
            out["load_after"] = os.getloadavg()[0]
            return out
        finally:
            for proc in reversed(procs):
                proc.stop()
            nats.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--correct", type=int, default=50)
    parser.add_argument("--memory", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    for _ in range(args.repeat):
        print(json.dumps(asyncio.run(main(args.correct, args.memory)), indent=1))
