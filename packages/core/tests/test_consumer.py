"""JobConsumer against a real nats-server: one job per fetch, result before ack, progress
acks, poison jobs, publish failures and a graceful stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.api.mail.v1.delivery_pb2 import (
    CHANNEL_REMOTE,
    OUTCOME_DELIVERED,
    OUTCOME_FAILED,
    DeliveryJob,
    DeliveryResult,
    RecipientResult,
)
from mailyard.core import bus
from mailyard.core.consumer import CUT_MARK, RESULT_HEADROOM, JobConsumer, fitted

CHANNEL = "remote"


def job(n: int) -> DeliveryJob:
    return DeliveryJob(job_id=f"Q{n}.1", queue_id=f"Q{n}", channel=CHANNEL_REMOTE,
                       sender="a@x.test", recipients=[f"u{n}@y.test"], domain="y.test")


def result_for(j: DeliveryJob) -> DeliveryResult:
    return DeliveryResult(job_id=j.job_id, queue_id=j.queue_id, channel=CHANNEL_REMOTE,
                          results=[RecipientResult(recipient=j.recipients[0],
                                                   outcome=OUTCOME_DELIVERED)])


async def consumer_config(js: Any, *, max_ack_pending: int = 20, ack_wait: float = 30.0,
                          max_deliver: int = 10) -> None:
    await bus.ensure_consumer(js, bus.JOBS_STREAM, bus.JOB_CONSUMER[CHANNEL],
                              filter_subject=bus.JOB_SUBJECT[CHANNEL],
                              max_ack_pending=max_ack_pending, ack_wait=ack_wait,
                              max_deliver=max_deliver)


async def publish_jobs(js: Any, *jobs: DeliveryJob) -> None:
    for j in jobs:
        await bus.publish(js, bus.JOB_SUBJECT[CHANNEL], j, msg_id=j.job_id)


async def results(js: Any, count: int, timeout: float = 20.0) -> list[DeliveryResult]:
    sub = await js.pull_subscribe(bus.RESULT_SUBJECT.format(channel=CHANNEL),
                                  durable="test-results", stream=bus.RESULTS_STREAM)
    out: list[DeliveryResult] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(out) < count and asyncio.get_running_loop().time() < deadline:
        try:
            msgs = await sub.fetch(batch=count - len(out), timeout=1)
        except TimeoutError:
            continue
        for msg in msgs:
            out.append(bus.decode(DeliveryResult, msg.data))
            await msg.ack()
    await sub.unsubscribe()
    return out


async def eventually(check: Callable[[], Any], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition never became true"
        await asyncio.sleep(0.02)


async def pending(js: Any) -> tuple[int, int, int]:
    """(ack pending, not yet delivered, redelivered) on the shared consumer."""
    info = await js.consumer_info(bus.JOBS_STREAM, bus.JOB_CONSUMER[CHANNEL])
    return info.num_ack_pending, info.num_pending, info.num_redelivered


class Handler:
    """Records every job it is given; holds each until `release` is set."""

    def __init__(self, hold: bool = False, fail: bool = False) -> None:
        self.seen: list[str] = []
        self.running = 0
        self.max_running = 0
        self.release = asyncio.Event()
        self.fail = fail
        if not hold:
            self.release.set()

    async def __call__(self, j: DeliveryJob) -> DeliveryResult:
        self.seen.append(j.job_id)
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            await self.release.wait()
            if self.fail:
                raise RuntimeError("handler crashed")
            return result_for(j)
        finally:
            self.running -= 1


@pytest.fixture
async def stoppers() -> AsyncIterator[list[JobConsumer]]:
    started: list[JobConsumer] = []
    yield started
    for c in started:
        await c.stop(grace=1)


async def test_result_published_then_acked(js: Any, stoppers: list[JobConsumer]) -> None:
    await consumer_config(js)
    handler = Handler()
    settled: list[tuple[str, str]] = []
    seen_in_flight: list[int] = []
    consumer = JobConsumer(js, CHANNEL, handler, limit=lambda: 5, ack_wait=30,
                           on_in_flight=seen_in_flight.append,
                           on_settled=lambda j, r, _s: settled.append((j.job_id, r.job_id)))
    await consumer.start()
    stoppers.append(consumer)
    await publish_jobs(js, job(1), job(2), job(3))
    out = await results(js, 3)
    assert sorted(r.job_id for r in out) == ["Q1.1", "Q2.1", "Q3.1"]
    await eventually(lambda: _equals(pending(js), (0, 0, 0)))
    assert sorted(settled) == [("Q1.1", "Q1.1"), ("Q2.1", "Q2.1"), ("Q3.1", "Q3.1")]
    assert consumer.handled == 3 and seen_in_flight[-1] == 0


async def test_local_limit_bounds_jobs_in_flight(js: Any,
                                                 stoppers: list[JobConsumer]) -> None:
    await consumer_config(js, max_ack_pending=20)
    handler = Handler(hold=True)
    limit = [2]
    consumer = JobConsumer(js, CHANNEL, handler, limit=lambda: limit[0], ack_wait=30)
    await consumer.start()
    stoppers.append(consumer)
    await publish_jobs(js, *(job(n) for n in range(6)))
    await eventually(lambda: _true(len(handler.seen) == 2))
    # the other four stay on the server, not in this client's buffer (one job per fetch:
    # a batch fetch would hold jobs against max_ack_pending that nobody works on)
    await eventually(lambda: _equals(pending(js), (2, 4, 0)))
    limit[0] = 4
    consumer.wake()
    await eventually(lambda: _true(len(handler.seen) == 4))
    handler.release.set()
    assert len(await results(js, 6)) == 6
    assert handler.max_running == 4


async def test_undecodable_job_is_terminated(js: Any, stoppers: list[JobConsumer]) -> None:
    await consumer_config(js)
    handler = Handler()
    consumer = JobConsumer(js, CHANNEL, handler, limit=lambda: 5, ack_wait=30)
    await consumer.start()
    stoppers.append(consumer)
    await js.publish(bus.JOB_SUBJECT[CHANNEL], b"\xff\xff not a protobuf")
    await publish_jobs(js, job(1))
    assert [r.job_id for r in await results(js, 1)] == ["Q1.1"]
    await eventually(lambda: _equals(pending(js), (0, 0, 0)))
    assert handler.seen == ["Q1.1"]


async def test_crashed_handler_leaves_the_job_unacked(js: Any,
                                                      stoppers: list[JobConsumer]) -> None:
    await consumer_config(js, ack_wait=60)
    handler = Handler(fail=True)
    consumer = JobConsumer(js, CHANNEL, handler, limit=lambda: 5, ack_wait=60)
    await consumer.start()
    stoppers.append(consumer)
    await publish_jobs(js, job(1))
    await eventually(lambda: _true(handler.seen == ["Q1.1"] and handler.running == 0))
    assert await pending(js) == (1, 0, 0)  # still ours; redelivered after ack_wait
    assert consumer.handled == 0


async def test_progress_acks_keep_a_long_job(js: Any, stoppers: list[JobConsumer]) -> None:
    """ack_wait 1.5 s, a job that runs 4.5 s: without progress acks JetStream would hand
    it out again (the handler would see it twice)."""
    await consumer_config(js, ack_wait=1.5)
    handler = Handler(hold=True)
    consumer = JobConsumer(js, CHANNEL, handler, limit=lambda: 5, ack_wait=1.5)
    await consumer.start()
    stoppers.append(consumer)
    await publish_jobs(js, job(1))
    await eventually(lambda: _true(handler.seen == ["Q1.1"]))
    await asyncio.sleep(4.5)
    handler.release.set()
    assert [r.job_id for r in await results(js, 1)] == ["Q1.1"]
    assert handler.seen == ["Q1.1"]
    assert (await pending(js))[2] == 0


async def test_unpublishable_result_is_kept_not_delivered_again(
        js: Any, stoppers: list[JobConsumer]) -> None:
    """JetStream refusing writes (a full volume) made workers deliver the same jobs again
    every ack_wait. The result is kept and published once JetStream takes it again; the job
    is never handed out twice meanwhile (progress acks keep it)."""
    await consumer_config(js, ack_wait=1.5)
    config = (await js.stream_info(bus.RESULTS_STREAM)).config
    config.max_msg_size = 8  # JetStream refuses every result
    await js.update_stream(config)
    handler = Handler()
    consumer = JobConsumer(js, CHANNEL, handler, limit=lambda: 5, ack_wait=1.5)
    await consumer.start()
    stoppers.append(consumer)
    await publish_jobs(js, job(1))
    await eventually(lambda: _true(handler.seen == ["Q1.1"] and consumer.in_flight == 1))
    await asyncio.sleep(4.5)  # three ack_waits: no redelivery is the point, not a timing
    assert handler.seen == ["Q1.1"] and consumer.handled == 0
    await bus.ensure_stream(js, next(s for s in bus.MAIL_STREAMS
                                     if s.name == bus.RESULTS_STREAM))  # space again
    assert [r.job_id for r in await results(js, 1)] == ["Q1.1"]
    await eventually(lambda: _true(consumer.handled == 1))
    assert handler.seen == ["Q1.1"]
    await eventually(lambda: _equals(pending(js), (0, 0, 0)))


async def test_stop_finishes_jobs_in_flight_and_fetches_no_more(
        js: Any, stoppers: list[JobConsumer]) -> None:
    await consumer_config(js)
    handler = Handler(hold=True)
    consumer = JobConsumer(js, CHANNEL, handler, limit=lambda: 1, ack_wait=30)
    await consumer.start()
    await publish_jobs(js, job(1), job(2))
    await eventually(lambda: _true(handler.seen == ["Q1.1"]))
    stopping = asyncio.create_task(consumer.stop(grace=20))
    await asyncio.sleep(0)
    handler.release.set()
    await stopping
    assert handler.seen == ["Q1.1"]
    assert [r.job_id for r in await results(js, 1)] == ["Q1.1"]
    assert await pending(js) == (0, 1, 0)  # the second job waits for another replica


async def _equals(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def _true(value: bool) -> bool:
    return value


async def test_deleted_stream_and_consumer_are_created_again(
        js: Any, stoppers: list[JobConsumer]) -> None:
    """After MAIL_JOBS was deleted the workers failed every fetch until restarted, and said
    ready throughout. Now the publisher creates the stream again, the consumer loop its
    consumer, and `ready` is False in between."""
    await consumer_config(js)

    async def recreate() -> None:
        await bus.ensure_mail_streams(js)
        await consumer_config(js)

    handler = Handler()
    consumer = JobConsumer(js, CHANNEL, handler, limit=lambda: 5, ack_wait=30,
                           recreate=recreate, fetch_wait=0.2)
    stoppers.append(consumer)
    await consumer.start()
    await publish_jobs(js, job(1))
    assert [r.job_id for r in await results(js, 1)] == ["Q1.1"]
    await js.delete_stream(bus.JOBS_STREAM)  # the stream and its consumer are gone
    await eventually(lambda: asyncio.sleep(0, not consumer.ready or "Q2.1" in handler.seen))
    await publish_jobs(js, job(2))  # bus.publish creates the stream again
    assert [r.job_id for r in await results(js, 1)] == ["Q2.1"]
    assert consumer.ready


async def test_ready_again_after_recreation_with_no_jobs_waiting(
        js: Any, stoppers: list[JobConsumer]) -> None:
    """A consumer created again on an idle system: fetches then time out (nothing to do),
    which proves the consumer answers. `ready` stayed False until a job came, and an idle
    remote-delivery container stayed unready for five minutes in the container suite."""
    await consumer_config(js)

    async def recreate() -> None:
        await bus.ensure_mail_streams(js)
        await consumer_config(js)

    consumer = JobConsumer(js, CHANNEL, Handler(), limit=lambda: 5, ack_wait=30,
                           recreate=recreate, fetch_wait=0.2)
    stoppers.append(consumer)
    await consumer.start()
    await js.delete_stream(bus.JOBS_STREAM)
    await eventually(lambda: asyncio.sleep(0, not consumer.ready))
    await eventually(lambda: asyncio.sleep(0, consumer.ready))  # no job published


async def test_a_result_larger_than_one_nats_message_is_published_with_its_replies_cut(
        js: Any, stoppers: list[JobConsumer]) -> None:
    """A next hop may answer each RCPT with up to 32 KB of reply: 40 recipients made a
    result over nats-server's max_payload (1 MiB), which JetStream never took, so the job
    was held and retried for ever, never delivered, deferred or bounced. Each reply is cut
    to what fits, keeping its start (code and enhanced status), and every outcome."""
    await consumer_config(js)
    j = DeliveryJob(job_id="Q1.1", queue_id="Q1", channel=CHANNEL_REMOTE, sender="a@x.test",
                    recipients=[f"u{n}@y.test" for n in range(40)], domain="y.test")
    long = "550-5.1.1 " + "\u00e9" * 16_000  # 32 KB of UTF-8, cut inside a character

    async def handler(job_: DeliveryJob) -> DeliveryResult:
        return DeliveryResult(job_id=job_.job_id, queue_id=job_.queue_id, channel=CHANNEL_REMOTE,
                              results=[RecipientResult(recipient=r, outcome=OUTCOME_FAILED,
                                                       reply=long, enhanced_code="5.1.1")
                                       for r in job_.recipients])

    consumer = JobConsumer(js, CHANNEL, handler, limit=lambda: 5, ack_wait=30)
    await consumer.start()
    stoppers.append(consumer)
    await publish_jobs(js, j)
    [out] = await results(js, 1)
    assert [r.recipient for r in out.results] == list(j.recipients)
    assert all(r.outcome == OUTCOME_FAILED and r.enhanced_code == "5.1.1" for r in out.results)
    assert all(r.reply.startswith("550-5.1.1 \u00e9") and len(r.reply) < len(long)
               for r in out.results)
    assert out.ByteSize() <= js._nc.max_payload
    await eventually(lambda: _equals(pending(js), (0, 0, 0)))


@settings(deadline=2000, max_examples=60)
@given(replies=st.lists(st.text(max_size=3000), max_size=60),
       max_payload=st.integers(min_value=8192, max_value=200_000))
def test_fitted_results_fit_and_keep_every_outcome(replies: list[str], max_payload: int) -> None:
    result = DeliveryResult(job_id="Q1.1", queue_id="Q1", channel=CHANNEL_REMOTE,
                            results=[RecipientResult(recipient=f"u{n}@y.test", reply=reply,
                                                     outcome=OUTCOME_FAILED)
                                     for n, reply in enumerate(replies)])
    out = fitted(result, max_payload)
    assert out.ByteSize() <= max_payload - RESULT_HEADROOM
    if result.ByteSize() <= max_payload - RESULT_HEADROOM:
        assert out is result
    for before, after in zip(result.results, out.results, strict=True):
        assert (after.recipient, after.outcome) == (before.recipient, before.outcome)
        assert after.reply == before.reply or (
            after.reply.endswith(CUT_MARK)
            and before.reply.startswith(after.reply[:-len(CUT_MARK)]))


async def test_jobs_arriving_one_by_one_cost_fewer_pull_requests_than_jobs(
        js: Any, nats_server: Any, stoppers: list[JobConsumer]) -> None:
    """Issue 20: jobs come one at a time under a connection-per-message load. A fetch per
    job (a no_wait probe, its 404, then a lingering request) cost the worker's connection
    three NATS messages besides the job, its result and its ack, and nats-py's fetch a
    task and a timer per message. A standing pull request, topped up as slots free, serves
    such a trickle: here 40 jobs, 10 ms apart, with room for 20."""
    await consumer_config(js, max_ack_pending=20)
    nc = await bus.connect(nats_server.url, "worker")
    try:
        async def handle(j: DeliveryJob) -> DeliveryResult:
            await asyncio.sleep(0.02)
            return result_for(j)

        consumer = JobConsumer(nc.jetstream(), CHANNEL, handle, limit=lambda: 20, ack_wait=30)
        await consumer.start()
        stoppers.append(consumer)
        await asyncio.sleep(0.2)
        sent, heard = nc.stats["out_msgs"], nc.stats["in_msgs"]
        for n in range(40):
            await publish_jobs(js, job(n))
            await asyncio.sleep(0.01)
        await eventually(lambda: _true(consumer.handled == 40))
        # every job: its result and ack out, the job and the result's ack in
        requests = nc.stats["out_msgs"] - sent - 2 * 40
        statuses = nc.stats["in_msgs"] - heard - 2 * 40
        assert requests + statuses <= 20, (requests, statuses)
        assert len(await results(js, 40)) == 40
    finally:
        await nc.close()


async def test_two_replicas_hold_no_more_than_their_slots_and_a_dead_ones_jobs_move(
        js: Any, nats_server: Any, stoppers: list[JobConsumer]) -> None:
    """Two replicas on the standing pull request, 2 and 3 slots, 10 jobs: neither ever
    runs more than its slots and the other five wait on the server (max_ack_pending counts
    only what is held). The first one's connection then dies with its jobs unacked (a
    kill -9): after ack_wait the second runs them, and every job is delivered once."""
    await consumer_config(js, max_ack_pending=20, ack_wait=2)
    first_nc = await bus.connect(nats_server.url, "first")
    second_nc = await bus.connect(nats_server.url, "second")
    try:
        first, second = Handler(hold=True), Handler(hold=True)
        dead = JobConsumer(first_nc.jetstream(), CHANNEL, first, limit=lambda: 2, ack_wait=2)
        alive = JobConsumer(second_nc.jetstream(), CHANNEL, second, limit=lambda: 3,
                            ack_wait=2)
        for c in (dead, alive):
            await c.start()
        stoppers.append(alive)
        await publish_jobs(js, *(job(n) for n in range(10)))
        await eventually(lambda: _true(len(first.seen) == 2 and len(second.seen) == 3))
        await asyncio.sleep(1.0)  # the open requests bring no more
        assert (first.max_running, second.max_running) == (2, 3)
        assert await pending(js) == (5, 5, 0)
        await first_nc.close()  # the replica dies holding its two jobs
        second.release.set()
        got = await results(js, 10, timeout=30)
        assert sorted(r.job_id for r in got) == sorted(job(n).job_id for n in range(10))
        assert sorted(second.seen) == sorted(job(n).job_id for n in range(10))
        assert second.max_running == 3
        await eventually(lambda: _equals(pending(js), (0, 0, 0)))  # all acked
        await dead.stop(grace=0)
    finally:
        await second_nc.close()
