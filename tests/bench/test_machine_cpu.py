"""The machine's CPU split that bench.field reports for every system (bench.proc)."""

from __future__ import annotations

import time

import pytest

from bench import field
from bench.proc import TICK, machine_split, machine_ticks


def test_the_split_adds_each_kind_to_its_group_per_message() -> None:
    before = dict.fromkeys(("user", "nice", "system", "idle", "iowait", "irq", "softirq"), 0)
    after = {"user": 3 * TICK, "nice": TICK, "system": 2 * TICK, "idle": TICK,
             "iowait": TICK, "irq": TICK, "softirq": 3 * TICK}  # seconds, in ticks
    split = machine_split(before, after, per=1_000_000)  # so one second is 1 us a message
    assert split == {"user": 4.0, "system": 2.0, "softirq": 4.0, "idle": 2.0}
    assert machine_split(before, after, per=0)["user"] == 4_000_000.0  # no division by 0


def test_the_machine_counters_only_go_up() -> None:
    first = machine_ticks()
    assert set(first) == {"user", "nice", "system", "idle", "iowait", "irq", "softirq"}
    # Some user time until a tick is counted: 200,000 squares (15 ms) were once not enough
    # for /proc/stat to move at all (session 19's make test); ticks are 10 ms and a tickless
    # CPU's are added when it next wakes.
    deadline = time.monotonic() + 10
    second = machine_ticks()
    while sum(second.values()) == sum(first.values()) and time.monotonic() < deadline:
        sum(i * i for i in range(200_000))
        second = machine_ticks()
    assert all(second[k] >= first[k] for k in first)
    assert sum(second.values()) > sum(first.values())


def test_the_summary_prints_each_systems_split(capsys: pytest.CaptureFixture[str]) -> None:
    runs = [field.Run("mailyard", "conn", 10, 10, 1.0,
                      machine_us_per_msg={"user": 1100, "system": 500, "softirq": 100,
                                          "idle": 20}),
            field.Run("postfix", "conn", 10, 10, 2.0,
                      machine_us_per_msg={"user": 700, "system": 1300, "softirq": 150,
                                          "idle": 90})]
    medians = field.summarize(runs)
    out = capsys.readouterr().out
    assert medians["conn"] == {"mailyard": 10.0, "postfix": 5.0}
    assert "mailyard/postfix 2.00x" in out
    assert "conn      mailyard  user 1100  system 500  softirq 100  idle 20" in out
    assert "conn      postfix   user 700  system 1300  softirq 150  idle 90" in out
