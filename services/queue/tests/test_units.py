"""Pure parts: the retry schedule, bounce texts, the store's counters."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

from mailyard.api.mail.v1.envelope_pb2 import Envelope
from mailyard.queue import bounce, schedule
from mailyard.queue.state import DEFERRED, QUEUED, Store


def test_qmail_schedule() -> None:
    birth = 1_000_000.0
    assert schedule.next_attempt(birth, birth, 20) == birth + 400
    assert schedule.next_attempt(birth, birth + 400, 20) == birth + 40 ** 2
    assert schedule.next_attempt(birth, birth + 3600, 10) == birth + 70 ** 2
    assert schedule.expired(birth, birth + 604800, 604800)
    assert not schedule.expired(birth, birth + 604799, 604800)


def test_dsn_is_rfc3464() -> None:
    data = bounce.build(fmt="dsn", me="mx.test", to="a@s.test", kind=bounce.BOUNCE,
                        queue_id="Q", original_sender="a@s.test", arrival=0.0,
                        failures=[bounce.Failure("b@r.test", "550 5.1.1 no\r\nsuch", "5.1.1",
                                                 "mx.r.test")],
                        original=b"Subject: hi\r\nFrom: a@s.test\r\n\r\nbody secret\r\n")
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report"
    types = [p.get_content_type() for p in msg.iter_parts()]
    assert types == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    text = data.decode()
    assert "Diagnostic-Code: smtp; 550 5.1.1 no such" in text
    assert "Remote-MTA: dns; mx.r.test" in text and "Subject: hi" in text
    assert "body secret" not in text


def test_bounce_kinds() -> None:
    assert bounce.kind_of(1, "a@b") == bounce.BOUNCE
    assert bounce.kind_of(1, "") == bounce.DOUBLE_BOUNCE
    assert bounce.kind_of(2, "") == bounce.DOUBLE_BOUNCE
    assert bounce.kind_of(3, "") == bounce.DROP


def test_store_counters_and_grouping(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db", sync="NORMAL")
    store.open()
    env = Envelope(queue_id="01AAAAAAAAAAAAAAAAAAAAAAAA", sender="s@x", spool_path="mess/AA/x")
    rcpts = [("a@r.test", 2, "r.test"), ("b@r.test", 2, "r.test"), ("c@l.test", 1, "l.test")]
    assert store.add([(env, rcpts)], 100.0) == [env.queue_id]
    assert store.add([(env, rcpts)], 100.0) == []  # redelivered todo
    assert store.messages == 1 and store.by_state[DEFERRED] == 3
    jobs = store.take_due(101.0, 100)
    assert sorted((j.channel, len(j.recipients)) for j in jobs) == [(1, 1), (2, 2)]
    assert store.by_state[QUEUED] == 3 and store.next_due() is None
    store.close()
    store.open()  # recount from disk agrees
    assert store.by_state[QUEUED] == 3 and store.messages == 1
    assert store.delete(env.queue_id) and store.messages == 0 and store.oldest is None
    store.close()
