"""NATS or the spool unavailable: 451 4.3.0, nothing committed, not ready, and recovery
without a restart. Plus the real entry point with /readyz and /metrics."""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ingress_helpers import (
    MakeIngress,
    committed,
    seed_directory,
    session,
    todo_count,
    wait_for,
)

from mailyard.core.natsserver import NatsServer, free_port
from mailyard.smtp_ingress import replies as R
from mailyard.smtp_ingress.server import Ingress
from mailyard.testing import ServiceProcess


async def _send(ingress: Ingress) -> str:
    client = await session(ingress.ports["smtp"])
    for line in ("MAIL FROM:<a@b.test>", "RCPT TO:<alice@example.org>"):
        assert (await client.cmd(line)).startswith("250"), line
    assert await client.cmd("DATA") == R.GO_AHEAD
    await client.send("Subject: durable\r\n\r\nx\r\n.\r\n")
    reply = await client.reply()
    await client.cmd("QUIT")
    await client.close()
    return reply


async def test_nats_down_then_back(local: Ingress, nats_server: NatsServer, js: Any) -> None:
    nats_server.stop()
    reply = ""
    for _ in range(100):  # until the client notices the outage
        if not local.bus_ready():
            break
        import asyncio

        await asyncio.sleep(0.05)
    assert not local.ready()
    reply = await _send(local)
    assert reply == R.NOT_ACCEPTED
    assert committed(local) == []
    nats_server.start()
    import asyncio

    for _ in range(400):
        if local.ready():
            break
        await asyncio.sleep(0.05)
    assert local.ready()
    assert (await _send(local)).startswith("250 ok ")
    assert len(committed(local)) == 1


async def test_spool_unwritable_then_back(local: Ingress, js: Any) -> None:
    tmp = local.spool.tmp
    shutil.rmtree(tmp)
    tmp.write_text("not a directory")  # every commit now fails
    assert not local.spool_writable() and not local.ready()
    assert await _send(local) == R.NOT_ACCEPTED
    assert committed(local) == [] and await todo_count(js) == 0
    tmp.unlink()
    tmp.mkdir()
    assert local.ready()
    assert (await _send(local)).startswith("250 ok ")


def test_entry_point_readyz_and_metrics(nats_server: NatsServer, tmp_path: Path) -> None:
    http = free_port()
    proc = ServiceProcess("mailyard.smtp_ingress", {
        "MAILYARD_INGRESS_NATS_URL": nats_server.url,
        "MAILYARD_INGRESS_SPOOL_DIR": str(tmp_path / "spool"),
        "MAILYARD_INGRESS_TLS_DIR": str(tmp_path / "tls"),
        "MAILYARD_INGRESS_HTTP_PORT": str(http),
        "MAILYARD_INGRESS_SMTP_PORT": str(free_port()),
        "MAILYARD_INGRESS_SUBMISSION_PORT": "0",
        "MAILYARD_INGRESS_SMTPS_PORT": "0",
        "MAILYARD_INGRESS_ME": "mx.test",
    }, tmp_path / "logs", http_port=http).start()
    try:
        assert (tmp_path / "tls" / "smtp-cert.pem").exists()
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        for name in ("mailyard_smtp_connections_total", "mailyard_smtp_sessions_active",
                     "mailyard_smtp_commit_seconds_bucket", "mailyard_build_info"):
            assert name in text or name.replace("_total", "") in text, name
    finally:
        assert proc.stop() == 0


def test_unsafe_settings_refused(tmp_path: Path) -> None:
    proc = ServiceProcess("mailyard.smtp_ingress", {
        "MAILYARD_INGRESS_TLS_CERT": "/x.pem", "MAILYARD_INGRESS_RCPT_CHECKS": "nope"},
        tmp_path)
    proc.start()
    assert proc.proc is not None and proc.proc.wait(30) == 2
    assert "refusing to start" in proc.logs()


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    """A 20 MB tmpfs of our own: a full disk, for real, without touching the machine's."""
    mountpoint = tmp_path / "volume"
    mountpoint.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m,mode=0700", "tmpfs",
                           str(mountpoint)], check=False, capture_output=True, text=True)
    if done.returncode != 0:
        reason = f"cannot mount a tmpfs (needs root): {done.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


async def test_full_spool_gets_452_at_mail_and_not_ready(make_ingress: MakeIngress, js: Any,
                                                         small_volume: Path) -> None:
    """Below max(SPOOL_MIN_FREE, 1.5 x databytes) free, MAIL gets 452 4.3.1 before any byte
    of DATA is sent, /readyz says not ready; freeing space is enough to recover."""
    ingress = await make_ingress(spool_dir=small_volume / "spool")
    await seed_directory(js, "example.org", ["alice@example.org"])
    await wait_for(lambda: ingress.directory.accepts("alice@example.org"))
    assert ingress.databytes() == 10485760 and ingress.ready()  # 15 MB must stay free
    free = os.statvfs(small_volume).f_bavail * os.statvfs(small_volume).f_frsize
    filler = small_volume / "filler"
    filler.write_bytes(b"x" * (free - 12000000))  # 12 MB left: a message would still fit
    client = await session(ingress.ports["smtp"])
    assert await client.cmd("MAIL FROM:<a@b.test>") == R.INSUFFICIENT_STORAGE
    assert not ingress.ready() and ingress.spool_writable()
    filler.unlink()
    assert ingress.ready()
    assert await client.cmd("MAIL FROM:<a@b.test> SIZE=6000000") == R.INSUFFICIENT_STORAGE
    assert (await _send(ingress)).startswith("250 ok ")


def test_rcpt_checks_without_rcpthosts_refused(tmp_path: Path) -> None:
    """A check list without the relay decision would make an open relay: no start."""
    proc = ServiceProcess("mailyard.smtp_ingress", {
        "MAILYARD_INGRESS_RCPT_CHECKS": "rcpt_limit,rcpt_unknown_user"}, tmp_path)
    proc.start()
    assert proc.proc is not None and proc.proc.wait(30) == 2
    lines = [line for line in proc.logs().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("mailyard-smtp-ingress: refusing to start: ")
    assert "MAILYARD_INGRESS_RCPT_CHECKS" in lines[0] and "open relay" in lines[0]
