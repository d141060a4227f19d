"""The session's input loop fed raw bytes over a real socket (chasquid's FuzzConnection is
the model). Every input in fuzz_corpus/ (interesting sessions: smuggling, injection, long
lines, odd addresses, garbage) and FUZZ_CASES mutations of them (seeded, so a run can be
repeated with FUZZ_SEED) go to a real ingress; whatever the bytes, every reply must be a
well-formed SMTP reply, never the internal-error 421, no session may log a traceback, and
the server must still greet afterwards. A bounded run (FUZZ_CASES, default 60) is part of
make test; a longer one: FUZZ_CASES=5000 pytest .../test_fuzz_session.py. An input that
fails is written to fuzz_corpus/crash-<hash> and becomes a regression case from then on.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import re
from pathlib import Path

import pytest
from ingress_helpers import Client, MakeIngress, seed_directory, wait_for

from mailyard.smtp_ingress import replies as R
from mailyard.smtp_ingress.server import Ingress

CORPUS = Path(__file__).parent / "fuzz_corpus"
REPLY = re.compile(rb"^[2-5][0-9][0-9][ -][^\r\n]*$")
_SPICE = [b"\r\n", b"\n", b"\r", b"\x00", b".", b"..", b"\r\n.\r\n", b"<", b">", b"@", b'"',
          b"DATA\r\n", b"RSET\r\n", b"STARTTLS\r\n", b"AUTH PLAIN\r\n", b"\xff", b" " * 3,
          b" x", b" <a@b>", b" SIZE=1", b" =", b":"]


def _corpus() -> list[bytes]:
    return [p.read_bytes() for p in sorted(CORPUS.iterdir()) if p.is_file()]


def _mutate(rng: random.Random, seeds: list[bytes]) -> bytes:
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.randint(1, 6)):
        at = rng.randint(0, len(data))
        action = rng.randrange(5)
        ends = [m.start() for m in re.finditer(rb"\r\n", bytes(data))]
        if action == 4 and ends:  # an argument added to a command (or a line of DATA)
            at = rng.choice(ends)
            data[at:at] = rng.choice(_SPICE)
        elif action == 0 and data:
            data[min(at, len(data) - 1)] = rng.randrange(256)
        elif action == 1:
            data[at:at] = rng.choice(_SPICE)
        elif action == 2:
            del data[at:at + rng.randint(1, 16)]
        else:
            other = rng.choice(seeds)
            start = rng.randint(0, len(other))
            data[at:at] = other[start:start + rng.randint(1, 64)]
    return bytes(data)


async def _run_one(ingress: Ingress, data: bytes, rng: random.Random) -> list[bytes]:
    """Send `data` in random pieces, close our side, read every reply until EOF."""
    client = await Client.connect(ingress.ports["smtp"])
    try:
        at = 0
        while at < len(data):
            step = rng.randint(1, 4096)
            await client.send(data[at:at + step])
            at += step
        client.writer.write_eof()
    except ConnectionError:
        pass  # the server closed first (e.g. bare LF in DATA): what it said still counts
    out = b""
    try:
        async with asyncio.timeout(20):
            while chunk := await client.reader.read(65536):
                out += chunk
    except ConnectionError:
        pass
    await client.close()
    return out.split(b"\r\n")[:-1] if out.endswith(b"\r\n") else out.split(b"\r\n")


def _problem(lines: list[bytes], caplog: pytest.LogCaptureFixture) -> str:
    for line in lines:
        if not REPLY.match(line):
            return f"malformed reply line {line[:80]!r}"
        if line.decode("utf-8", "replace") == R.INTERNAL_ERROR:
            return "internal error reply"
    failed = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    return f"logged: {failed[0].getMessage()}" if failed else ""


async def test_fuzz_the_input_loop(make_ingress: MakeIngress, js: object,
                                   caplog: pytest.LogCaptureFixture) -> None:
    # relay-auth is not running: a short deadline keeps each connection's check quick
    local = await make_ingress(relay_auth_timeout=0.05)
    await seed_directory(js, "example.org", ["alice@example.org", "bob@example.org"])
    await wait_for(lambda: local.directory.accepts("bob@example.org"))
    seed = int(os.environ.get("FUZZ_SEED", "1"))
    cases = int(os.environ.get("FUZZ_CASES", "60"))
    rng = random.Random(seed)
    seeds = _corpus()
    assert seeds, "the corpus is empty"
    inputs = seeds + [_mutate(rng, seeds) for _ in range(cases)]
    for number, data in enumerate(inputs):
        caplog.clear()
        lines = await _run_one(local, data, rng)
        problem = _problem(lines, caplog)
        if problem:
            name = CORPUS / f"crash-{hashlib.sha256(data).hexdigest()[:12]}"
            name.write_bytes(data)
            pytest.fail(f"input {number} (seed {seed}, kept as {name.name}): {problem}")
    client = await Client.connect(local.ports["smtp"])  # still serving
    assert (await client.reply()).startswith("220 ")
    await client.close()
