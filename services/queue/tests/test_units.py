"""Pure parts: the retry schedule, bounce texts, the store's counters."""

from __future__ import annotations

import email
import email.policy
import email.utils
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.api.mail.v1.envelope_pb2 import Envelope
from mailyard.core.errors import SettingsError
from mailyard.queue import bounce, linefold, schedule
from mailyard.queue.settings import Settings
from mailyard.queue.state import DEFERRED, DELIVERED, FAILED, QUEUED, Store


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


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=3000), st.text(max_size=300), st.binary(max_size=3000))
def test_dsn_holds_any_reply_on_one_bounded_line(reply: str, host: str,
                                                 original: bytes) -> None:
    """Whatever a remote server answers and whatever the message holds, the DSN has its
    three parts and one field per line: nothing a reply carries becomes a field or a part."""
    data = bounce.build(fmt="dsn", me="mx.test", to="a@s.test", kind=bounce.BOUNCE,
                        queue_id="Q", original_sender="a@s.test", arrival=0.0,
                        failures=[bounce.Failure("b@r.test", reply, "5.1.1", host)],
                        original=original)
    msg = email.message_from_bytes(data, policy=email.policy.default)
    types = [p.get_content_type() for p in msg.iter_parts()]
    assert types == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    blocks = list(msg.iter_parts())[1].get_payload()
    assert len(blocks) == 2
    assert set(blocks[1].keys()) <= {"Final-Recipient", "Action", "Status", "Remote-MTA",
                                     "Diagnostic-Code"}
    ours = data[:data.rindex(b"Content-Type: text/rfc822-headers")]  # the rest is theirs
    assert max(len(line) for line in ours.split(b"\r\n")) <= 998
    assert not any((c < 32 and c not in b"\r\n") or c == 127 for c in ours)


def _global_dsn(data: bytes) -> tuple[Any, list[Any], Any]:
    """(per-message fields, per-recipient fields, returned header) of an RFC 6533 DSN, as
    Python's parser reads it: a message/global-* part is an enclosed message."""
    msg = email.message_from_bytes(data, policy=email.policy.default)
    types = [p.get_content_type() for p in msg.iter_parts()]
    assert types == ["text/plain", "message/global-delivery-status", "message/global-headers"]
    _, status, returned = msg.iter_parts()
    [per_message] = status.get_payload()
    blocks = per_message.get_payload(decode=True).strip(b"\r\n").split(b"\r\n\r\n")
    return (per_message, [email.message_from_bytes(b, policy=email.policy.default)
                          for b in blocks], returned.get_payload()[0])


@pytest.mark.parametrize("smtputf8", [True, False])
def test_dsn_of_internationalised_mail_is_rfc6533(smtputf8: bool) -> None:
    """SMTPUTF8 mail, or a failed address that is not ASCII (a forward of ASCII mail to
    one): message/global-delivery-status and message/global-headers, "utf-8;" addresses
    where they are not ASCII (RFC 6533). It was RFC 3464's ASCII-only delivery-status with
    "rfc822; jörg@..." in it."""
    data = bounce.build(fmt="dsn", me="mx.test", to="zoë@s.test", kind=bounce.BOUNCE,
                        queue_id="Q", original_sender="zoë@s.test", arrival=0.0,
                        smtputf8=smtputf8,
                        failures=[bounce.Failure("jörg@r.test", "550 5.1.1 wer?", "5.1.1",
                                                 "mx.r.test"),
                                  bounce.Failure("b@r.test", "550 5.1.1 no", "5.1.1")],
                        original="Subject: Grüße\r\n\r\nbody\r\n".encode())
    per_message, (first, second), returned = _global_dsn(data)
    assert per_message["Reporting-MTA"] == "dns; mx.test"
    assert first["Final-Recipient"] == "utf-8; jörg@r.test"
    assert first["Diagnostic-Code"] == "smtp; 550 5.1.1 wer?"
    assert second["Final-Recipient"] == "rfc822; b@r.test"
    assert returned["Subject"] == "Grüße"
    assert b"body" not in data


