"""NATS JetStream: the names of every stream, consumer and KV bucket, created idempotently.

The mail path is three work-queue streams:

    smtp-ingress --todo--> queue --job.local / job.remote--> workers --result--> queue

One durable pull consumer per channel is shared by every replica (work sharing for free)
and its max_ack_pending is the cluster-wide concurrency limit (concurrencylocal/remote).
Deferred work never waits on these consumers: the queue keeps its own retry schedule.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import nats
import nats.errors
from google.protobuf.message import Message
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import (
    BucketNotFoundError,
    NoStreamResponseError,
    NotFoundError,
    ServiceUnavailableError,
)
from nats.js.kv import KeyValue

from mailyard.core import js_publish
from mailyard.core.errors import BusError

log = logging.getLogger(__name__)
T = TypeVar("T")

# Subjects
TODO_SUBJECT = "mailyard.todo"
JOB_SUBJECT = {"local": "mailyard.job.local", "remote": "mailyard.job.remote"}
RESULT_SUBJECT = "mailyard.result.{channel}"  # local | remote
EVENTS_SUBJECT = "mailyard.events"            # core NATS, not persisted: watch / tail -f
# History (qmail's log, searchable): every step of a message on a subject of its own, and one
# index record per (address, message) on a subject per address hash. Both literal subjects,
# so a search reads only its own messages through JetStream's per-subject index.
HISTORY_MSG_SUBJECT = "mailyard.history.msg.{queue_id}"
HISTORY_ADDR_SUBJECT = "mailyard.history.addr.{key}"
HISTORY_SUBJECTS = "mailyard.history.>"

# Streams
TODO_STREAM = "MAIL_TODO"
JOBS_STREAM = "MAIL_JOBS"
RESULTS_STREAM = "MAIL_RESULTS"
HISTORY_STREAM = "MAIL_HISTORY"                # limits retention, max_age = HISTORY_DAYS

# Durable consumers
TODO_CONSUMER = "queue-todo"
RESULTS_CONSUMER = "queue-results"
JOB_CONSUMER = {"local": "local-delivery", "remote": "remote-delivery"}

# KV buckets
KV_CONTROL = "control"          # qmail control files, text
KV_DIRECTORY = "directory"      # domains, mailboxes, aliases, lists (protobuf records)
KV_LEASES = "relay_leases"      # POP-before-SMTP leases
KV_AUTH_FAILURES = "auth_failures"
KV_CRAM = "cram_challenges"
KV_LOCKS = "locks"              # leader election (queue)
KV_REMOTE_MEMBERS = "remote_members"  # live remote-delivery replicas (heartbeat, TTL)
KV_GREYLIST = "greylist"        # smtp-ingress greylisting triplets (TTL)
KV_AUTOREPLIES = "autoreplies"  # local-delivery: (mailbox, sender) pairs answered (TTL)
KV_SRS = "srs"                  # the SRS secrets (core.srs_keys), made at first use
KV_LIST_COOKIES = "listcookies"  # the list-subscription cookies' secrets, likewise
KV_LIST_REQUESTS = "listrequests"  # local-delivery: confirmation requests sent lately (TTL)

DUPLICATE_WINDOW = 120.0        # seconds a Nats-Msg-Id is remembered
MAX_REPLICAS = 5                # JetStream's limit for a stream or bucket

# Copies JetStream keeps of every stream and KV bucket this process creates: the setting
# NATS_REPLICAS of every service (1 for one nats-server, 3 on the 3-node cluster of the
# manifests: a quorum survives one node). Set once at start (service.run) for the whole
# process, so that every creation site (streams, views, locks, leases) uses the same number.
_replicas = 1


def set_replicas(replicas: int) -> None:
    global _replicas
    if not 1 <= replicas <= MAX_REPLICAS:
        raise ValueError(f"replicas must be 1..{MAX_REPLICAS}, not {replicas}")
    _replicas = replicas


def replicas() -> int:
    return _replicas


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: list[str]


MAIL_STREAMS = (
    StreamSpec(TODO_STREAM, [TODO_SUBJECT]),
    StreamSpec(JOBS_STREAM, list(JOB_SUBJECT.values())),
    StreamSpec(RESULTS_STREAM, [RESULT_SUBJECT.format(channel="*")]),
)


def stream_for(subject: str) -> StreamSpec | None:
    """The mail stream that takes `subject` (None for any other subject)."""
    for spec in MAIL_STREAMS:
        for pattern in spec.subjects:
            if pattern == subject or (pattern.endswith(".*") and
                                      subject.startswith(pattern[:-1]) and
                                      "." not in subject[len(pattern) - 1:]):
                return spec
    return None


async def connect(url: str, name: str, *, connect_timeout: float = 5.0) -> NATS:
    """A client that reconnects forever: a NATS outage is a pause, not a crash. Started
    before NATS (containers start in any order) it waits for the server, then for
    JetStream (a cluster without a quorum answers "temporarily unavailable")."""
    connected = False

    async def _error(exc: Exception) -> None:
        if connected:
            log.warning("nats error: %s", exc)
        else:
            log.warning("waiting for NATS at %s: %s", url, exc)

    nc = await nats.connect(
        url, name=name, connect_timeout=connect_timeout, max_reconnect_attempts=-1,
        reconnect_time_wait=0.5, error_cb=_error, allow_reconnect=True,
    )
    connected = True
    await patiently("JetStream", nc.jetstream().account_info)
    return nc


# Errors that mean "JetStream is not there yet" (no quorum, a leader being elected, a node
# restarting), not "this is wrong": worth waiting for at start.
_TRANSIENT = (nats.errors.TimeoutError, TimeoutError, nats.errors.NoRespondersError,
              ServiceUnavailableError, NoStreamResponseError)
START_PATIENCE = 300.0  # seconds a service waits for JetStream before it gives up


async def patiently(what: str, step: Callable[[], Awaitable[T]],
                    patience: float = START_PATIENCE) -> T:
    """Run `step` until it stops failing with a transient JetStream error (logged once
    every few seconds), for at most `patience` seconds; then its error is raised."""
    deadline = time.monotonic() + patience
    said = 0.0
    while True:
        try:
            return await step()
        except _TRANSIENT as exc:
            now = time.monotonic()
            if now >= deadline:
                raise
            if now - said >= 5:
                log.warning("waiting for %s: %s", what, exc or type(exc).__name__)
                said = now
            await asyncio.sleep(0.5)


async def ensure_stream(js: JetStreamContext, spec: StreamSpec,
                        replicas: int | None = None, *,
                        patience: float = START_PATIENCE) -> None:
    """Create the stream or bring an existing one to this config (an update also changes
    its replica count: JetStream adds or removes copies live)."""
    await _create_or_update(js, StreamConfig(
        name=spec.name, subjects=spec.subjects, retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE, duplicate_window=DUPLICATE_WINDOW,
        num_replicas=replicas or _replicas,
    ), patience)


async def _create_or_update(js: JetStreamContext, config: StreamConfig,
                            patience: float = START_PATIENCE) -> None:
    await patiently(f"JetStream (stream {config.name})", lambda: _apply_stream(js, config),
                    patience)


async def _apply_stream(js: JetStreamContext, config: StreamConfig) -> None:
    name = config.name or ""
    try:
        await js.stream_info(name)
    except NotFoundError:
        try:
            await js.add_stream(config)
            return
        except Exception:  # another replica created it first
            await js.stream_info(name)
    await js.update_stream(config)


async def ensure_mail_streams(js: JetStreamContext, replicas: int | None = None, *,
                              patience: float = START_PATIENCE) -> None:
    """The three mail streams. `patience`: seconds to wait out a JetStream that is not
    there yet (long at start; a caller holding a client's reply passes its own deadline)."""
    for spec in MAIL_STREAMS:
        await ensure_stream(js, spec, replicas, patience=patience)


async def ensure_history_stream(js: JetStreamContext, max_age: float,
                                replicas: int | None = None) -> None:
    """The history stream: kept by age (a changed HISTORY_DAYS applies at the next start),
    not a work queue; its readers are ephemeral consumers."""
    await _create_or_update(js, StreamConfig(
        name=HISTORY_STREAM, subjects=[HISTORY_SUBJECTS],
        retention=RetentionPolicy.LIMITS, storage=StorageType.FILE, max_age=max_age,
        num_replicas=replicas or _replicas, allow_direct=True,  # reads by subject, any replica
    ))


async def ensure_consumer(js: JetStreamContext, stream: str, durable: str, *,
                          filter_subject: str | None = None, max_ack_pending: int = 1000,
                          ack_wait: float = 60.0, max_deliver: int = 10) -> None:
    """Create the durable pull consumer, or update it (max_ack_pending changes hot)."""
    config = ConsumerConfig(
        durable_name=durable, ack_policy=AckPolicy.EXPLICIT, filter_subject=filter_subject,
        max_ack_pending=max_ack_pending, ack_wait=ack_wait, max_deliver=max_deliver,
        max_waiting=512,
    )
    await patiently(f"JetStream (consumer {durable})", lambda: js.add_consumer(stream, config))


async def ensure_kv(js: JetStreamContext, bucket: str, *, history: int = 1,
                    ttl: float | None = None, replicas: int | None = None,
                    set_ttl: bool = False, msg_ttl: bool = False,
                    max_keys: int | None = None) -> KeyValue:
    """Open the bucket, creating it if needed; an existing bucket with another replica
    count is brought to this one (a bucket made by an R1 release grows to R3). An existing
    bucket keeps the TTL it was made with (remote_members' replicas follow it), unless
    `set_ttl`: then it is brought to `ttl` (relay-auth's AUTH_FAIL_WINDOW raised after the
    first start still lost its failure counters at twice the old window). `msg_ttl`: the
    bucket takes per-key TTLs (nats-server 2.11+; one made before without them is given
    them). `max_keys`: the bucket holds at most that many entries, the oldest going first
    (a bound against a flood of writes, for a bucket of short-lived keys)."""
    want = replicas or _replicas

    async def open_bucket() -> KeyValue:
        try:
            kv = await js.key_value(bucket)
        except BucketNotFoundError:
            try:
                kv = await js.create_key_value(KeyValueConfig(
                    bucket=bucket, history=history, ttl=ttl, storage=StorageType.FILE,
                    replicas=want))
                if not max_keys:  # KeyValueConfig has no max_msgs: settled below
                    return kv
            except _TRANSIENT:
                raise
            except Exception:  # lost a creation race with another replica
                kv = await js.key_value(bucket)
        await _kv_settle(js, bucket, want, ttl if set_ttl else None, msg_ttl, max_keys)
        return kv

    return await patiently(f"JetStream (bucket {bucket})", open_bucket)


async def _kv_settle(js: JetStreamContext, bucket: str, want: int,
                    ttl: float | None, msg_ttl: bool = False,
                    max_keys: int | None = None) -> None:
    info = await js.stream_info(f"KV_{bucket}")
    config = info.config
    changes: dict[str, Any] = {}
    if max_keys and (config.max_msgs != max_keys or config.discard != DiscardPolicy.OLD):
        changes.update(max_msgs=max_keys, discard=DiscardPolicy.OLD)
    if msg_ttl and not config.allow_msg_ttl:
        changes["allow_msg_ttl"] = True
    if config.num_replicas != want:
        changes["num_replicas"] = want
    if ttl and abs((config.max_age or 0.0) - ttl) > 1e-3:
        # as create_key_value sets them: the dedupe window may not exceed the TTL
        changes.update(max_age=ttl, duplicate_window=min(120.0, ttl))
    if not changes:
        return
    try:
        await js.update_stream(replace(config, **changes))
    except Exception as exc:  # e.g. fewer servers than replicas: keep working with what is
        log.warning("KV bucket %s keeps its settings, not %s: %s", bucket, changes, exc)


async def publish(js: JetStreamContext, subject: str, message: Message, *, msg_id: str,
                  timeout: float = 5.0, headers: dict[str, str] | None = None) -> None:
    """Publish a protobuf and wait for the stream's ack (deduplicated on msg_id). A mail
    stream found missing (deleted by an operator or a disaster) is created again and the
    publish tried once more: every publisher heals it, rather than 451 for ever."""
    data, all_headers = message.SerializeToString(), {"Nats-Msg-Id": msg_id, **(headers or {})}
    acks = js_publish.publisher(js._nc)
    try:
        try:
            await acks.publish(subject, data, all_headers, timeout)
        except NoStreamResponseError:
            spec = stream_for(subject)
            if spec is None:
                raise
            log.warning("stream %s is missing: creating it again", spec.name)
            await ensure_stream(js, spec, patience=timeout)
            await acks.publish(subject, data, all_headers, timeout)
    except TimeoutError as exc:
        raise BusError(f"no ack from JetStream for {subject} within {timeout}s") from exc
    except Exception as exc:
        raise BusError(f"publish to {subject} failed: {exc}") from exc


def decode(cls: type[Any], data: bytes) -> Any:
    message = cls()
    message.ParseFromString(data)
    return message
