"""The JSON log line: one object per line, the time stamp right across seconds."""

from __future__ import annotations

import io
import json
import logging
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailyard.core import logs
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


def test_setup_s_records_and_handler_give_the_same_line(monkeypatch: Any) -> None:
    """logs.setup's lean Record and LineHandler: the line is what JsonFormatter makes of a
    plain LogRecord, with %-args, the mapping form, extras and an exception."""
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    for name in ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing",
                 "_logRecordFactory"):  # what setup changes, put back after the test
        monkeypatch.setattr(logging, name, getattr(logging, name))
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", root.handlers[:])
    monkeypatch.setattr(root, "level", root.level)
    logs.setup("queue")
    log = logging.getLogger("mailyard.queue.history")
    log.info("delivery %s", "success", extra={"queue_id": "Q1", "recipients": ["a@b"]})
    log.info("%(n)s steps", {"n": 3})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    lines = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert [x["msg"] for x in lines] == ["delivery success", "3 steps", "failed"]
    assert lines[0]["queue_id"] == "Q1" and lines[0]["recipients"] == ["a@b"]
    assert "ValueError: boom" in lines[2]["exc"] and lines[2]["level"] == "error"


def test_a_record_with_its_caller_keeps_file_and_module() -> None:
    record = logs.Record("x", logging.INFO, "/srv/app/results.py", 7, "m", (), None, "f")
    assert (record.filename, record.module, record.lineno, record.funcName) == \
        ("results.py", "results", 7, "f")
    bare = logs.Record("x", logging.INFO, "(unknown file)", 0, "m", (), None)
    assert (bare.filename, bare.thread, bare.exc_text) == ("(unknown file)", None, None)


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                     lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(), inner, max_size=4), max_leaves=20)


@given(st.dictionaries(st.text(), _JSON | st.binary() | st.tuples(st.integers()),
                       max_size=8))
def test_the_reused_encoder_writes_what_json_dumps_writes(event: dict[str, Any]) -> None:
    assert logs.encode(event) == json.dumps(event, default=str, ensure_ascii=False)


def test_an_object_in_itself_is_refused_as_before() -> None:
    looped: list[Any] = []
    looped.append(looped)
    with pytest.raises(ValueError, match="Circular"):
        logs.encode({"x": looped})
