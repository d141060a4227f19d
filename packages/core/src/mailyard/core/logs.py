"""Structured logs: one JSON object per line, carrying the queue id when there is one."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

queue_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("queue_id", default="")
_ENCODER = json.JSONEncoder(default=str, ensure_ascii=False)  # made once, not per line
# JSONEncoder.encode makes a C encoder for every call; this one is made once (a line's
# object in 2.2 us instead of 3.7). It has no circular-reference check: an object that
# nests too deep (no line of ours) is encoded again by the checking one.
_C_ENCODER = json.encoder.c_make_encoder  # type: ignore[attr-defined]
_ONCE = None if _C_ENCODER is None else _C_ENCODER(
    None, str, json.encoder.encode_basestring, None, ": ", ", ", False, False, True)
_START: float = getattr(logging, "_startTime", time.time())  # relativeCreated's zero
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
        return encode(event)


def encode(event: dict[str, Any]) -> str:
    if _ONCE is not None:
        with contextlib.suppress(RecursionError, ValueError):
            return "".join(_ONCE(event, 0))
    return _ENCODER.encode(event)


class Record(logging.LogRecord):
    """A LogRecord that sets only what a line of ours can differ in. LogRecord's own
    __init__ (28 % of a line's ~11 us) also works out the file name and module from the
    path (twice os.path, for a path that is "(unknown file)" once setup turned the caller
    lookup off) and stores the thread, process and their names (None, turned off too):
    here those are the class's, and the formatter has fewer attributes to look through."""

    filename = module = _UNKNOWN_FILE = "(unknown file)"
    thread = threadName = processName = process = taskName = None
    exc_text = None

    def __init__(self, name: str, level: int, pathname: str, lineno: int, msg: object,
                 args: Any, exc_info: Any, func: str | None = None, sinfo: str | None = None,
                 **kwargs: Any) -> None:
        created = time.time()
        self.name, self.msg, self.levelno = name, msg, level
        if args and len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
            args = args[0]  # logging's "%(key)s" % {...} form, as LogRecord does
        self.args = args
        self.levelname = logging.getLevelName(level)
        self.pathname, self.lineno = pathname, lineno
        self.funcName = func or "(unknown function)"
        if pathname != self._UNKNOWN_FILE:  # a caller lookup after all (a test's caplog)
            self.filename = os.path.basename(pathname)
            self.module = os.path.splitext(self.filename)[0]
        self.exc_info, self.stack_info = exc_info, sinfo
        self.created = created
        self.msecs = int((created - int(created)) * 1000) + 0.0
        self.relativeCreated = (created - _START) * 1000


class LineHandler(logging.StreamHandler):
    """StreamHandler without its flush after every line when the stream flushes at each
    line by itself (stderr does, since Python 3.9): the call cost 13 % of a line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = self.stream
            stream.write(self.format(record) + "\n")
            if not getattr(stream, "line_buffering", False):
                stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def setup(service: str, level: str = "INFO") -> None:
    # A line carries none of these, and each costs per record: findCaller walks the stack
    # for the file and line, the others ask for the thread, process and multiprocessing
    # names. Off, a line costs about a sixth less (docs/architecture.md, "Where the time
    # goes").
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.setLogRecordFactory(Record)
    handler = LineHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("uvicorn.access", "nats", "mail.log"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
