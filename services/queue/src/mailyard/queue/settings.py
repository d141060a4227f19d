"""Typed settings of the queue (env prefix MAILYARD_QUEUE_)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from mailyard.core.settings import ServiceSettings, service_config


class Settings(ServiceSettings):
    model_config = service_config("QUEUE")

    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=50052, ge=0, le=65535)
    state_dir: Path = Path("var/queue")
    # FULL: a todo is acked only after its state reached the disk (survives an OS crash).
    state_sync: Literal["NORMAL", "FULL"] = "FULL"
    # qmail's chanskip: next attempt = birth + (sqrt(age) + c)^2, in seconds. At most an
    # hour (the first retry 150 days off already): 1e300 overflowed in every deferral,
    # ending the process, and inf put every next attempt at inf.
    retry_c_remote: float = Field(default=20.0, gt=0, le=3600)
    retry_c_local: float = Field(default=10.0, gt=0, le=3600)
    bounce_format: Literal["dsn", "qsbmf"] = "dsn"
    delay_warnings: bool = False
    delay_warning_after: float = Field(default=4 * 3600.0, gt=0)  # message age, seconds
    reconcile_interval: float = Field(default=300.0, gt=0)
    reconcile_at_start: bool = True
    # A committed file younger than this may still have its todo on the way: leave it.
    reconcile_grace: float = Field(default=120.0, ge=0)
    # A job handed out longer ago than this without a result is re-sent (the last resort;
    # lost.py finds jobs purged from JetStream within LOST_CHECK_INTERVAL, poison.py the ones
    # JetStream gave up on). A dead worker's job comes back after the workers' ack_wait
    # (10 s), and JetStream gives up after max_deliver (5) x ack_wait = 50 s; a live
    # transaction can run minutes (30 s connect, 300 s per command at worst): 10 minutes.
    stuck_after: float = Field(default=600.0, gt=0)
    # How often the queue checks whether dispatched jobs are still in JetStream (lost.py).
    lost_check_interval: float = Field(default=30.0, gt=0)
    dispatch_batch: int = Field(default=500, ge=1)
    consume_batch: int = Field(default=100, ge=1)
    # ack_wait of the queue's own consumers (todo, results): after a crash, what the dead
    # process had fetched comes back this much later. Redelivery is harmless (idempotent).
    consume_ack_wait: float = Field(default=30.0, gt=0)
    scheduler_max_sleep: float = Field(default=1.0, gt=0)
    # After a todo / result fetch that did not fill CONSUME_BATCH, wait this long before the
    # next one so that the next batch is bigger: each batch costs a pull request, a store
    # transaction and a dispatch round whatever its size. Adds at most this much latency per
    # stage; 0 fetches again at once.
    consume_linger: float = Field(default=0.02, ge=0, le=1.0)
    # Under load a todo/result pull gathers up to consume_batch for this long (bigger
    # batches, fewer transactions); idle, a message is taken the moment it arrives.
    consume_batch_wait: float = Field(default=0.1, gt=0, le=1.0)
    # Leader lock in KV "locks": refreshed every ttl/3; a standby takes over after ttl
    # seconds without a refresh.
    leader_ttl: float = Field(default=15.0, gt=0)
    # History (`mailyard log`): every step of every message kept this many days.
    history_days: float = Field(default=30.0, gt=0, le=3650)
    # The local history index (history_index.py, a file in STATE_DIR): searches read it once
    # it has caught up with MAIL_HISTORY. A search waits up to HISTORY_INDEX_WAIT seconds
    # for it to reach the stream's last record, else reads the stream (as while it fills).
    history_index: bool = True
    history_index_wait: float = Field(default=1.0, ge=0, le=30)
    history_index_batch: int = Field(default=1000, ge=1, le=10_000)  # records per transaction
    # Rows older than HISTORY_DAYS are deleted this often, a bounded batch at a time.
    history_index_expire_interval: float = Field(default=600.0, gt=0)
    # Live streams (Watch, Follow): bytes one client may leave unread in the queue (live.py);
    # past them it misses events and is told so. A message of events may be nats-server's
    # max_payload (1 MiB): a smaller bound drops every such message.
    live_stream_buffer: int = Field(default=2 * 1024 * 1024, ge=1024)
    # Live streams open at once (Watch and Follow together); past them RESOURCE_EXHAUSTED.
    # nats-server sends the queue's connection every event once per stream.
    live_streams: int = Field(default=16, ge=1, le=1000)
