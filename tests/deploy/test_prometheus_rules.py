"""promtool: the rules and the compose Prometheus config check, the rule unit tests pass,
and every alert's runbook link points at a section of docs/runbook.md."""

from __future__ import annotations

import re
import subprocess

import yaml

from tests.deploy.tools import DEPLOY, ROOT, tool

PROM = DEPLOY / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = tool("promtool", "apt-get install prometheus")
    return subprocess.run([binary, *args], capture_output=True, text=True, check=False,
                          cwd=ROOT)


def test_promtool_check_rules() -> None:
    out = promtool("check", "rules", *map(str, sorted((PROM / "rules").glob("*.yml"))))
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_check_config() -> None:
    out = promtool("check", "config", str(PROM / "prometheus.yml"))
    assert out.returncode == 0, out.stdout + out.stderr


def test_k8s_scrape_config_names_jobs_like_compose() -> None:
    """Debian's promtool is built without kubernetes_sd, so this one is checked here: the
    relabelling turns pod labels into the job names the alert rules use."""
    config = yaml.safe_load((PROM / "prometheus-k8s.yml").read_text())
    assert config["rule_files"] == ["rules/*.yml"]
    (job,) = config["scrape_configs"]
    relabels = job["relabel_configs"]
    to_job = [r for r in relabels if r.get("target_label") == "job"]
    services = ["smtp-ingress", "queue", "remote-delivery", "local-delivery", "relay-auth",
                "directory"]
    for service in services:
        hits = [r for r in to_job if re.fullmatch(r["regex"], service)]
        assert [re.sub(r"\$1", service, h["replacement"]) for h in hits] == [
            f"mailyard-{service}"]
    assert [r["replacement"] for r in to_job if re.fullmatch(r["regex"], "nats")] == ["nats"]


def test_promtool_test_rules() -> None:
    out = promtool("test", "rules", *map(str, sorted((PROM / "tests").glob("*.yml"))))
    assert out.returncode == 0, out.stdout + out.stderr


def _alerts() -> list[dict[str, object]]:
    alerts = []
    for path in sorted((PROM / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            alerts += [r for r in group["rules"] if "alert" in r]
    return alerts


def test_the_alerts_issue_9_asks_for() -> None:
    names = {a["alert"] for a in _alerts()}
    assert {"MailyardQueueGrowing", "MailyardOldestMessageTooOld", "MailyardHighDeferralRatio",
            "MailyardSpoolUnavailable", "MailyardNatsUnavailable",
            "MailyardBounceStorm"} <= names


def test_every_alert_is_unit_tested_and_has_a_runbook_section() -> None:
    tested = (PROM / "tests" / "mailyard_test.yml").read_text()
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
               for h in re.findall(r"^#+ (.*)$", runbook, re.M)}
    for alert in _alerts():
        name = str(alert["alert"])
        annotations = alert["annotations"]
        assert isinstance(annotations, dict)
        assert annotations["runbook"] == f"docs/runbook.md#{name.lower()}"
        assert name.lower() in anchors, f"docs/runbook.md has no section {name}"
        assert f"alertname: {name}" in tested, f"{name} has no promtool test"
