"""bench.field's round-by-round ratios: how far a median can move between rounds."""

from __future__ import annotations

import pytest

from bench import field


def _run(system: str, rate: float, number: int, mode: str = "conn") -> field.Run:
    return field.Run(system, mode, 100, 100, 100 / rate, round=number)


def test_each_round_pairs_the_systems_that_ran_in_it(
        capsys: pytest.CaptureFixture[str]) -> None:
    runs = [_run("mailyard", 1000, 1), _run("postfix", 700, 1), _run("haraka", 500, 1),
            _run("haraka", 500, 2), _run("postfix", 800, 2), _run("mailyard", 1000, 2),
            _run("mailyard", 900, 3), _run("postfix", 600, 3)]  # haraka left out of round 3
    field.summarize(runs)
    out = capsys.readouterr().out
    assert "conn      mailyard/haraka   2.00x  2.00x   (spread 0.00)" in out
    assert "conn      mailyard/postfix  1.43x  1.25x  1.50x   (spread 0.25)" in out
    # the medians are still the medians of each system's rounds, not of these ratios
    assert "mailyard/postfix 1.43x" in out


def test_a_mode_with_no_peer_has_no_round_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    field.summarize([_run("mailyard", 1000, 1, "starttls")])
    assert "each round's ratio" not in capsys.readouterr().out
