"""The JSON log line: one object per line, the time stamp right across seconds."""

from __future__ import annotations

import json
import logging

from mailyard.core.logs import JsonFormatter


def _record(created: float, msg: str = "delivery %s", **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("mailyard.queue.history", logging.INFO, "", 0, msg,
                               ("success",), None)
    record.created, record.msecs = created, (created % 1) * 1000
    record.__dict__.update(extra)
    return record


def test_a_line_is_one_json_object_with_its_fields() -> None:
    line = JsonFormatter("queue").format(_record(0.25, queue_id="Q1", recipient="a@b.test"))
    assert "\n" not in line
    assert json.loads(line) == {"ts": "1970-01-01T00:00:00.250Z", "level": "info",
                                "service": "queue", "logger": "mailyard.queue.history",
                                "msg": "delivery success", "queue_id": "Q1",
                                "recipient": "a@b.test"}


def test_the_stamp_follows_the_clock_across_seconds_and_back() -> None:
    """The part up to the second is cached; a line from another second (later, or an older
    record from another thread) must not get the cached one."""
    formatter = JsonFormatter("queue")
    stamps = [json.loads(formatter.format(_record(t)))["ts"]
              for t in (86399.75, 86400.0, 86400.5, 86399.25, 1_800_000_000.125)]
    assert stamps == ["1970-01-01T23:59:59.750Z", "1970-01-02T00:00:00.000Z",
                      "1970-01-02T00:00:00.500Z", "1970-01-01T23:59:59.250Z",
                      "2027-01-15T08:00:00.125Z"]
