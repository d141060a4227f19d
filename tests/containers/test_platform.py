"""Mailyard from its images, end to end: every service ready and non-root, a message into a
mailbox and one to a next hop through the containers, and one NATS node killed under load
without losing a message that got a 250."""

from __future__ import annotations

import json
import threading
import time

import pytest

from tests.containers.conftest import INGRESS_PORTS, Platform

SERVICES = ["directory", "relay-auth", "queue", "smtp-ingress", "smtp-ingress-2",
            "remote-delivery", "local-delivery"]


@pytest.fixture(scope="module")
def configured(platform: Platform) -> Platform:
    gateway = json.loads(platform.podman(
        "network", "inspect", f"{platform.project}_default", "--format",
        "{{json .Subnets}}").stdout)[0]["gateway"]
    platform.cli("domain", "add", "example.test")
    platform.cli("user", "add", "postmaster@example.test", "--password-stdin",
                 stdin="correct horse battery\n")
    platform.cli("route", "set", "remote.test", f"{platform.sink_ip}:2525")
    # Connections published on 127.0.0.1 arrive from the network's gateway: let it relay.
    platform.cli("control", "set", "tcp.smtp", f'{gateway}:allow,RELAYCLIENT=""', ":allow")
    return platform


def test_every_service_is_ready_non_root_in_its_own_command(platform: Platform) -> None:
    assert len(platform.containers("remote-delivery")) == 2
    assert [len(platform.containers(f"nats-{i}")) for i in (1, 2, 3)] == [1, 1, 1]
    for service in SERVICES:
        (name, *more) = platform.containers(service)
        for container in (name, *more):
            assert platform.healthy(container), container
            uid = platform.podman("exec", container, "id", "-u").stdout.strip()
            assert uid == "10001", f"{container} runs as {uid}"
            cmdline = platform.podman("exec", container, "cat", "/proc/1/cmdline").stdout
            command = service.removesuffix("-2")
            assert f"mailyard-{command}" in cmdline, cmdline
    out = platform.podman("run", "--rm", platform.env["MAILYARD_IMAGE"], "mailyard", "--help")
    assert "usage: mailyard" in out.stdout


def _wait(check: object, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.5)
    raise AssertionError(f"{what} not within {timeout}s")


def test_a_message_into_a_mailbox_and_one_to_the_next_hop(configured: Platform) -> None:
    p = configured
    code, reply = p.send(INGRESS_PORTS[0], "postmaster@example.test", "to-the-mailbox")
    assert code == 250, reply
    (local,) = p.containers("local-delivery")

    def delivered() -> bool:
        out = p.podman("exec", local, "sh", "-c",
                       "cat /var/mail/mailyard/example.test/postmaster/Maildir/new/* "
                       "2>/dev/null", check=False).stdout
        return "Subject: to-the-mailbox" in out

    _wait(delivered, "delivery into the mailbox")
    code, reply = p.send(INGRESS_PORTS[1], "someone@remote.test", "to-the-next-hop")
    assert code == 250, reply
    _wait(lambda: "to-the-next-hop" in p.sink_tokens(), "delivery to the next hop")


def _todo_leader(p: Platform) -> str:
    """The NATS node leading the MAIL_TODO stream (the one whose loss matters most)."""
    (queue,) = p.containers("queue")
    script = ("import asyncio, nats\n"
              "async def m():\n"
              "    nc = await nats.connect('nats://nats:4222')\n"
              "    info = await nc.jetstream().stream_info('MAIL_TODO')\n"
              "    print(info.config.num_replicas, info.cluster.leader)\n"
              "    await nc.close()\n"
              "asyncio.run(m())\n")
    replicas, leader = p.podman("exec", queue, "python", "-c", script).stdout.split()
    assert replicas == "3"
    return leader


def test_killing_a_nats_node_under_load_loses_no_accepted_message(configured: Platform) -> None:
    """Four clients send without pause over both ingress containers; the node leading the
    todo stream is killed mid-load. Replies during the fail-over may be 451 (the client
    retries later); every 250 must be delivered, and mail must be accepted again after."""
    p = configured
    leader = _todo_leader(p)
    accepted: list[str] = []
    queue_ids: dict[str, str] = {}  # token -> queue id from the 250 reply
    refused: list[tuple[str, int]] = []
    killed_at: list[float] = []
    after_kill: list[float] = []
    done = threading.Event()
    sent = threading.Semaphore(0)

    def sender(worker: int) -> None:
        i = 0
        while not done.is_set() and i < 1000:
            token = f"load-{worker}-{i}"
            try:
                code, reply = p.send(INGRESS_PORTS[worker % 2], f"r{i}@remote.test", token)
            except OSError:  # a connection cut while NATS fails over: not accepted
                code, reply = 0, b""
            if code == 250:
                accepted.append(token)
                queue_ids[token] = reply.decode().split()[-1]
                if killed_at:
                    after_kill.append(time.monotonic() - killed_at[0])
            else:
                refused.append((token, code))
            sent.release()
            i += 1

    threads = [threading.Thread(target=sender, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    try:
        for _ in range(40):  # under load: 40 messages answered
            assert sent.acquire(timeout=120), "no load"
        (node,) = p.containers(leader)
        killed_at.append(time.monotonic())
        p.podman("kill", node)
        _wait(lambda: len(after_kill) >= 80, "80 messages accepted after the kill", 240)
    finally:
        done.set()
        for t in threads:
            t.join(60)
    print(f"killed {leader}: {len(accepted)} accepted, {len(refused)} refused, first 250 "
          f"{after_kill[0]:.1f}s after the kill")
    try:
        _wait(lambda: set(accepted) <= p.sink_tokens(), "every accepted message delivered",
              timeout=300)
    except AssertionError:
        missing = sorted(set(accepted) - p.sink_tokens())
        print(_what_became_of(p, [queue_ids[token] for token in missing[:5]]))
        raise AssertionError(f"{len(missing)} accepted but not delivered: {missing[:10]}") from None


def _what_became_of(p: Platform, queue_ids: list[str]) -> str:
    """For a failure report: each lost message's history, queue entry and log lines, then
    the warnings and errors of every container (CI shows only part of a long output)."""
    parts = []
    for qid in queue_ids:
        for args in (("log", "--id", qid), ("queue", "explain", qid)):
            try:
                parts.append(f"$ mailyard {' '.join(args)}\n{p.cli(*args, timeout=10)}")
            except AssertionError as exc:
                parts.append(str(exc))
    for name in p.containers():
        out = p.podman("logs", name, check=False)
        lines = (out.stdout + out.stderr).splitlines()
        keep = [line for line in lines if any(qid in line for qid in queue_ids)
                or '"level": "warning"' in line or '"level": "error"' in line]
        parts.append(f"--- {name}: {len(keep)} of {len(lines)} lines\n" + "\n".join(
            line[:300] for line in keep[-60:]))
    return "\n".join(parts)
