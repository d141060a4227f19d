"""docker-compose.yml: valid against the Compose spec and complete for the platform."""

from __future__ import annotations

import subprocess
from typing import Any

import yaml

from tests.deploy.tools import ROOT, SERVICES, tool

COMPOSE = ROOT / "docker-compose.yml"


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


def test_compose_schema() -> None:
    check = tool("check-jsonschema", "pip install check-jsonschema")
    out = subprocess.run([check, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_service_runs_hardened_and_healthchecked() -> None:
    services = compose()["services"]
    for name in SERVICES:
        svc = services[name]
        assert svc["command"] == [f"mailyard-{name}"]
        assert svc["read_only"] is True
        assert svc["user"].split(":")[0] != "0"
        assert svc["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in svc["security_opt"]
        assert "8080/readyz" in " ".join(svc["healthcheck"]["test"])
        deps = svc["depends_on"]
        assert deps["nats"] == {"condition": "service_healthy"}
        for dep in deps.values():
            assert dep["condition"] == "service_healthy"
        assert "build" not in svc or svc["build"]


def test_nats_jetstream_on_a_volume_and_prometheus_grafana() -> None:
    doc = compose()
    nats = doc["services"]["nats"]
    assert any(v.endswith(":/data") for v in nats["volumes"])
    conf = (ROOT / "deploy/nats/nats-compose.conf").read_text()
    assert "jetstream" in conf and "store_dir: /data" in conf and "sync_interval: always" in conf
    assert "healthcheck" in nats
    assert {"prometheus", "grafana"} <= set(doc["services"])
    grafana = doc["services"]["grafana"]
    assert any("provisioning" in v for v in grafana["volumes"])
    assert any("dashboards" in v for v in grafana["volumes"])
    assert {"nats-data", "spool", "mail"} <= set(doc["volumes"])


def test_spool_and_mail_volumes_are_shared() -> None:
    services = compose()["services"]
    for name in ("smtp-ingress", "queue", "remote-delivery", "local-delivery"):
        assert "spool:/var/spool/mailyard" in services[name]["volumes"], name
    assert "mail:/var/mail/mailyard" in services["local-delivery"]["volumes"]


def test_several_remote_delivery_replicas() -> None:
    remote = compose()["services"]["remote-delivery"]
    assert remote["deploy"]["replicas"] >= 2
    assert "ports" not in remote and "container_name" not in remote


def test_secrets_have_no_defaults() -> None:
    for secret in compose()["secrets"].values():
        assert ":?" in secret["file"], "a secret must fail loudly when not provided"


def test_prometheus_scrapes_every_service() -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for name in SERVICES:
        job = jobs[f"mailyard-{name}"]
        (sd,) = job["dns_sd_configs"]
        assert sd["names"] == [name] and sd["port"] == 8080
    assert "nats" in jobs
