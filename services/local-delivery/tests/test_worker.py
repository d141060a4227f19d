"""The worker as JetStream sees it: the shared consumer, concurrencylocal, and the process
(readiness, metrics, SIGTERM, kill -9)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from mailyard.api.mail.v1.delivery_pb2 import OUTCOME_DELIVERED
from mailyard.core import bus
from mailyard.core.errors import SettingsError
from mailyard.core.natsserver import NatsServer
from mailyard.local_delivery.settings import Settings
from mailyard.testing import ServiceProcess, free_port

from .conftest import Env

BODY = b"Subject: w\r\n\r\nworker\r\n"


async def _max_ack_pending(env: Env) -> int:
    info = await env.js.consumer_info(bus.JOBS_STREAM, bus.JOB_CONSUMER["local"])
    return int(info.config.max_ack_pending)


async def test_concurrencylocal_default_and_live_change(env: Env) -> None:
    await env.start()
    assert await _max_ack_pending(env) == 10
    # A killed worker's jobs hold their slots until ack_wait passes: at most 10 s by
    # default (it was 60 s), progress acks every ack_wait / 3 keep a live worker's jobs.
    info = await env.js.consumer_info(bus.JOBS_STREAM, bus.JOB_CONSUMER["local"])
    assert info.config.ack_wait == 10
    assert REGISTRY.get_sample_value("mailyard_delivery_concurrency_limit",
                                     {"channel": "local"}) == 10
    await env.control("concurrencylocal", "3\n")
    deadline = time.monotonic() + 20
    while await _max_ack_pending(env) != 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert await _max_ack_pending(env) == 3
    assert REGISTRY.get_sample_value("mailyard_delivery_concurrency_limit",
                                     {"channel": "local"}) == 3


def test_settings_refuse_program_delivery(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="program delivery"):
        Settings.load(program_delivery=True)
    with pytest.raises(SettingsError):
        Settings.load(over_quota="discard")


def _process(env: Env, port: int, **extra: str) -> ServiceProcess:
    variables = {"MAILYARD_LOCAL_NATS_URL": env.nats_url,
                 "MAILYARD_LOCAL_SPOOL_DIR": str(env.spool.root),
                 "MAILYARD_LOCAL_MAIL_DIR": str(env.mail_dir),
                 "MAILYARD_LOCAL_HTTP_PORT": str(port),
                 "MAILYARD_LOCAL_ME": "mx.example.org", **extra}
    return ServiceProcess("mailyard.local_delivery", variables, env.tmp / "logs", port)


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_process_delivers_reports_metrics_and_stops_on_sigterm(
        env: Env, nats_server: NatsServer) -> None:
    await env.domain("example.org")
    await env.mailbox("alice@example.org")
    port = free_port()
    proc = _process(env, port).start()
    try:
        await env.job("s@sender.test", ["alice@example.org"], BODY)
        assert (await env.result()).results[0].outcome == OUTCOME_DELIVERED
        assert env.messages("alice@example.org") == [
            b"Return-Path: <s@sender.test>\r\nDelivered-To: alice@example.org\r\n" + BODY]
        status, text = _get(port, "/metrics")
        assert status == 200
        assert 'mailyard_local_deliveries_total{result="delivered"} 1.0' in text
        assert "mailyard_local_quota_refusals_total 0.0" in text
        assert "mailyard_local_delivered_bytes_total" in text
        assert 'mailyard_delivery_concurrency_limit{channel="local"} 10.0' in text
        assert 'mailyard_delivery_concurrency_in_use{channel="local"}' in text
        assert _get(port, "/readyz")[0] == 200
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(30) == 0
    finally:
        proc.stop()


async def test_readyz_false_when_mail_dir_gone(env: Env) -> None:
    port = free_port()
    proc = _process(env, port).start()
    try:
        assert _get(port, "/readyz")[0] == 200
        env.mail_dir.rmdir()  # the volume went away under us
        status, body = _get(port, "/readyz")
        assert status == 503 and '"mail_dir":false' in body
    finally:
        proc.stop()


async def test_readyz_false_when_nats_is_down(env: Env, nats_server: NatsServer) -> None:
    port = free_port()
    proc = _process(env, port).start()
    try:
        nats_server.stop()
        deadline = time.monotonic() + 30
        while _get(port, "/readyz")[0] != 503 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        status, body = _get(port, "/readyz")
        assert status == 503 and '"nats":false' in body
        nats_server.start(env.tmp / "nats2.log")  # back, same port and store
        while _get(port, "/readyz")[0] != 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert _get(port, "/readyz")[0] == 200
    finally:
        proc.stop()


async def test_kill_9_loses_nothing(env: Env) -> None:
    await env.domain("example.org")
    for n in range(5):
        await env.mailbox(f"u{n}@example.org")
    port = free_port()
    proc = _process(env, port, MAILYARD_LOCAL_ACK_WAIT="1").start()
    jobs: dict[str, Any] = {}
    for n in range(5):
        job = await env.job("s@sender.test", [f"u{n}@example.org"], BODY)
        jobs[job.job_id] = job
    proc.kill()  # wherever it was: before, during or after some of the jobs
    proc = _process(env, port, MAILYARD_LOCAL_ACK_WAIT="1").start()
    try:
        seen = set()
        while seen != set(jobs):
            result = await env.result()
            assert result.results[0].outcome == OUTCOME_DELIVERED
            seen.add(result.job_id)
        for n in range(5):
            assert 1 <= len(env.messages(f"u{n}@example.org")) <= 2
    finally:
        proc.stop()


def _in_flight(port: int) -> float:
    _, text = _get(port, "/metrics")
    found = re.search(r'^mailyard_delivery_concurrency_in_use\{channel="local"\} (\S+)$', text,
                      re.MULTILINE)
    return float(found.group(1)) if found else -1.0


async def test_replica_killed_holding_a_job(env: Env) -> None:
    """Issue 14, item 14: a killed worker's job runs again elsewhere within seconds (the
    default ack_wait, 10 s; it was 60 s), and is delivered once."""
    await env.domain("example.org")
    await env.mailbox("alice@example.org")
    stored = await env.commit("s@sender.test", ["alice@example.org"], BODY)
    # The message file becomes a FIFO for a while: the first replica's read blocks, as on a
    # hung disk, with the job fetched and kept by progress acks (its event loop runs on:
    # INLINE_READ_MAX 0, as for a spool volume that can hang, reads in the spool's threads).
    path = env.spool.path(stored.spool_path)
    kept = path.with_name(path.name + ".kept")
    path.rename(kept)
    os.mkfifo(path)
    first_port, second_port = free_port(), free_port()
    first = _process(env, first_port, MAILYARD_LOCAL_INSTANCE="first",
                     MAILYARD_LOCAL_INLINE_READ_MAX="0").start()
    second: ServiceProcess | None = None
    try:
        await env.job("s@sender.test", ["alice@example.org"], BODY, stored=stored)
        deadline = time.monotonic() + 30
        while _in_flight(first_port) != 1.0:  # it holds the job
            assert time.monotonic() < deadline, first.logs()
            await asyncio.sleep(0.05)
        second = await asyncio.to_thread(_process(env, second_port,
                                                  MAILYARD_LOCAL_INSTANCE="second").start)
        os.replace(kept, path)  # the file is back; the first stays blocked on the FIFO
        first.kill()
        killed = time.monotonic()
        result = await env.result(timeout=60)  # generous on a loaded machine
        print(f"\na killed local-delivery replica's job was delivered by another "
              f"{time.monotonic() - killed:.1f} s after the kill")
        assert result.worker == "second", second.logs()
        assert result.results[0].outcome == OUTCOME_DELIVERED
        assert env.messages("alice@example.org") == [
            b"Return-Path: <s@sender.test>\r\nDelivered-To: alice@example.org\r\n" + BODY]
        while True:  # and acked: nothing left for a third run
            info = await env.js.consumer_info(bus.JOBS_STREAM, bus.JOB_CONSUMER["local"])
            if info.num_ack_pending == 0 and info.num_pending == 0:
                break
            assert time.monotonic() < deadline + 60, info
            await asyncio.sleep(0.05)
    finally:
        first.kill()
        if second:
            second.stop()
