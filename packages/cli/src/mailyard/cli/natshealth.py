"""Is the platform's nats-server stuck on a storage write error, with space back again?

nats-server 2.15 keeps a stream's write error once a write failed ("Filestore [S]
Critical write error: ... no space left on device"): every later write to that stream fails
the same way after the volume has space again, and a config reload (SIGHUP) does not clear
it; only a new process does. JetStream stays enabled meanwhile, so the monitor's
`/healthz?js-enabled-only=true` says ok; the full `/healthz` answers 503 with
"JetStream stream '$G > MAIL_RESULTS' write error: ...". A full data folder once kept
delivery results from being published until someone restarted everything (issue 14,
item 15).

`StorageWatch.due()` reads that `/healthz` every few seconds and names the error when a
restart of nats-server would help: the error is a write error (or JetStream is disabled,
which older servers do on an out-of-space error), and the store's volume has space again.
Restarting while the volume is still full would only fail the same way, so it waits for
the space; and it restarts at most once per `backoff`, so a volume that fills again at
once does not make it restart in a loop.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

# /healthz errors a new nats-server process clears: a stream's, a consumer's or the meta
# layer's write error ("... write error: ..."), JetStream turned off after one.
STUCK_MARKERS = ("write error", "JetStream not enabled")
SPACE_FRACTION = 0.05  # "space again": this share of the volume free ...
SPACE_ENOUGH = 1 << 30  # ... or 1 GiB, whichever is less


def health_error(monitor_port: int, timeout: float = 2.0) -> str | None:
    """The error nats-server's full /healthz reports, None when it says ok or does not
    answer (a server that is down is the supervisor's other business)."""
    url = f"http://127.0.0.1:{monitor_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return None
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read() or b"{}")
        except ValueError:
            body = {}
        return str(body.get("error") or f"HTTP {exc.code}")
    except OSError:
        return None


def has_space(folder: Path) -> bool:
    """The volume of `folder` has room again (SPACE_FRACTION of it, or SPACE_ENOUGH)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    free = st.f_bavail * st.f_frsize
    return free >= min(SPACE_ENOUGH, SPACE_FRACTION * st.f_blocks * st.f_frsize)


@dataclass
class StorageWatch:
    monitor_port: int
    store_dir: Path
    period: float = 2.0  # seconds between /healthz reads
    backoff: float = 30.0  # seconds at least between two restarts
    _next_check: float = 0.0
    _last_restart: float = field(default=-1e9)
    waiting: str = ""  # the error seen while the volume is still full (logged once)

    def due(self) -> str | None:
        """The write error to restart nats-server for, now; else None."""
        now = time.monotonic()
        if now < self._next_check:
            return None
        self._next_check = now + self.period
        error = health_error(self.monitor_port)
        if error is None or not any(marker in error for marker in STUCK_MARKERS):
            self.waiting = ""
            return None
        if not has_space(self.store_dir):
            if error != self.waiting:
                log.warning("nats-server: %s; restarted once %s has space again",
                            error, self.store_dir)
                self.waiting = error
            return None
        if now - self._last_restart < self.backoff:
            return None
        self._last_restart = now
        self.waiting = ""
        return error