def test_dsn_of_ascii_mail_is_unchanged() -> None:
    failure = bounce.Failure("b@r.test", "550 5.1.1 no", "5.1.1", "mx.r.test")
    data = bounce.build(fmt="dsn", me="mx.test", to="a@s.test", kind=bounce.BOUNCE,
                        queue_id="Q", original_sender="a@s.test", arrival=0.0,
                        failures=[failure], original=b"Subject: caf\xc3\xa9\r\n\r\n")
    assert b"global" not in data and b"utf-8;" not in data
    assert b"\r\nFinal-Recipient: rfc822; b@r.test\r\n" in data


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=3000), st.text(max_size=300), st.binary(max_size=3000))
def test_rfc6533_dsn_holds_any_reply_on_one_bounded_line(reply: str, host: str,
                                                         original: bytes) -> None:
    data = bounce.build(fmt="dsn", me="mx.test", to="zoë@s.test", kind=bounce.BOUNCE,
                        queue_id="Q", original_sender="zoë@s.test", arrival=0.0,
                        smtputf8=True, failures=[bounce.Failure("jörg@r.test", reply,
                                                                "5.1.1", host)],
                        original=original)
    _, blocks, _ = _global_dsn(data)
    assert len(blocks) == 1
    assert set(blocks[0].keys()) <= {"Final-Recipient", "Action", "Status", "Remote-MTA",
                                     "Diagnostic-Code"}
    ours = data[:data.rindex(b"Content-Type: message/global-headers")]
    assert max(len(line) for line in ours.split(b"\r\n")) <= 998
    assert not any((c < 32 and c not in b"\r\n") or c == 127 for c in ours)


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


def _env(qid: str) -> Envelope:
    return Envelope(queue_id=qid, sender="s@x", spool_path=f"mess/{qid[-2:]}/{qid}")


def test_store_add_and_take_in_one_transaction(tmp_path: Path) -> None:
    """A todo batch is recorded and handed out together: known ids (and the same id twice
    in one batch) are skipped, each message/channel/domain is one job, and a message's jobs
    get consecutive job ids that later hand-outs continue."""
    store = Store(tmp_path / "q.db", sync="NORMAL")
    store.open()
    a, b, c = (f"01AAAAAAAAAAAAAAAAAAAAAAA{x}" for x in "ABC")
    store.add([(_env(c), [("x@r.test", 2, "r.test")])], 100.0)
    two_domains = [("a@r.test", 2, "r.test"), ("b@o.test", 2, "o.test"), ("l@l.test", 1, "l")]
    items = [(_env(a), two_domains), (_env(b), [("y@r.test", 2, "r.test")]),
             (_env(a), two_domains), (_env(c), [("x@r.test", 2, "r.test")])]
    added, jobs = store.add_and_take(items, 101.0, 100)
    assert added == [a, b]
    assert store.messages == 3 and store.by_state[QUEUED] == 5 and store.by_state[DEFERRED] == 0
    by_message: dict[str, list[str]] = {}
    for job in jobs:
        by_message.setdefault(job.message.queue_id, []).append(job.job_id)
        assert job.attempt == 1
    assert sorted(by_message[a]) == [f"{a}-1", f"{a}-2", f"{a}-3"]
    assert by_message[b] == [f"{b}-1"] and by_message[c] == [f"{c}-1"]
    assert {tuple(j.recipients) for j in jobs if j.message.queue_id == a} == {
        ("a@r.test",), ("b@o.test",), ("l@l.test",)}
    store.undo_dispatch_many([j for j in jobs if j.message.queue_id == b], 50.0)
    again = store.take_due(102.0, 100)
    assert [j.job_id for j in again] == [f"{b}-2"] and again[0].attempt == 1
    store.close()
    store.open()  # the counters agree with the disk
    assert store.messages == 3 and store.by_state[QUEUED] == 5
    store.close()


