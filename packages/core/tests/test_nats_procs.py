"""GOMAXPROCS for nats-server: set when asked, the operator's own setting kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailyard.core.natsserver import NatsServer


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_the_server_runs_with_the_procs_asked_for(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOMAXPROCS", raising=False)
    server = NatsServer(tmp_path / "js", procs=1)
    server.start(tmp_path / "nats.log")
    try:
        assert server.proc is not None
        assert environ_of(server.proc.pid).get("GOMAXPROCS") == "1"
    finally:
        server.stop()


def test_an_operators_gomaxprocs_wins_and_none_inherits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOMAXPROCS", raising=False)
    assert NatsServer(tmp_path, procs=None).env() is None  # Go's default
    env = NatsServer(tmp_path, procs=2).env()
    assert env is not None and env["GOMAXPROCS"] == "2" and env["PATH"]
    monkeypatch.setenv("GOMAXPROCS", "3")
    assert NatsServer(tmp_path, procs=1).env() is None  # inherited: 3
