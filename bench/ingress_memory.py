"""smtp-ingress memory under large uploads: N concurrent clients each send one message of
SIZE MB (default 100 x 10 MB, issue 14 item 8: target under 300 MB RSS for the ingress).

    python -m bench.ingress_memory [--connections 100] [--size-mb 10] [--data-memory BYTES]

Processes on 127.0.0.1: a nats-server, one smtp-ingress (`python -m mailyard.smtp_ingress`,
the real entry point) and this module as the clients. All connections are opened and sent
DATA at once, each body written in 64 KB pieces as fast as the ingress reads. The ingress's
RSS is sampled every 50 ms from /proc, and its VmHWM (the kernel's peak) read at the end.
Reported: the peak, the RSS before the upload, how many got 250, the time taken. Figures
only, no assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

from mailyard.api.directory.v1 import directory_pb2 as dpb
from mailyard.core import bus
from mailyard.core.directory import domain_key, record_key
from mailyard.core.natsserver import NatsServer, free_port
from mailyard.testing import ServiceProcess


def _status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


async def _seed(nats_url: str) -> None:
    nc = await bus.connect(nats_url, "bench-seed")
    js = nc.jetstream()
    kv = await bus.ensure_kv(js, bus.KV_DIRECTORY)
    await kv.put(domain_key("example.org"), dpb.Domain(name="example.org").SerializeToString())
    await kv.put(record_key("mailbox", "alice@example.org"),
                 dpb.Mailbox(address="alice@example.org").SerializeToString())
    await nc.close()


async def _expect(reader: asyncio.StreamReader, code: bytes) -> bytes:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed")
        if line[3:4] != b"-":
            if not line.startswith(code):
                raise RuntimeError(line.decode(errors="replace").strip())
            return line


async def _client(port: int, body: bytes, start: asyncio.Event) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await _expect(reader, b"220")
        for line, code in ((b"EHLO bench.test", b"250"), (b"MAIL FROM:<a@bench.test>", b"250"),
                           (b"RCPT TO:<alice@example.org>", b"250"), (b"DATA", b"354")):
            writer.write(line + b"\r\n")
            await _expect(reader, code)
        await start.wait()
        view = memoryview(body)
        for offset in range(0, len(body), 65536):
            writer.write(view[offset:offset + 65536])
            await writer.drain()
        writer.write(b".\r\n")
        await _expect(reader, b"250")
        writer.write(b"QUIT\r\n")
        return True
    except (RuntimeError, ConnectionError) as exc:
        print("client:", exc)
        return False
    finally:
        writer.close()


async def _run(args: argparse.Namespace, work: Path) -> dict[str, object]:
    nats = NatsServer(work / "nats")
    nats.start()
    port, http = free_port(), free_port()
    env = {"MAILYARD_INGRESS_NATS_URL": nats.url,
           "MAILYARD_INGRESS_SPOOL_DIR": str(work / "spool"),
           "MAILYARD_INGRESS_TLS_DIR": str(work / "tls"),
           "MAILYARD_INGRESS_HTTP_PORT": str(http),
           "MAILYARD_INGRESS_SMTP_PORT": str(port),
           "MAILYARD_INGRESS_SUBMISSION_PORT": "0", "MAILYARD_INGRESS_SMTPS_PORT": "0",
           "MAILYARD_INGRESS_REVERSE_DNS": "false", "MAILYARD_INGRESS_ME": "mx.bench",
           "MAILYARD_INGRESS_PUBLISH_TIMEOUT": "30", "MAILYARD_INGRESS_MAX_PER_IP": "10000"}
    if args.data_memory is not None:
        env["MAILYARD_INGRESS_DATA_MEMORY"] = str(args.data_memory)
    await _seed(nats.url)
    proc = ServiceProcess("mailyard.smtp_ingress", env, work / "logs", http_port=http).start()
    try:
        assert proc.proc is not None
        pid = proc.proc.pid
        await asyncio.sleep(1.0)  # the directory view loads
        line = b"x" * 76 + b"\r\n"
        body = b"Subject: bench\r\n\r\n" + line * (args.size_mb * 1024 * 1024 // len(line))
        start = asyncio.Event()
        clients = [asyncio.create_task(_client(port, body, start))
                   for _ in range(args.connections)]
        await asyncio.sleep(2.0)  # every session in DATA
        before = _status_kb(pid, "VmRSS")
        peak = before
        began = time.monotonic()
        start.set()
        done = asyncio.gather(*clients)
        while not done.done():
            peak = max(peak, _status_kb(pid, "VmRSS"))
            await asyncio.sleep(0.05)
        seconds = time.monotonic() - began
        results = done.result()
        hwm = _status_kb(pid, "VmHWM")
    finally:
        proc.stop()
        nats.stop()
    return {"connections": args.connections, "size_mb": args.size_mb,
            "data_memory": args.data_memory, "accepted": sum(results),
            "rss_before_mb": round(before / 1024, 1), "rss_peak_sampled_mb": round(peak / 1024, 1),
            "vm_hwm_mb": round(hwm / 1024, 1), "seconds": round(seconds, 1),
            "load_average": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--size-mb", type=int, default=10)
    parser.add_argument("--data-memory", type=int, default=None,
                        help="MAILYARD_INGRESS_DATA_MEMORY (default: the ingress's own)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ingress-memory-") as work:
        print(json.dumps(asyncio.run(_run(args, Path(work))), indent=2))


if __name__ == "__main__":
    main()
