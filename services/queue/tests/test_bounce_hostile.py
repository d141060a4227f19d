"""Bounces and the retry schedule facing hostile or absurd input: what the control files
say, what a remote server answers, what the message and its envelope hold."""

from __future__ import annotations

from typing import Any

from mailyard.api.queue.v1 import queue_pb2 as qpb
from mailyard.core.spool import Spool

from .conftest import DEFERRED, send, set_control, wait_for


async def test_a_queuelifetime_past_a_float_means_never(
        js: Any, spool: Spool, workers: Any, start_queue: Any) -> None:
    """The directory takes any positive integer; float() of 10**400 raised OverflowError in
    every deferral, the results task ended and with it the process (a restart met the same
    result again)."""
    await set_control(js, "queuelifetime", "9" * 400)
    q = start_queue()
    env = await send(spool, js, "alice@sender.test", ["r@remote.test"])
    job = await workers["remote"].job()
    await workers["remote"].report(job, DEFERRED, "451 4.7.1 greylisted, try later")

    async def deferred() -> bool:
        rcpt = (await q.explain(env.queue_id)).recipients[0]
        return rcpt.state == qpb.RECIPIENT_STATE_DEFERRED and rcpt.attempts == 1

    await wait_for(deferred, what="the deferral recorded")
    assert q.proc.proc.poll() is None
