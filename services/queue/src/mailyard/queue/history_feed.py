"""Feeding the history index (history_index.py) from MAIL_HISTORY, in every queue process.

One ephemeral, ack-less pull consumer on the steps' subjects (`mailyard.history.msg.*`),
from the seq after the last one the index holds (so a restart reads only what it missed);
each fetched batch is one transaction. The consumer's own sequence must go up by one per
message: a gap means a delivery was lost (an ack-less consumer does not redeliver), and
the consumer is made again from the last stored seq, as an ordered consumer would.

The index starts over (a rebuild, counted) when it no longer matches the stream: the file
is damaged, the stream was re-created (another creation time, or a last seq below the
index's), or the stream's first seq moved past everything the index holds (purged or
aged out). Nothing here stops the process: a failure is logged and the feed starts again.

An address's rows come from the `new` events that name it (history.concerned), not from
the stream's AddressRef records (`mailyard.history.addr.*`, there for a search of the
stream by address): reading those back cost every queue process two records or more per
message, for nothing the `new` event does not say. A Recorder flush ends on a step (a
message's references go before its `new` event), so the index's last seq, the last step's,
is the stream's whenever the feed has read everything.

Searches ask `caught_up` whether the index holds the stream up to the seq the stream had at
the time of the query; until it does (a fresh start still reading) they read the stream.
Rows older than HISTORY_DAYS, or below the stream's first seq, are deleted in bounded
batches every HISTORY_INDEX_EXPIRE_INTERVAL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamInfo

from mailyard.api.history.v1.history_pb2 import HistoryEvent
from mailyard.core import bus
from mailyard.queue import metrics
from mailyard.queue.history import address_key, concerned
from mailyard.queue.history_index import HistoryIndex, Row

log = logging.getLogger(__name__)
MSG_PREFIX = bus.HISTORY_MSG_SUBJECT.format(queue_id="")
CHECK_EVERY = 5.0  # seconds between looks at the stream (re-created? lag) while busy
CHECK_IDLE = 1.0   # ... and while nothing arrives
EXPIRES = 1.0      # seconds a pull request waits for records
LINGER = 0.1       # after a first record, wait this long for more: one transaction for them


def stream_id(info: StreamInfo) -> str:
    """The stream's identity: its creation time (a re-created stream has another one)."""
    return info.created.isoformat() if info.created else ""


def decode_event(data: bytes) -> HistoryEvent | None:
    try:
        return HistoryEvent.FromString(data)
    except Exception:
        return None


def rows_of(msgs: list[Any], consumer_seq: int) -> tuple[list[Row], int, int, int, bool]:
    """Rows of a fetched batch: (rows, last stream seq, last consumer seq, pending, gap).
    Stops at a gap in the consumer's sequence (gap True): what follows is read again."""
    rows: list[Row] = []
    last = pending = 0
    for msg in msgs:
        # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>, or with
        # <domain>.<account hash> after ACK and a token at the end (nats-server >= 2.9)
        tokens = msg.reply.split(".")
        base = 2 if len(tokens) == 9 else 4
        sseq, cseq, ts = int(tokens[base + 3]), int(tokens[base + 4]), int(tokens[base + 5])
        if cseq != consumer_seq + 1:
            return rows, last, consumer_seq, pending, True
        consumer_seq, last, pending = cseq, sseq, int(tokens[base + 6])
        subject: str = msg.subject
        qid = subject[len(MSG_PREFIX):]
        if not subject.startswith(MSG_PREFIX) or not qid or "." in qid:  # (the filter's)
            continue
        rows.append(("e", qid, sseq, ts, msg.data))
        event = decode_event(msg.data)  # not an event: no rows of addresses (the search
        if event is not None:           # skips it too)
            at = event.at.ToNanoseconds()
            rows.extend(("r", address_key(a), ts, sseq, event.queue_id, at)
                        for a in concerned(event))
    return rows, last, consumer_seq, pending, False


