"""STARTTLS on every connection: smtp-source cannot speak TLS, so this is its stand-in for that
one mode, used for every system alike. One connection per message: connect, EHLO, STARTTLS,
EHLO, MAIL, RCPT, DATA, QUIT, like smtp-source without -d. Runs in its own processes (the
machine's cores are shared with the system measured, as smtp-source's are).

    python -m bench.tlsload HOST PORT MESSAGES SESSIONS SIZE   # prints "sent failed seconds"
"""

from __future__ import annotations

import asyncio
import ssl
import sys
import time

from bench.smtpload import make_body
from mailyard.core import tls_buffers


async def _reply(reader: asyncio.StreamReader) -> int:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed")
        if line[3:4] != b"-":
            return int(line[:3])


async def _expect(reader: asyncio.StreamReader, code: int, what: str) -> None:
    got = await _reply(reader)
    if got != code:
        raise RuntimeError(f"{what}: {got}")


async def one_message(host: str, port: int, ctx: ssl.SSLContext, body: bytes) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        await _expect(reader, 220, "greeting")
        writer.write(b"EHLO tls.load.test\r\n")
        await _expect(reader, 250, "EHLO")
        writer.write(b"STARTTLS\r\n")
        await _expect(reader, 220, "STARTTLS")
        await writer.start_tls(ctx, server_hostname=None)
        writer.write(b"EHLO tls.load.test\r\n")
        await _expect(reader, 250, "EHLO after TLS")
        writer.write(b"MAIL FROM:<load@client.test>\r\n")
        await _expect(reader, 250, "MAIL")
        writer.write(b"RCPT TO:<sink@remote.test>\r\n")
        await _expect(reader, 250, "RCPT")
        writer.write(b"DATA\r\n")
        await _expect(reader, 354, "DATA")
        writer.write(body + b".\r\n")
        await _expect(reader, 250, "end of DATA")
        writer.write(b"QUIT\r\n")
        await _reply(reader)
    finally:
        writer.close()


async def run(host: str, port: int, messages: int, sessions: int, size: int) -> tuple[int, int]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the systems measured use self-signed pairs
    body = make_body(size, 0)
    todo = iter(range(messages))
    sent = failed = 0

    async def session() -> None:
        nonlocal sent, failed
        for _ in todo:
            try:
                await one_message(host, port, ctx, body)
                sent += 1
            except (OSError, RuntimeError, ConnectionError, ssl.SSLError) as exc:
                failed += 1
                if failed <= 3:
                    print(f"tlsload: {exc!r}", file=sys.stderr)

    await asyncio.gather(*(session() for _ in range(sessions)))
    return sent, failed


def main() -> int:
    host, port, messages, sessions, size = sys.argv[1:6]
    start = time.perf_counter()
    tls_buffers.lean()  # as the services do: the client shares their cores
    sent, failed = asyncio.run(run(host, int(port), int(messages), int(sessions), int(size)))
    print(sent, failed, f"{time.perf_counter() - start:.3f}")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