def test_store_apply_batch_in_order_and_snapshot(tmp_path: Path) -> None:
    """Results of one batch are applied in order (a later result for the same recipient sees
    the earlier one), stale and unknown ones are skipped, and the snapshot handed back is
    what the store now holds for the messages that changed."""
    store = Store(tmp_path / "q.db", sync="NORMAL")
    store.open()
    a, b, c = (f"01AAAAAAAAAAAAAAAAAAAAAAA{x}" for x in "ABC")
    _, jobs = store.add_and_take(
        [(_env(a), [("z@r.test", 2, "r.test"), ("m@r.test", 2, "r.test")]),
         (_env(b), [("y@r.test", 2, "r.test")]), (_env(c), [("w@r.test", 2, "r.test")])],
        100.0, 100)
    job = {j.message.queue_id: j.job_id for j in jobs}

    def decide(rcpt: object, message: object, outcome: int) -> tuple[int, float]:
        return {1: (DELIVERED, 0.0), 2: (DEFERRED, 500.0), 3: (FAILED, 0.0)}[outcome]

    applied, snap = store.apply_and_snapshot([
        (job[a], a, "z@r.test", 2, "451 later", "4.0.0", "mx1"),  # deferred ...
        (job[a], a, "z@r.test", 1, "250 ok", "", "mx2"),  # ... then delivered (stale: a fact)
        (job[a], a, "z@r.test", 2, "451 again", "", "mx3"),  # final already: ignored
        ("other-9", b, "y@r.test", 2, "451 stale", "", "mx"),  # another job's: ignored
        (job[b], "01UNKNOWNAAAAAAAAAAAAAAAAA", "q@r.test", 1, "250", "", "mx"),
        (job[c], c, "w@r.test", 3, "550 no", "5.1.1", "mx"),
    ], decide)
    assert [(o.queue_id, o.address, o.state) for o in applied] == [
        (a, "z@r.test", DEFERRED), (a, "z@r.test", DELIVERED), (c, "w@r.test", FAILED)]
    assert list(snap) == [a, c]
    assert snap == store.snapshot([a, c])  # exactly what was committed
    assert [(r.address, r.state, r.last_reply, r.route, r.job_id) for r in snap[a][1]] == [
        ("m@r.test", QUEUED, "", "", job[a]), ("z@r.test", DELIVERED, "250 ok", "mx2", "")]
    assert store.by_state[QUEUED] == 2 and store.by_state[DELIVERED] == 1
    assert store.by_state[FAILED] == 1 and store.by_state[DEFERRED] == 0
    store.close()