class HistoryFeed:
    def __init__(self, js: JetStreamContext, index: HistoryIndex, *, days: float,
                 batch: int = 1000, expire_every: float = 600.0,
                 expire_batch: int = 5000) -> None:
        self.js = js
        self.index = index
        self.days = days
        self.batch = batch
        self.expire_every = expire_every
        self.expire_batch = expire_batch
        self._progress = asyncio.Event()  # set (and replaced) after each stored batch
        self.opened = False
        self.first_seq = 0  # the stream's, at the last look
        self.read = 0  # records read from the stream by this feed
        self.broken: Exception | None = None  # what a search found wrong with the file

    # -- what searches ask -----------------------------------------------------------------

    async def caught_up(self, stream: str, last_seq: int, wait: float) -> bool:
        """True once the index holds the stream `stream` up to `last_seq`; False if that
        takes longer than `wait` seconds (the search then reads the stream)."""
        deadline = time.monotonic() + wait
        while not (self.opened and self.broken is None and self.index.stream == stream
                   and self.index.last_seq >= last_seq):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), remaining)
        return True

    def damaged(self, exc: Exception) -> None:
        """A search could not read the index: the feed starts it over (searches read the
        stream until it has caught up again)."""
        if self.broken is None:
            log.warning("history index unreadable: %s", exc)
            self.broken = exc
            self._advanced()

    def _advanced(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    # -- the feed ----------------------------------------------------------------------------

    async def run(self) -> None:
        """For the life of the process; never raises but CancelledError."""
        with contextlib.suppress(Exception):  # no room, no permission: _follow again
            await self._open()
        expiring = asyncio.create_task(self._expire_forever(), name="history-expire")
        try:
            while True:
                try:
                    await self._follow()
                except sqlite3.OperationalError as exc:  # disk full, I/O error: not damage
                    log.warning("history index: %s; again in 2 s", exc)
                    await asyncio.sleep(2.0)
                except sqlite3.DatabaseError as exc:  # damaged while open
                    with contextlib.suppress(sqlite3.Error, OSError):
                        await self._start_over("damaged", exc)
                except (asyncio.CancelledError, KeyboardInterrupt):
                    raise
                except Exception as exc:  # NATS away, stream missing: try again shortly
                    log.warning("history index feed: %s; again in 2 s",
                                exc or type(exc).__name__)
                    await asyncio.sleep(2.0)
        finally:
            self.opened = False
            expiring.cancel()
            with contextlib.suppress(BaseException):
                await expiring
            await self.index.aclose()

    async def _open(self) -> None:
        """Open the file (a damaged one is replaced by an empty one, counted)."""
        try:
            if await self.index.run(self.index.open):
                metrics.HISTORY_INDEX_REBUILDS.labels("damaged").inc()
        except Exception as exc:
            log.warning("history index %s cannot be opened: %s", self.index.path, exc)
            raise
        self.opened, self.broken = True, None
        self._advanced()

    async def _start_over(self, reason: str, why: object) -> None:
        log.warning("history index starts over (%s: %s)", reason, why)
        metrics.HISTORY_INDEX_REBUILDS.labels(reason).inc()
        self.opened = False
        await self.index.run(self.index.reset)
        self.opened, self.broken = True, None
        self._advanced()

    async def _mismatch(self, info: StreamInfo) -> str:
        """Why the index cannot go on from where it is ('' if it can)."""
        index, state = self.index, info.state
        if (index.stream and index.stream != stream_id(info)) or state.last_seq < index.last_seq:
            return "recreated"
        if state.first_seq > index.last_seq and await self.index.run(self.index.holds_rows):
            return "purged"  # nothing the index holds is in the stream any more
        return ""

    async def _follow(self) -> None:
        """Read from the index's last seq on until something needs a new start."""
        if not self.opened:  # an open or start over that failed (disk full?): again
            await self._open()
        info = await self.js.stream_info(bus.HISTORY_STREAM)
        self.first_seq = info.state.first_seq
        reason = await self._mismatch(info)
        if reason:
            await self._start_over(reason, f"stream seqs {info.state.first_seq}.."
                                           f"{info.state.last_seq}, index at "
                                           f"{self.index.last_seq}")
        ident = stream_id(info)
        start = max(self.index.last_seq + 1, info.state.first_seq, 1)
        # what went before `start` is not in the stream: the index is complete up to it
        await self.index.run(self.index.add, [], start - 1, ident)
        self._advanced()
        consumer = await self.js.add_consumer(bus.HISTORY_STREAM, ConsumerConfig(
            ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=start, filter_subject=MSG_PREFIX + "*", inactive_threshold=60.0,
            mem_storage=True, num_replicas=1, max_waiting=4))
        # Pull requests answered into an inbox with a callback that only keeps the message:
        # nats-py's fetch() costs an awaited next_msg (a task, a timer) per message, which
        # was most of the feed's CPU (75 us per record filling, 138 live).
        nc = self.js._nc
        arrived: list[Any] = []
        statuses: list[str] = []
        wake, full = asyncio.Event(), asyncio.Event()  # something arrived; a request's worth
        outstanding = 0

        async def on_msg(msg: Any) -> None:
            status = msg.headers.get("Status") if msg.headers else None
            if status:
                statuses.append(status)
                wake.set()
                full.set()
            else:
                arrived.append(msg)
                wake.set()
                if len(arrived) >= outstanding:
                    full.set()

        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox, cb=on_msg)
        request = json.dumps({"batch": self.batch, "expires": int(EXPIRES * 1e9)}).encode()
        next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{bus.HISTORY_STREAM}.{consumer.name}"
        consumer_seq, asked, checked = 0, 0.0, time.monotonic()
        try:
            while True:
                now = time.monotonic()
                if outstanding <= 0:
                    await nc.publish(next_subject, request, reply=inbox)
                    outstanding, asked = self.batch, now
                elif now - asked > EXPIRES + 2 and not arrived and not statuses:
                    # a request always ends in records or a status by EXPIRES: silence
                    # means the consumer is gone (nats-server restarted): start again
                    log.warning("history index feed: no answer from the stream; again")
                    return
                if not arrived and not statuses:
                    wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), CHECK_IDLE)
                if arrived and len(arrived) < outstanding and not statuses:
                    full.clear()  # let a bigger batch gather (to the end of the request)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(full.wait(), LINGER)
                msgs, arrived[:] = arrived[:], []
                ended, statuses[:] = statuses[:], []
                outstanding -= len(msgs)
                if any(code not in ("100", "404", "408") for code in ended):
                    return  # 409: consumer deleted (the stream with it?), ...: start again
                if any(code in ("404", "408") for code in ended):
                    outstanding = 0  # that request is over
                self.read += len(msgs)
                if self.broken is not None:
                    raise sqlite3.DatabaseError(f"a search failed: {self.broken}")
                if msgs:
                    rows, last, consumer_seq, pending, gap = rows_of(msgs, consumer_seq)
                    if last:
                        await self.index.run(self.index.add, rows, last, ident)
                        self._advanced()
                        metrics.HISTORY_INDEX_LAG.set(pending)
                    if gap:
                        log.warning("history index feed: a delivery was lost; reading "
                                    "again from seq %d", self.index.last_seq + 1)
                        return
                if time.monotonic() - checked >= (CHECK_EVERY if msgs else CHECK_IDLE):
                    checked = time.monotonic()
                    info = await self.js.stream_info(bus.HISTORY_STREAM)
                    self.first_seq = info.state.first_seq
                    metrics.HISTORY_INDEX_LAG.set(
                        max(0, info.state.last_seq - self.index.last_seq))
                    if await self._mismatch(info):
                        return
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            with contextlib.suppress(Exception):
                await self.js.delete_consumer(bus.HISTORY_STREAM, consumer.name or "")

    async def _expire_forever(self) -> None:
        while True:
            await asyncio.sleep(self.expire_every)
            with contextlib.suppress(sqlite3.Error, AssertionError):
                await self.expire()

    async def expire(self) -> int:
        """Delete what is older than HISTORY_DAYS or no longer in the stream (aged out or
        purged there; searches never see it, bounded by the stream's seqs), a bounded
        batch at a time; the number of rows deleted."""
        with contextlib.suppress(Exception):  # NATS away: by age, and the last first seq
            self.first_seq = (await self.js.stream_info(bus.HISTORY_STREAM)).state.first_seq
        cutoff = time.time_ns() - int(self.days * 86400 * 1e9)
        total = 0
        while gone := await self.index.run(self.index.expire, self.first_seq, cutoff,
                                           self.expire_batch):
            total += gone
        return total
