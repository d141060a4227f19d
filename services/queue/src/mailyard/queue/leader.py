"""One active queue process: a leader lock in the KV bucket "locks".

The leader writes key `queue-leader` every ttl/3 with a compare-and-set on the revision it
last wrote. A standby watches the key's revision with its own monotonic clock (no trust in
clock agreement between hosts): when the revision has not moved for `ttl` seconds, it takes
over with a CAS on that revision, so of two standbys only one wins. A leader whose refresh
fails (someone else took the lock, or NATS stayed away for 2/3 of ttl) stops leading at
once: its tasks end before it stands by again (fencing), in the same process. A process
that finds its own term still in the key (nobody took over while NATS was away, or it was
restarted at once) takes it back at once instead of waiting ttl.

The key's value names the leader's state (statedir.StateDir.state_id), also after a clean
release, so the next leader learns whose state was current (`previous_state`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from mailyard.core import bus

log = logging.getLogger(__name__)
KEY = "queue-leader"


class LeadershipLost(Exception):
    pass


class Leader:
    def __init__(self, js: JetStreamContext, instance: str, ttl: float,
                 state_id: str = "") -> None:
        self.js = js
        self.instance = instance
        self.ttl = ttl
        self.state_id = state_id
        self.previous_state = ""  # the state of the process that led before this one
        self.revision = 0
        self.is_leader = False
        self.kv: KeyValue | None = None

    def _value(self, released: bool = False) -> bytes:
        value = {"instance": self.instance, "state": self.state_id, "at": time.time()}
        if released:
            value["released"] = True
        return json.dumps(value).encode()

    async def acquire(self) -> None:
        """Wait until this process holds the lock."""
        self.kv = kv = await bus.ensure_kv(self.js, bus.KV_LOCKS)
        seen_rev, seen_at = -1, time.monotonic()
        while True:
            try:
                try:
                    entry = await kv.get(KEY)
                except KeyNotFoundError:
                    entry = None
                if entry is None:
                    self.revision = await kv.create(KEY, self._value())
                    break
                held = _parse(entry.value)
                if (held.get("instance") == self.instance and self.state_id
                        and held.get("state") == self.state_id and not held.get("released")):
                    # our own term: the compare-and-set fails if a standby won it meanwhile
                    self.revision = await kv.update(KEY, self._value(), last=entry.revision)
                    self.previous_state = self.state_id
                    break
                if not held or held.get("released"):
                    self.revision = await kv.update(KEY, self._value(), last=entry.revision)
                    self.previous_state = str(held.get("state", ""))
                    break
                rev = entry.revision or 0
                if rev != seen_rev:
                    seen_rev, seen_at = rev, time.monotonic()
                elif time.monotonic() - seen_at >= self.ttl:
                    log.warning("leader %s silent for %.0fs, taking over",
                                held.get("instance", "?"), self.ttl)
                    self.revision = await kv.update(KEY, self._value(), last=rev)
                    self.previous_state = str(held.get("state", ""))
                    break
            except KeyWrongLastSequenceError:
                pass  # another standby won this round
            except Exception as exc:
                log.warning("leader lock check failed: %s", exc)
            await asyncio.sleep(min(1.0, self.ttl / 5))
        self.is_leader = True
        log.info("leader lock acquired", extra={"instance": self.instance})

    async def hold(self) -> None:
        """Refresh the lock until it is lost; then raise LeadershipLost."""
        assert self.kv is not None
        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                self.revision = await self.kv.update(KEY, self._value(), last=self.revision)
                last_ok = time.monotonic()
            except KeyWrongLastSequenceError as exc:
                self.is_leader = False
                raise LeadershipLost("another queue process took the leader lock") from exc
            except Exception as exc:
                log.warning("leader lock refresh failed: %s", exc)
                if time.monotonic() - last_ok >= self.ttl * 2 / 3:
                    self.is_leader = False
                    raise LeadershipLost("leader lock not refreshed in time") from exc

    async def release(self) -> None:
        """On a clean stop: hand over at once instead of after ttl."""
        if self.kv is not None and self.is_leader:
            try:
                await self.kv.update(KEY, self._value(released=True), last=self.revision)
            except Exception as exc:
                log.debug("leader lock not released: %s", exc)
            self.is_leader = False


def _parse(value: bytes | None) -> dict[str, object]:
    """The lock's value; empty (an older release's clean stop) or unreadable counts as free."""
    try:
        held = json.loads(value or b"{}")
    except ValueError:
        return {}
    return held if isinstance(held, dict) else {}
