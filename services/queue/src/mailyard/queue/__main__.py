"""`python -m mailyard.queue`: qmail-send as a service.

Start order: STATE_DIR checked (a local file system) and locked (this process only), NATS,
spool, control and directory views, then the admin plane (gRPC + HTTP) at once, so a standby
answers health checks. Only after the leader lock is won does the process open the state
store and start consuming todos and results, dispatching jobs and reconciling. If another
state led last, this one is stale: it is discarded and rebuilt from the spool. Losing the
lock ends this term (every task of it stops, the store closes) and the process stands by
again; a task that fails ends the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from mailyard.api.history.v1 import history_pb2, history_pb2_grpc
from mailyard.api.queue.v1 import queue_pb2, queue_pb2_grpc
from mailyard.core import bus
from mailyard.core.control import ControlView
from mailyard.core.directory import DirectoryView
from mailyard.core.grpcserver import GrpcServer, grpc_limits, service_name
from mailyard.core.http import HttpServer, app_limits, http_limits, make_app
from mailyard.core.metrics import set_build
from mailyard.core.service import run
from mailyard.core.spool import Spool
from mailyard.queue import live, lost, metrics, poison, web
from mailyard.queue.admin import QueueAdmin, Runtime
from mailyard.queue.engine import Queue
from mailyard.queue.history_feed import HistoryFeed
from mailyard.queue.history_index import FILE_NAME as HISTORY_INDEX_FILE
from mailyard.queue.history_index import HistoryIndex
from mailyard.queue.history_search import HistoryService
from mailyard.queue.leader import Leader, LeadershipLost
from mailyard.queue.preprocess import Dispatcher, TodoConsumer
from mailyard.queue.reconcile import Reconciler
from mailyard.queue.results import ResultConsumer, retry_owed
from mailyard.queue.settings import Settings
from mailyard.queue.state import STATE_NAMES, Store
from mailyard.queue.statedir import StateDir

log = logging.getLogger("mailyard.queue")
QUEUE_SERVICE = service_name(queue_pb2, "QueueService")


def export_gauges(q: Queue) -> None:
    """Gauges read the store's in-memory counters when scraped."""
    store = q.store
    metrics.MESSAGES.set_function(lambda: store.messages)
    metrics.HELD.set_function(lambda: store.held)
    metrics.NOT_PREPROCESSED.set_function(lambda: q.not_preprocessed)
    metrics.OLDEST_AGE.set_function(
        lambda: max(0.0, time.time() - store.oldest) if store.oldest is not None else 0.0)
    for state, name in STATE_NAMES.items():
        metrics.RECIPIENTS.labels(name).set_function(_count_of(store, state))


def _count_of(store: Store, state: int) -> Callable[[], float]:
    return lambda: float(store.by_state[state])


async def _poll_todo_backlog(q: Queue) -> None:
    while True:
        await q.refresh_not_preprocessed()
        await asyncio.sleep(5)


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    set_build("queue")
    state_dir = StateDir(settings.state_dir)
    state_dir.acquire()  # SettingsError: a network file system, or held by another process
    try:
        await _serve(settings, stop, state_dir)
    finally:
        state_dir.release()


