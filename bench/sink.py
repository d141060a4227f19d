"""A fast SMTP sink for benchmarks (like Postfix's smtp-sink): accepts everything, keeps
nothing, and writes how many messages it took to a file ten times a second.

    python -m bench.sink PORT COUNT_FILE [DELAY_SECONDS]
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

count = 0
active = 0
peak = 0


async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  delay: float) -> None:
    global count, active, peak
    writer.write(b"220 sink ESMTP\r\n")
    in_data = False
    try:
        while line := await reader.readline():
            if in_data:
                if line == b".\r\n":
                    in_data = False
                    if delay:
                        active += 1
                        peak = max(peak, active)
                        await asyncio.sleep(delay)
                        active -= 1
                    count += 1
                    writer.write(b"250 2.0.0 ok\r\n")
                continue
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                             b"250 SIZE 104857600\r\n")
            elif verb == b"DATA":
                in_data = True
                writer.write(b"354 go ahead\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
            else:
                writer.write(b"250 ok\r\n")
            if reader._buffer:  # type: ignore[attr-defined]  # pipelined: answer in one write
                continue
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def main(port: int, count_file: Path, delay: float) -> None:
    server = await asyncio.start_server(lambda r, w: session(r, w, delay), "127.0.0.1", port,
                                        backlog=1024)
    async with server:
        while True:
            count_file.write_text(f"{count} {peak}\n")
            await asyncio.sleep(0.1)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), Path(sys.argv[2]),
                     float(sys.argv[3]) if len(sys.argv) > 3 else 0.0))
