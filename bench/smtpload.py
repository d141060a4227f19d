"""A small SMTP load generator (smtp-source's job): N messages over C concurrent sessions,
recording for each message the time from the final dot to the 250 reply."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# what one message is: (envelope sender, the message) for its index
Messages = Callable[[int], tuple[str, bytes]]


@dataclass
class LoadResult:
    sent: int = 0
    failed: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # end of DATA -> reply
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def make_body(size: int, index: int) -> bytes:
    head = (f"From: load@client.test\r\nTo: sink@remote.test\r\nSubject: load {index}\r\n"
            "\r\n").encode()
    line = b"x" * 76 + b"\r\n"
    body = head
    while len(body) < size:
        body += line
    return body[:size - 2] + b"\r\n" if len(body) > size else body


async def _reply(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    lines = []
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed")
        lines.append(line)
        if line[3:4] != b"-":
            return int(line[:3]), b"".join(lines)


async def _session(host: str, port: int, jobs: asyncio.Queue[int], result: LoadResult,
                   size: int, recipient: str, rate_gate: asyncio.Semaphore | None,
                   messages: Messages | None, source: str, helo: str) -> None:
    reader, writer = await asyncio.open_connection(
        host, port, local_addr=(source, 0) if source else None)
    try:
        await _reply(reader)
        writer.write(f"EHLO {helo}\r\n".encode())
        await _reply(reader)
        while True:
            try:
                index = jobs.get_nowait()
            except asyncio.QueueEmpty:
                break
            if rate_gate is not None:
                await rate_gate.acquire()
            sender, body = (messages(index) if messages is not None
                            else ("load@client.test", make_body(size, index)))
            writer.write(f"MAIL FROM:<{sender}>\r\nRCPT TO:<{recipient}>\r\nDATA\r\n"
                         .encode())
            codes = [(await _reply(reader))[0] for _ in range(3)]
            if codes != [250, 250, 354]:
                result.failed += 1
                result.errors.append(f"envelope {codes}")
                writer.write(b"RSET\r\n")
                await _reply(reader)
                continue
            writer.write(body + b".\r\n")
            start = time.perf_counter()
            code, text = await _reply(reader)
            result.latencies.append(time.perf_counter() - start)
            if code == 250:
                result.sent += 1
            else:
                result.failed += 1
                result.errors.append(text.decode(errors="replace").strip())
        writer.write(b"QUIT\r\n")
        await writer.drain()
    finally:
        writer.close()


async def run_load(host: str, port: int, messages: int, concurrency: int = 50,
                   size: int = 1024, recipient: str = "sink@remote.test",
                   rate: float = 0.0, given: Messages | None = None, source: str = "",
                   helo: str = "load.test") -> LoadResult:
    """Send `messages` over `concurrency` sessions; `rate` > 0 caps messages per second.
    `given` makes each message (sender and bytes, dot-stuffed, CRLF-terminated) instead of
    make_body's; `source` is the client address to connect from (e.g. 127.0.0.2)."""
    jobs: asyncio.Queue[int] = asyncio.Queue()
    for i in range(messages):
        jobs.put_nowait(i)
    result = LoadResult()
    gate: asyncio.Semaphore | None = None
    feeder: asyncio.Task[None] | None = None
    if rate > 0:
        gate = asyncio.Semaphore(0)

        async def feed() -> None:
            assert gate is not None
            interval = 1 / rate
            next_at = time.perf_counter()
            while True:
                gate.release()
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

        feeder = asyncio.create_task(feed())
    start = time.perf_counter()
    outcomes = await asyncio.gather(
        *(_session(host, port, jobs, result, size, recipient, gate, given, source, helo)
          for _ in range(concurrency)), return_exceptions=True)
    result.seconds = time.perf_counter() - start
    if feeder:
        feeder.cancel()
    result.errors += [repr(o) for o in outcomes if isinstance(o, BaseException)]
    return result
