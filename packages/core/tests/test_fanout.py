"""Fanout: every item once, all at once, errors after everything is over."""

from __future__ import annotations

import threading
import time

import pytest

from mailyard.core.fanout import Fanout


def test_items_run_at_once_and_each_once() -> None:
    fanout = Fanout(8, "t")
    barrier = threading.Barrier(6, timeout=10)  # passes only if all six wait together
    seen: list[int] = []
    lock = threading.Lock()

    def action(item: int) -> None:
        barrier.wait()
        with lock:
            seen.append(item)

    for _ in range(3):  # the threads are reused batch after batch
        seen.clear()
        fanout.each(action, list(range(6)))
        assert sorted(seen) == list(range(6))
    assert len(fanout._started) == 5  # the caller does the first item itself
    fanout.close()
    assert fanout._started == []


def test_a_single_item_runs_in_the_caller() -> None:
    fanout = Fanout(4, "t")
    where: list[str] = []
    fanout.each(lambda _: where.append(threading.current_thread().name), ["x"])
    assert where == [threading.current_thread().name]
    fanout.each(lambda _: None, [])
    assert fanout._started == []


def test_the_first_error_is_raised_after_every_item_is_over() -> None:
    fanout = Fanout(4, "t")
    finished: list[int] = []

    def action(item: int) -> None:
        if item == 2:
            raise OSError("disk on fire")
        time.sleep(0.05)
        finished.append(item)

    with pytest.raises(OSError, match="disk on fire"):
        fanout.each(action, [0, 1, 2, 3])
    assert sorted(finished) == [0, 1, 3]

    def first_fails(item: int) -> None:  # the caller's own item
        if item == 0:
            raise ValueError(item)
        finished.append(item)

    with pytest.raises(ValueError):
        fanout.each(first_fails, [0, 5])
    assert 5 in finished  # waited for before the error was raised
    fanout.each(finished.append, [7, 8])  # the threads survived both
    assert 7 in finished and 8 in finished
    fanout.close()


def test_threads_are_bounded() -> None:
    fanout = Fanout(2, "t")
    fanout.each(lambda _: time.sleep(0.01), list(range(10)))
    assert len(fanout._started) == 2
    fanout.close()
