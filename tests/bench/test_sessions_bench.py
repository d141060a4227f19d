"""bench.sessions with tiny numbers, against a real platform, smtp-source and smtp-sink."""

from __future__ import annotations

import shutil

import pytest

from bench import sessions


@pytest.mark.skipif(not shutil.which("smtp-source"), reason="needs Debian's postfix")
def test_every_mode_runs_to_the_end(capsys: pytest.CaptureFixture[str]) -> None:
    """Bare sessions were greeted, and every message of conn and reuse reached the sink
    (run raises otherwise); each mode has its figure. No figure is judged: CPU per
    connection is for `make bench` to report, not for a test to assert."""
    assert sessions.main(["--rounds", "1", "--count", "100"]) == 0
    out = capsys.readouterr().out
    for mode in ("bare", "conn", "reuse"):
        assert f"round 1  {mode:<5} smtp-ingress" in out
    assert "a connection with no message" in out