def test_store_delete_many(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db", sync="NORMAL")
    store.open()
    ids = [f"01AAAAAAAAAAAAAAAAAAAAAAA{x}" for x in "ABCD"]
    store.add([(_env(q), [("a@r.test", 2, "r.test"), ("b@l.test", 1, "l.test")]) for q in ids],
              100.0)
    unknown = "01ZZZZZZZZZZZZZZZZZZZZZZZZ"
    assert store.delete_many([ids[2], unknown, ids[0], ids[2]]) == [ids[2], ids[0]]
    assert store.messages == 2 and store.by_state[DEFERRED] == 4
    assert set(store.snapshot(ids)) == {ids[1], ids[3]}
    store.close()
    store.open()
    assert store.messages == 2 and store.by_state[DEFERRED] == 4
    store.close()


def test_follow_forgets_a_message_once_it_is_done() -> None:
    """`log -f --address` follows each message concerning the address from its `new` on:
    the ids it follows were kept for the life of the stream (one per message ever, a
    stream open for weeks on a busy address grew without bound); `done` is its last step."""
    from mailyard.api.history.v1 import history_pb2 as hpb
    from mailyard.queue.history_search import matches

    req = hpb.SearchRequest(address="Bob@x.test")
    followed: set[str] = set()
    steps = [hpb.HistoryEvent(queue_id="Q1", kind="new", sender="a@y.test",
                              recipients=["bob@x.test"]),
             hpb.HistoryEvent(queue_id="Q2", kind="new", recipients=["carol@x.test"]),
             hpb.HistoryEvent(queue_id="Q1", kind="bounce", detail="to <a@y.test>"),
             hpb.HistoryEvent(queue_id="Q2", kind="done"),
             hpb.HistoryEvent(queue_id="Q1", kind="done")]
    assert [matches(e, req, followed) for e in steps] == [True, False, True, False, True]
    assert followed == set()


def test_retry_c_past_any_schedule_is_refused() -> None:
    """A c of 1e300 passed gt=0, and (sqrt(age) + c) ** 2 raised OverflowError in the
    first deferral (the results task ended, and with it the process); inf made every next
    attempt inf, a recipient never tried again nor expired."""
    for value in ("1e300", "inf", "3601"):
        for name in ("retry_c_remote", "retry_c_local"):
            with pytest.raises(SettingsError):
                Settings.load(**{name: value})
    assert Settings.load(retry_c_remote="3600").retry_c_remote == 3600
    assert schedule.next_attempt(0.0, 10 * 604800.0, 3600) < 10 * 604800.0 + 10 ** 8


@pytest.mark.parametrize("fmt", ["dsn", "qsbmf"])
def test_the_dates_name_their_zone(fmt: str) -> None:
    """The bounce's Date and the DSN's Arrival-Date said "-0000", which RFC 5322 (3.3)
    reads as "local time unknown": readers showed the times zone-less, Python's own parser
    gives a naive datetime. They say +0000 now, the zone of the times they give (UTC)."""
    data = bounce.build(fmt=fmt, me="mx.test", to="a@s.test", kind=bounce.BOUNCE,
                        queue_id="Q", original_sender="a@s.test", arrival=1_800_000_000.0,
                        failures=[bounce.Failure("b@r.test", "550 5.1.1 no", "5.1.1")],
                        original=b"Subject: hi\r\n\r\nbody\r\n")
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    date = msg["Date"]
    assert date.endswith(" +0000"), date
    assert email.utils.parsedate_to_datetime(date).tzinfo is not None
    if fmt == "dsn":
        assert b"\r\nArrival-Date: Fri, 15 Jan 2027 08:00:00 +0000\r\n" in data


def _returned_lines(data: bytes) -> list[bytes]:
    """The bounce's lines as remote-delivery sends them: a bare CR or LF ends a line too."""
    return data.splitlines()


@pytest.mark.parametrize("fmt", ["dsn", "qsbmf"])
def test_a_long_header_line_is_returned_folded_or_cut(fmt: str) -> None:
    """The returned header section came as it was: a 2,000-octet header line (smtp-ingress
    accepts them from outside) made a bounce line over RFC 5322's 998 octets, which
    remote-delivery folds on the way out and so cannot sign (long_line). Such a line is
    folded before white space now, unfolding to what it was; a run of 998 octets with
    nowhere to fold is cut, with a marker."""
    references = b"References:" + b"".join(b" <%04d.thread@remote.test>" % n
                                            for n in range(80))
    blob = b"X-Blob: " + b"x" * 2000 + b" tail"
    original = (b"Subject: hi\r\n" + references + b"\r\n" + blob
                + b"\r\nTo: a@s.test\r\n\r\nbody\r\n")
    data = bounce.build(fmt=fmt, me="mx.test", to="a@s.test", kind=bounce.BOUNCE,
                        queue_id="Q", original_sender="a@s.test", arrival=0.0,
                        failures=[bounce.Failure("b@r.test", "550 5.1.1 no", "5.1.1")],
                        original=original)
    assert max(map(len, _returned_lines(data))) <= 998
    unfolded = data.replace(b"\r\n ", b" ")  # RFC 5322 2.2.3
    assert b"\r\nSubject: hi\r\n" + references + b"\r\n" in unfolded
    cut = b"X-Blob:\r\n " + b"x" * (998 - 1 - len(linefold.MARK)) + linefold.MARK
    assert b"\r\n" + cut + b"\r\n tail\r\nTo: a@s.test\r\n" in data
    if fmt == "dsn":
        returned = list(email.message_from_bytes(data, policy=email.policy.default)
                        .iter_parts())[2]
        assert returned.get_content_type() == "text/rfc822-headers"


_HEADER_LINES = st.lists(st.one_of(
    st.binary(max_size=3000),
    st.integers(0, 3000).map(lambda n: b"X-Long: " + b"y" * n),
    st.lists(st.sampled_from([b" ", b"\t", b"  ", b"a", b"\xc3\xa9", b"\r", b"\n",
                              b"b" * 500]), max_size=40).map(b"".join)),
    max_size=6)


@settings(max_examples=200, deadline=2000)
@given(_HEADER_LINES, st.sampled_from(["dsn", "qsbmf"]), st.booleans())
def test_any_returned_header_gives_a_bounce_of_short_lines(lines: list[bytes], fmt: str,
                                                            smtputf8: bool) -> None:
    """Whatever the failed message's header section holds, building its bounce does not
    raise and no line of it (as remote-delivery counts lines) is over 998 octets."""
    original = b"\r\n".join(lines)
    data = bounce.build(fmt=fmt, me="mx.test", to="a@s.test", kind=bounce.BOUNCE,
                        queue_id="Q", original_sender="a@s.test", arrival=0.0,
                        smtputf8=smtputf8, original=original,
                        failures=[bounce.Failure("b@r.test", "550 5.1.1 no", "5.1.1")])
    assert max(map(len, _returned_lines(data))) <= 998


_WORDS = st.lists(st.binary(min_size=1, max_size=500)
                  .map(lambda b: b.translate(None, b" \t\r\n")).filter(bool), max_size=12)


@settings(max_examples=200, deadline=2000)
@given(st.lists(_WORDS.map(b" ".join), max_size=5))
def test_a_line_with_room_to_fold_is_returned_whole(lines: list[bytes]) -> None:
    """Folded lines unfold (RFC 5322 2.2.3) to what came, octet for octet: nothing is cut
    where white space leaves room to fold, nothing re-encoded."""
    text = b"\r\n".join(lines)
    fitted = linefold.fit(text)
    assert max(map(len, fitted.splitlines()), default=0) <= 998
    assert fitted.replace(b"\r\n ", b" ") == text
