"""A next hop for the container test: an SMTP server that writes every message it takes to
OUT/<n>.eml (envelope first), run in a container of Mailyard's image on the compose network.

    python sink.py PORT OUT
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys

counter = itertools.count()


async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, out: str) -> None:
    writer.write(b"220 sink ESMTP\r\n")
    sender, rcpts, data, in_data = b"", [], [], False
    while line := await reader.readline():
        if in_data:
            if line == b".\r\n":
                name = os.path.join(out, f"{next(counter)}.eml")
                with open(name + ".tmp", "wb") as f:
                    f.write(b"X-Sink-From: " + sender + b"\r\nX-Sink-To: " + b",".join(rcpts)
                            + b"\r\n" + b"".join(data))
                os.replace(name + ".tmp", name)
                writer.write(b"250 2.0.0 kept\r\n")
                sender, rcpts, data, in_data = b"", [], [], False
            else:
                data.append(line[1:] if line.startswith(b"..") else line)
            continue
        verb = line[:4].upper()
        if verb in (b"EHLO", b"HELO"):
            writer.write(b"250-sink\r\n250 8BITMIME\r\n" if verb == b"EHLO" else b"250 sink\r\n")
        elif verb == b"MAIL":
            sender = line.split(b":", 1)[1].strip().split(b" ")[0].strip(b"<>")
            writer.write(b"250 2.1.0 ok\r\n")
        elif verb == b"RCPT":
            rcpts.append(line.split(b":", 1)[1].strip().strip(b"<>"))
            writer.write(b"250 2.1.5 ok\r\n")
        elif verb == b"DATA":
            in_data = True
            writer.write(b"354 go ahead\r\n")
        elif verb == b"QUIT":
            writer.write(b"221 2.0.0 bye\r\n")
            await writer.drain()
            break
        else:  # RSET, NOOP
            writer.write(b"250 2.0.0 ok\r\n")
        await writer.drain()
    writer.close()


async def main(port: int, out: str) -> None:
    # all interfaces of its container: remote-delivery reaches it over the compose network
    server = await asyncio.start_server(lambda r, w: session(r, w, out), "0.0.0.0", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
