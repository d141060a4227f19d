"""Bad input to the `mailyard` command: one line on stderr, exit 1, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mailyard.core.natsserver import free_port


def mailyard(*argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    closed = f"127.0.0.1:{free_port()}"  # no service is needed to refuse these
    env = {**os.environ, "MAILYARD_RELAYAUTH_ADDR": closed, "MAILYARD_DIRECTORY_ADDR": closed,
           "MAILYARD_QUEUE_ADDR": closed}
    proc = subprocess.run([sys.executable, "-m", "mailyard.cli.main", *argv], input=stdin,
                          capture_output=True, env=env, timeout=60, check=False)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(),
                                       proc.stderr.decode())


@pytest.mark.parametrize(("argv", "why"), [
    (("rules", "import", "/nonexistent/tcp.smtp"),
     "mailyard: /nonexistent/tcp.smtp: No such file or directory"),
    (("rules", "import", "/"), "mailyard: /: Is a directory"),
])
def test_unreadable_files_are_one_line(argv: tuple[str, ...], why: str) -> None:
    done = mailyard(*argv)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", why + "\n")


def test_binary_input_is_one_line(tmp_path: Path) -> None:
    rules = tmp_path / "tcp.smtp"
    rules.write_bytes(b"127.:allow\n\xff\xfe\n")
    done = mailyard("rules", "import", str(rules))
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("mailyard: input is not UTF-8 text") and \
        done.stderr.count("\n") == 1
    done = mailyard("control", "set", "badmailfrom", stdin=b"\xff\n")
    assert done.returncode == 1 and done.stderr.startswith("mailyard: input is not UTF-8")


@pytest.mark.parametrize("ttl", ["0", "-5", str(367 * 86400), str(10**20)])
def test_a_lease_ttl_out_of_range_is_one_line(ttl: str) -> None:
    done = mailyard("lease", "grant", "192.0.2.7", "--user", "a@example.org", "--ttl", ttl)
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert done.stderr.startswith("mailyard: --ttl must be") and \
        done.stderr.count("\n") == 1, done.stderr


@pytest.mark.parametrize(("argv", "why"), [
    # numbers a protobuf field cannot hold (uint32, uint64) and times outside 1..9999
    (("user", "quota", "joe@example.com", "--", "-1"), "argument bytes"),
    (("user", "quota", "joe@example.com", "1", "--messages", str(2**64)), "--messages"),
    (("user", "add", "joe@example.com", "--password-hash", "x", "--quota", "-5"), "--quota"),
    (("log", "--limit", "-1"), "--limit"),
    (("log", "--limit", str(2**32)), "--limit"),
    (("queue", "list", "--limit", "-1"), "--limit"),
    (("log", "--since", "99999999999999"), "--since"),
    (("log", "--since", "0001-01-01T00:00:00+14:00"), "--since"),
    (("log", "--until", "9999-12-31T23:59:59-14:00"), "--until"),
    (("log", "--since", "99999999999w"), "--since"),
])
def test_numbers_out_of_range_are_a_usage_error(argv: tuple[str, ...], why: str) -> None:
    done = mailyard(*argv)
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert "Traceback" not in done.stderr and why in done.stderr.splitlines()[-1], done.stderr


def test_a_reader_that_went_away_ends_the_command_quietly() -> None:
    """`mailyard ... | head`: once the reader has gone, the command stops as cat does (no
    message, the shell's 141 for SIGPIPE), not "mailyard: Broken pipe" or Python's
    "Exception ignored ... BrokenPipeError" at exit."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    try:
        proc = subprocess.run([sys.executable, "-m", "mailyard.cli.main", "auth", "tokens"],
                              stdout=write, stderr=subprocess.PIPE, timeout=60, check=False)
    finally:
        os.close(write)
    assert proc.stderr.decode() == ""
    assert proc.returncode == 141
