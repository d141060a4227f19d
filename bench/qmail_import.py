"""How long `mailyard import qmail` takes for a big vpopmail host: 1,000 users and 100,000
messages by default (10 domains of 100 users, 100 messages each, a fifth of them in a .Sent
folder, sizes 1-8 KiB, flags on most), hashes DES / $1$ / $6$ as on old hosts.

    .venv/bin/python -m bench.qmail_import [--users 1000] [--messages 100] [--keep]

Starts a platform of its own (nats-server and every service, free ports, a temporary data
dir), writes the old host's tree next to it, then times three runs of the real command
(a subprocess, as an operator runs it): the dry run, the import, and a second import over
the result (what a re-run before the cut-over costs). Prints seconds, messages/s and MB/s.
Figures only: nothing here asserts. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mailyard.cli.platform import Platform, free_ports
from tests.qmail_tree import OLD_HOME, crypt

DOMAINS = 10
SCHEMES = ("ab", "$1$bench$", "$6$benchsalt$")


def generate(root: Path, users: int, per_user: int) -> tuple[Path, Path, int]:
    """The old host's qmail and vpopmail trees; returns them and the bytes of mail."""
    rng = random.Random(17)
    qmail, vpop = root / "var" / "qmail", root / "home" / "vpopmail"
    (qmail / "control").mkdir(parents=True)
    (qmail / "users").mkdir(parents=True)
    domains = [f"d{i:02d}.bench.test" for i in range(DOMAINS)]
    (qmail / "control" / "rcpthosts").write_text("".join(f"{d}\n" for d in domains))
    (qmail / "users" / "assign").write_text("".join(
        f"+{d}-:{d}:89:89:{OLD_HOME}/domains/{d}:-::\n" for d in domains) + ".\n")
    hashes = {s: crypt("bench-password", s) for s in SCHEMES}   # crypt is the slow part
    total = 0
    body = bytes(rng.getrandbits(8) % 94 + 32 for _ in range(8192))
    for n, domain in enumerate(domains):
        ddir = vpop / "domains" / domain
        ddir.mkdir(parents=True)
        lines = []
        count = users // DOMAINS + (1 if n < users % DOMAINS else 0)
        for u in range(count):
            name = f"user{u:04d}"
            lines.append(f"{name}:{hashes[SCHEMES[u % 3]]}:1:0:User {u}:"
                         f"{OLD_HOME}/domains/{domain}/{name}:50000000S:bench-password\n")
            maildir = ddir / name / "Maildir"
            for folder in (maildir, maildir / ".Sent"):
                for sub in ("cur", "new", "tmp"):
                    (folder / sub).mkdir(parents=True)
            (maildir / ".Sent" / "maildirfolder").write_bytes(b"")
            for m in range(per_user):
                size = rng.randint(1024, 8192)
                data = (f"From: a@old.test\nSubject: message {m}\n\n".encode()
                        + body[:size])
                base = f"{1065871320 + m}.M{m}P{u}.mx1,S={len(data)}"
                if m % 5 == 0:
                    path = maildir / ".Sent" / "cur" / f"{base}:2,S"
                elif m % 7 == 0:
                    path = maildir / "new" / base
                else:
                    path = maildir / "cur" / f"{base}:2,{'RS' if m % 3 else 'S'}"
                path.write_bytes(data)
                total += len(data)
        (ddir / "vpasswd").write_text("".join(lines))
        (ddir / ".qmail-default").write_text(
            f"| {OLD_HOME}/bin/vdelivermail '' bounce-no-mailbox\n")
        (ddir / ".qmail-info").write_text("&user0000@" + domain + "\n")
    return qmail, vpop, total


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    return time.monotonic() - started, proc.returncode, proc.stdout + proc.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=100, help="per user")
    parser.add_argument("--keep", action="store_true", help="leave the data dir behind")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mailyard-import-bench-", dir=".bench"
                                 if Path(".bench").is_dir() else None))
    print(f"data: {work}")
    started = time.monotonic()
    qmail, vpop, total = generate(work / "old", args.users, args.messages)
    messages = args.users * args.messages
    print(f"generated {args.users} users, {messages} messages, {total / 1e6:.0f} MB "
          f"in {time.monotonic() - started:.0f}s")
    platform = Platform(work / "platform", ports=free_ports())
    platform.start()
    try:
        env = {**os.environ, **platform.cli_env()}
        base = [sys.executable, "-m", "mailyard.cli.main", "import", "qmail",
                "--qmail-dir", str(qmail), "--vpopmail-dir", str(vpop), "--tcp-smtp", "",
                "--mail-dir", str(platform.mail_dir)]
        os.sync()
        for label, extra in (("dry run", ["--dry-run"]), ("import", []), ("re-run", [])):
            seconds, code, out = timed(base + extra, env)
            tail = [line for line in out.splitlines() if line.startswith(("mail:", "#"))]
            print(f"{label:8s} {seconds:7.1f}s  exit {code}  {messages / seconds:8.0f} msg/s  "
                  f"{total / 1e6 / seconds:6.1f} MB/s  {' | '.join(tail)}")
    finally:
        platform.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
