"""`mailyard lease|rules|relay` against a running relay-auth (child process, real gRPC)."""

from __future__ import annotations

import asyncio
import io
import ipaddress
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.cli.main import main
from mailyard.core import bus
from mailyard.core.directory import record_key
from mailyard.core.natsserver import NatsServer
from mailyard.testing import ServiceProcess, grpc_service


@pytest.fixture
def relay_auth_process(nats_server: NatsServer, tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ServiceProcess, str]]:
    proc, address = grpc_service("mailyard.relay_auth", "RELAYAUTH", nats_server.url, tmp_path)
    proc.start()
    monkeypatch.setenv("MAILYARD_RELAYAUTH_ADDR", address)
    asyncio.run(_add_mailbox(nats_server.url, "alice@example.org"))
    yield proc, address
    proc.stop()


@pytest.fixture
def relay_auth(relay_auth_process: tuple[ServiceProcess, str]) -> str:
    return relay_auth_process[1]


async def _add_mailbox(nats_url: str, address: str) -> None:
    """What `mailyard user add` writes (a lease must name a mailbox)."""
    nc = await bus.connect(nats_url, "test")
    kv = await bus.ensure_kv(nc.jetstream(), bus.KV_DIRECTORY)
    await kv.put(record_key("mailbox", address), pb.Mailbox(address=address).SerializeToString())
    await nc.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_lease_rules_and_check_commands(relay_auth: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = run(capsys, "relay", "check", "192.0.2.7")
    assert code == 0
    assert "decision=allow" in out and "relay=no" in out and "decided_by=rule" in out

    code, out = run(capsys, "lease", "grant", "192.0.2.7", "--user", "alice@example.org",
                    "--ttl", "600")
    assert code == 0 and out.startswith("granted 192.0.2.7\tuser=alice@example.org")
    code, out = run(capsys, "relay", "check", "192.0.2.7")
    assert "decision=relay" in out and "decided_by=lease" in out
    assert "lease_user=alice@example.org" in out
    code, out = run(capsys, "lease", "list")
    assert out.splitlines()[0].startswith("192.0.2.7\tuser=alice@example.org\t")
    assert run(capsys, "lease", "revoke", "192.0.2.7")[0] == 0
    code, out = run(capsys, "lease", "revoke", "192.0.2.7")
    assert code == 1 and "no lease for 192.0.2.7" in out
    assert run(capsys, "lease", "list")[1] == ""

    rules = tmp_path / "tcp.smtp"
    rules.write_text('127.:allow,RELAYCLIENT=""\n192.0.2.:deny\n:allow\n')
    code, out = run(capsys, "rules", "import", str(rules))
    assert code == 0 and "rules=3" in out
    version = out.split("version=")[1].strip()
    code, out = run(capsys, "relay", "check", "192.0.2.7")
    assert "decision=deny" in out and "rule=192.0.2." in out and f"version={version}" in out
    code, out = run(capsys, "rules", "show")
    assert out.splitlines() == [f"# tcp.smtp version={version} rules=3",
                                '127.:allow,RELAYCLIENT=""', "192.0.2.:deny", ":allow"]

    monkeypatch.setattr("sys.stdin", io.StringIO('127.0.0.:allow,RELAYCLIENT=" "\n:allow\n'))
    code, out = run(capsys, "rules", "import", "-")
    assert code == 0 and "rules=2" in out
    code, out = run(capsys, "relay", "check", "127.0.0.1")
    assert "decision=relay" in out and 'env=RELAYCLIENT=" "' in out


def test_errors_are_one_line(relay_auth: str, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad"
    bad.write_text("1.2.3:allow\n")
    assert main(["rules", "import", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "INVALID_ARGUMENT" in err and "line 1" in err
    assert main(["relay", "check", "not-an-ip"]) == 1
    assert "INVALID_ARGUMENT" in capsys.readouterr().err


def test_lease_of_an_unknown_user_is_refused(relay_auth: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lease", "grant", "192.0.2.8", "--user", "ghost@example.org"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "mailyard: NOT_FOUND: no mailbox ghost@example.org\n"
    assert run(capsys, "lease", "list")[1] == ""


def test_lease_list_at_the_design_scale(relay_auth_process: tuple[ServiceProcess, str],
                                        nats_server: NatsServer,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """relay-auth is built for 100,000 leases; their listing (~7 MB) is past gRPC's default
    4 MiB a client takes in one answer, which made `lease list` fail with RESOURCE_EXHAUSTED.
    100,000 here, in pages of 1,000 that the command follows: each lease once, in order."""
    count = 100_000
    asyncio.run(_grant_directly(nats_server.url, count))
    # until relay-auth's watch has mirrored the last of them: its gauge, not a whole listing
    # (seconds each) asked again and again
    _wait_leases_active(relay_auth_process[0], count)
    code = main(["lease", "list"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.splitlines()
    assert len(lines) == count
    assert [line.split("\t")[0] for line in lines] == [
        str(ipaddress.ip_address(int(ipaddress.ip_address("10.0.0.1")) + n))
        for n in range(count)]
    assert captured.err == f"# {count} active lease(s)\n"


def _wait_leases_active(proc: ServiceProcess, count: int, timeout: float = 60.0) -> None:
    url = f"http://127.0.0.1:{proc.http_port}/metrics"
    wanted = f"mailyard_relay_leases_active {float(count)}"
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(url, timeout=10) as resp:
            if wanted in resp.read().decode().splitlines():
                return
        assert time.monotonic() < deadline, f"relay-auth never mirrored {count} leases"
        time.sleep(0.1)


async def _grant_directly(nats_url: str, count: int) -> None:
    """What relay-auth writes for a grant, `count` times (its watch mirrors them)."""
    from mailyard.api.relayauth.v1 import relayauth_pb2 as rpb
    from mailyard.core.relaypolicy import lease_key

    nc = await bus.connect(nats_url, "test")
    kv = await bus.ensure_kv(nc.jetstream(), bus.KV_LEASES)
    now = int(time.time())
    first = int(ipaddress.ip_address("10.0.0.1"))
    for start in range(0, count, 1000):
        batch = []
        for n in range(start, min(start + 1000, count)):
            ip = ipaddress.ip_address(first + n)
            lease = rpb.Lease(ip=str(ip), user="alice@example.org", source="imap")
            lease.granted_at.FromSeconds(now)
            lease.expires_at.FromSeconds(now + 3 * 3600)
            batch.append(kv.put(lease_key(ip), lease.SerializeToString()))
        await asyncio.gather(*batch)
    await nc.close()
