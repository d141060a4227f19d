"""Structured logs: one JSON object per line, carrying the queue id when there is one."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any

queue_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("queue_id", default="")
_ENCODER = json.JSONEncoder(default=str, ensure_ascii=False)  # made once, not per line
_STD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service
        self._second = -1
        self._stamp = ""

    def _ts(self, record: logging.LogRecord) -> str:
        """ISO 8601 UTC with milliseconds; the part up to the second is made once a second
        (strftime per line was a fifth of a log line's cost on the queue's busiest path)."""
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": self._ts(record),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        qid = getattr(record, "queue_id", "") or queue_id_var.get()
        if qid:
            event["queue_id"] = qid
        for key, value in record.__dict__.items():
            if key not in _STD and key not in event and not key.startswith("_"):
                event[key] = value
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        return _ENCODER.encode(event)


def setup(service: str, level: str = "INFO") -> None:
    # A line carries none of these, and each costs per record: findCaller walks the stack
    # for the file and line, the others ask for the thread, process and multiprocessing
    # names. Off, a line costs about a sixth less (docs/architecture.md, "Where the time
    # goes").
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("uvicorn.access", "nats", "mail.log"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
