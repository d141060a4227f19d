"""What one SMTP connection costs smtp-ingress, with no message and with one (part of `make bench`).

The platform as `make run` starts it, but with one ingress process, so that every connection
lands in the process whose CPU time (/proc: utime + stime) is read:

  bare    connect, greeting, EHLO, QUIT and nothing else (a Python client: smtp-source
          always sends a message; the client's own cost is not counted)
  conn    smtp-source, a message of 1 KB per connection, relayed to smtp-sink
  reuse   smtp-source -d, the messages over 50 connections

Reported: smtp-ingress CPU per connection (bare) and per message (conn, reuse); conn minus
reuse is what a connection adds to a message. Medians of alternating rounds. Figures only.

    python -m bench.sessions [--rounds 3] [--count 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.field import DATA, SESSIONS, Sink, source
from bench.proc import cpu_seconds
from mailyard.cli.platform import Platform, free_ports


async def _bare(port: int, count: int, concurrency: int = SESSIONS) -> None:
    """`count` connections that say EHLO and QUIT, `concurrency` at a time."""
    slots = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with slots:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            if not (await reader.readline()).startswith(b"220"):
                raise SystemExit("bench.sessions: no greeting")
            writer.write(b"EHLO client.test\r\n")
            while (await reader.readline())[3:4] == b"-":
                pass
            writer.write(b"QUIT\r\n")
            await reader.readline()
            writer.close()
            await writer.wait_closed()

    await asyncio.gather(*(one() for _ in range(count)))


def measure(mode: str, platform: Platform, sink: Sink, count: int) -> float:
    """smtp-ingress CPU in µs per connection (bare) or per message."""
    (pid,) = [run.proc.pid for name, run in platform.running.items()
              if name.startswith("smtp-ingress")]
    before = cpu_seconds(pid)
    if mode == "bare":
        asyncio.run(_bare(platform.ports.smtp, count))
    else:
        arrived = sink.messages
        proc = source(platform.ports.smtp, count, SESSIONS, 1024, reuse=mode == "reuse")
        _, err = proc.communicate(timeout=600)
        if proc.returncode:
            raise SystemExit(f"bench.sessions: smtp-source exit {proc.returncode}: "
                             f"{err.decode(errors='replace').strip()[:200]}")
        sink.wait(arrived + count, 300, stall=60)  # the queue drained: the next round is clean
        if sink.messages < arrived + count:
            raise SystemExit(f"bench.sessions: {sink.messages - arrived} of {count} messages "
                             "reached the sink")
    return (cpu_seconds(pid) - before) * 1e6 / count


def run(rounds: int, count: int) -> dict[str, list[float]]:
    """µs of smtp-ingress CPU per connection (bare) or message (conn, reuse), per round."""
    DATA.mkdir(parents=True, exist_ok=True)
    sink = Sink()
    platform = Platform(Path(tempfile.mkdtemp(prefix="sessions-", dir=DATA)),
                        ports=free_ports(), ingress_replicas=1)
    figures: dict[str, list[float]] = {"bare": [], "conn": [], "reuse": []}
    try:
        platform.start()
        subprocess.run([sys.executable, "-m", "mailyard.cli.main", "route", "set",
                        "remote.test", f"127.0.0.1:{sink.port}"], check=True,
                       capture_output=True, env={**os.environ, **platform.cli_env()})
        measure("conn", platform, sink, min(500, count))  # warm: caches, imports
        for number in range(1, rounds + 1):
            for mode in (figures if number % 2 else list(figures)[::-1]):
                figures[mode].append(measure(mode, platform, sink, count))
                print(f"round {number}  {mode:<5} smtp-ingress {figures[mode][-1]:6.0f} µs "
                      f"per {'connection' if mode == 'bare' else 'message'}", flush=True)
    finally:
        platform.stop()
        sink.stop()
        shutil.rmtree(DATA, ignore_errors=True)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=5000)
    args = parser.parse_args(argv)
    if not shutil.which("smtp-source"):
        print("bench.sessions needs Debian's postfix (smtp-source, smtp-sink)")
        return 2
    figures = run(args.rounds, args.count)
    med = {mode: statistics.median(values) for mode, values in figures.items()}
    print(f"--- smtp-ingress CPU, medians of {args.rounds} rounds: a connection with no message "
          f"{med['bare']:.0f} µs; a message on its own connection {med['conn']:.0f} µs; "
          f"over reused connections {med['reuse']:.0f} µs (a connection adds "
          f"{med['conn'] - med['reuse']:.0f} µs to a message)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