async def _serve(settings: Settings, stop: asyncio.Event, state_dir: StateDir) -> None:
    nc = await bus.connect(settings.nats_url, f"queue-{settings.instance}")
    js = nc.jetstream()
    await bus.ensure_mail_streams(js)
    await bus.ensure_history_stream(js, settings.history_days * 86400)
    spool = Spool(settings.spool_dir)
    spool.ensure()
    control, directory = ControlView(), DirectoryView()
    await control.start(js)
    await directory.start(js)

    # The history index is fed in every process, leader or standby: both answer History.
    feed = HistoryFeed(js, HistoryIndex(settings.state_dir / HISTORY_INDEX_FILE),
                       days=settings.history_days, batch=settings.history_index_batch,
                       expire_every=settings.history_index_expire_interval) \
        if settings.history_index else None
    feeding = asyncio.create_task(feed.run(), name="history-index") if feed else None

    runtime = Runtime()
    app = make_app("queue", {"nats": lambda: nc.is_connected,
                             "leader": lambda: runtime.queue is not None,
                             # todo and result consumers work (false while one is re-created)
                             "consumers": lambda: runtime.queue is not None
                             and all(runtime.queue.consuming.values())},
                   tokens_file=settings.tokens_file, host=settings.http_host,
                   **app_limits(settings))
    web.mount(app, runtime, js, feed, settings.history_index_wait)
    streams = live.Streams(settings.live_streams, settings.live_stream_buffer)  # Watch, Follow
    http = (HttpServer(app, settings.http_host, settings.http_port, **http_limits(settings))
            if settings.http_port else None)
    grpc_server = GrpcServer(settings.grpc_host, settings.grpc_port, [
        (queue_pb2_grpc.add_QueueServiceServicer_to_server, QueueAdmin(runtime, streams),
         QUEUE_SERVICE),
        # history is read from JetStream: a standby answers it too
        (history_pb2_grpc.add_HistoryServicer_to_server, HistoryService(
            nc, js, streams, feed, settings.history_index_wait),
         service_name(history_pb2, "History"))], tokens_file=settings.tokens_file,
        **grpc_limits(settings))
    await grpc_server.start()
    # a standby answers History but not QueueService: health says so per service
    await grpc_server.set_service_serving(QUEUE_SERVICE, False)
    if http:
        await http.start()
    log.info("admin plane up", extra={"grpc_port": grpc_server.port})

    leader = Leader(js, settings.instance, settings.leader_ttl, state_dir.state_id)
    stopping = asyncio.create_task(stop.wait())
    failed = False
    try:
        # Leading until the lock is lost, then standing by again in the same process: a
        # NATS outage longer than the lock's ttl must not need a supervisor to restart the
        # queue (podman without systemd never did, and all delivery stopped).
        while not stopping.done() and not failed:
            failed = await _lead(settings, nc, js, spool, control, directory, runtime,
                                 leader, state_dir, stopping, grpc_server)
    finally:
        stopping.cancel()
        runtime.queue = None
        await grpc_server.stop(2.0)
        if http:
            await http.stop()
        if not failed:
            await leader.release()
        if feeding:
            feeding.cancel()
            with contextlib.suppress(BaseException):
                await feeding
        await control.stop()
        await directory.stop()
        spool.close()
        await nc.close()
    if failed:
        raise SystemExit(1)


async def _lead(settings: Settings, nc: NATS, js: JetStreamContext, spool: Spool,
                control: ControlView, directory: DirectoryView, runtime: Runtime,
                leader: Leader, state_dir: StateDir, stopping: asyncio.Task[bool],
                grpc_server: GrpcServer) -> bool:
    """Wait for the leader lock, then lead until stopped or the lock is lost (False: stand
    by again) or a task fails (True: the process exits)."""
    acquiring = asyncio.create_task(leader.acquire())
    await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not acquiring.done():
        acquiring.cancel()
        with contextlib.suppress(BaseException):
            await acquiring
        return False
    rebuild = bool(leader.previous_state) and leader.previous_state != state_dir.state_id
    if rebuild:
        # Another replica's state led last: ours may list messages it has delivered
        # and removed since. Start empty; the reconciler rebuilds from the spool.
        log.warning("another queue state led last; rebuilding from the spool")
        state_dir.discard()
        leader.state_id = state_dir.state_id
    store = Store(settings.state_dir / "queue.db", sync=settings.state_sync)
    await store.aopen()
    tasks: list[asyncio.Task[None]] = []
    failed = False
    try:
        q = Queue(settings, nc, js, spool, store, control, directory)
        export_gauges(q)
        reconciler = Reconciler(q)
        runtime.queue, runtime.reconciler = q, reconciler
        await grpc_server.set_service_serving(QUEUE_SERVICE, True)
        if rebuild:  # before any result is consumed: results must find their messages
            await reconciler.run(dry_run=False, rebuild=True)
        log.info("leading", extra={"messages": store.messages})
        tasks = [asyncio.create_task(c, name=n) for n, c in (
            ("leader", leader.hold()),
            ("todo", TodoConsumer(q).run()),
            ("results", ResultConsumer(q).run()),
            ("dispatch", Dispatcher(q).run()),
            ("reconcile", reconciler.run_forever(settings.reconcile_at_start and not rebuild)),
            ("bounce-retry", retry_owed(q)),
            ("lost-jobs", lost.watch(q, settings.lost_check_interval)),
            ("poison-jobs", poison.watch(q)),
            ("backlog", _poll_todo_backlog(q)),
        )]
        done, _ = await asyncio.wait({*tasks, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is stopping or task.cancelled() or task.exception() is None:
                continue
            if isinstance(task.exception(), LeadershipLost):
                log.warning("not leading any more (%s): standing by", task.exception())
            else:
                log.error("%s stopped: %s", task.get_name(), task.exception())
                failed = True
    finally:
        # Everything of this term ends before the next: no old task touches the state or
        # hands out a job once another process may lead.
        runtime.queue = None
        await grpc_server.set_service_serving(QUEUE_SERVICE, False)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        await store.aclose()
    return failed


def main() -> None:
    run("queue", Settings, serve)


if __name__ == "__main__":
    main()
