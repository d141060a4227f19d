"""A real Prometheus (Debian's `prometheus` package) scrapes the running platform, loads the
alert rules, and a query through its HTTP API returns the messages just sent.

The platform is mailyard.cli.platform.Platform (what `mailyard up` and tests/e2e run): every
service as a process on free loopback ports. Prometheus gets one job per service, named as
in deploy/prometheus/prometheus.yml (mailyard-<service>), with static 127.0.0.1 targets."""

from __future__ import annotations

import json
import smtplib
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from mailyard.core.natsserver import free_port, stop_process
from tests.deploy.tools import DEPLOY, tool

pytestmark = pytest.mark.slow


@dataclass
class Scraped:
    platform: Any
    targets: dict[str, list[int]]  # job -> /metrics ports


@pytest.fixture(scope="module")
def metrics_targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    """The whole platform, and the /metrics ports of every running service."""
    from mailyard.cli.platform import Platform, free_ports

    data: Path = tmp_path_factory.mktemp("platform")
    platform = Platform(data, ports=free_ports(), replicas=2, dovecot=False)
    try:
        platform.start()
    except BaseException:
        for log in sorted((data / "log").glob("*.log")):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
        raise
    targets: dict[str, list[int]] = {}
    for run in platform.running.values():
        service = run.spec.module.rsplit(".", 1)[-1].replace("_", "-")
        targets.setdefault(f"mailyard-{service}", []).append(run.spec.http_port)
    yield Scraped(platform, targets)
    platform.stop()


class Prometheus:
    def __init__(self, workdir: Path, targets: dict[str, list[int]]) -> None:
        self.binary = tool("prometheus", "apt-get install prometheus")
        self.port = free_port()
        self.workdir = workdir
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in sorted((DEPLOY / "prometheus/rules").glob("*.yml"))],
            "scrape_configs": [
                {"job_name": job, "scrape_interval": "1s",
                 "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in ports]}]}
                for job, ports in sorted(targets.items())],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Prometheus:
        log = open(self.workdir / "prometheus.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [self.binary, f"--config.file={self.workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=log, stderr=subprocess.STDOUT)
        self.wait(lambda: self.get("/-/ready", raw=True) is not None, 30, "ready")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            stop_process(self.proc)

    def get(self, path: str, raw: bool = False, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:  # noqa: S310 (http://127.0.0.1)
                body = resp.read()
        except OSError:
            return None
        return body if raw else json.loads(body)["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=promql)
        return list(data["result"]) if data else []

    def wait(self, condition: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.log()}")
            if condition():
                return
            time.sleep(0.25)
        raise AssertionError(f"prometheus: not {what} after {timeout}s\n{self.log()}")

    def log(self) -> str:
        return (self.workdir / "prometheus.log").read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def prometheus(metrics_targets: Scraped,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    prom = Prometheus(tmp_path_factory.mktemp("prometheus"), metrics_targets.targets).start()
    yield prom
    prom.stop()


def test_every_service_is_scraped(prometheus: Prometheus, metrics_targets: Scraped) -> None:
    expected = sum(len(ports) for ports in metrics_targets.targets.values())
    assert set(metrics_targets.targets) == {
        f"mailyard-{s}" for s in ("smtp-ingress", "queue", "remote-delivery", "local-delivery",
                                  "relay-auth", "directory")}

    def all_up() -> bool:
        up = prometheus.query('up{job=~"mailyard-.+"} == 1')
        return len(up) == expected

    prometheus.wait(all_up, 30, f"scraping {expected} targets")
    builds = prometheus.query("count by (job) (mailyard_build_info)")
    assert {r["metric"]["job"] for r in builds} == set(metrics_targets.targets)


def test_alert_rules_load_in_prometheus(prometheus: Prometheus) -> None:
    prometheus.wait(lambda: bool((prometheus.get("/api/v1/rules") or {}).get("groups")), 15,
                    "loading rules")
    groups = prometheus.get("/api/v1/rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert {r["name"] for r in rules} >= {"MailyardQueueGrowing", "MailyardBounceStorm"}
    assert all(r["health"] != "err" for r in rules), [r for r in rules if r["health"] == "err"]


def test_query_returns_the_messages_just_sent(prometheus: Prometheus,
                                              metrics_targets: Scraped) -> None:
    def accepted() -> float:
        # No series before the first message (label children appear on first use): 0.
        result = prometheus.query("sum(mailyard_smtp_messages_accepted_total)")
        return float(result[0]["value"][1]) if result else 0.0

    prometheus.wait(lambda: bool(prometheus.query('up{job="mailyard-smtp-ingress"} == 1')), 20,
                    "scraping smtp-ingress")
    before = accepted()
    sent = 3
    smtp_port = metrics_targets.platform.ports.smtp
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=15) as client:
        client.ehlo("prometheus-test.example")
        for i in range(sent):
            client.sendmail("sender@example.com", ["someone@example.net"],
                            f"Subject: scrape {i}\r\n\r\nbody {i}\r\n".encode())
    prometheus.wait(lambda: accepted() == before + sent, 20, f"counting {sent} more messages")
    by_listener = prometheus.query(
        'sum by (listener) (mailyard_smtp_messages_accepted_total{job="mailyard-smtp-ingress"})')
    assert {r["metric"]["listener"] for r in by_listener} >= {"smtp"}
