"""docker-compose.yml: valid against the Compose spec and complete for the platform."""

from __future__ import annotations

import subprocess
from typing import Any

import yaml

from tests.deploy.tools import ROOT, SERVICES, tool

COMPOSE = ROOT / "docker-compose.yml"
NATS_NODES = ("nats-1", "nats-2", "nats-3")


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
        for node in NATS_NODES:
            assert deps[node] == {"condition": "service_healthy"}
        for dep in deps.values():
            assert dep["condition"] == "service_healthy"
        assert "build" not in svc or svc["build"]


def test_nats_is_a_three_node_cluster_with_prometheus_grafana() -> None:
    doc = compose()
    conf = (ROOT / "deploy/nats/nats-compose.conf").read_text()
    assert "jetstream" in conf and "store_dir: /data" in conf and "sync_interval: always" in conf
    assert all(f"nats://{node}:6222" in conf for node in NATS_NODES)
    volumes = set()
    for node in NATS_NODES:
        nats = doc["services"][node]
        [data] = [v for v in nats["volumes"] if v.endswith(":/data")]
        volumes.add(data)
        assert "healthcheck" in nats
        assert nats["environment"]["SERVER_NAME"] == node
        assert "nats" in nats["networks"]["default"]["aliases"]  # services use nats:4222
    assert len(volumes) == 3  # a store of its own per node
    for name in SERVICES:
        prefix = {"smtp-ingress": "INGRESS", "relay-auth": "RELAYAUTH",
                  "remote-delivery": "REMOTE", "local-delivery": "LOCAL"}.get(name, name.upper())
        assert doc["services"][name]["environment"][f"MAILYARD_{prefix}_NATS_REPLICAS"] == "3"
    assert {"prometheus", "grafana"} <= set(doc["services"])
    grafana = doc["services"]["grafana"]
    assert any("provisioning" in v for v in grafana["volumes"])
    assert any("dashboards" in v for v in grafana["volumes"])
    assert {"nats-data-1", "spool", "mail"} <= set(doc["volumes"])


def test_spool_and_mail_volumes_are_shared() -> None:
    services = compose()["services"]
    for name in ("smtp-ingress", "queue", "remote-delivery", "local-delivery"):
        assert "spool:/var/spool/mailyard" in services[name]["volumes"], name
    assert "mail:/var/mail/mailyard" in services["local-delivery"]["volumes"]


def test_the_dkim_key_folder_is_given_read_only_to_both_signers() -> None:
    """smtp-ingress signs our users' mail and remote-delivery the platform's own (bounces,
    vacation replies), with the same keys: the same host folder, read-only in both, named
    by their DKIM_DIR (without it neither signed anything: the default var/dkim is not
    there in the image)."""
    services = compose()["services"]
    mounts = set()
    for name, prefix in (("smtp-ingress", "INGRESS"), ("remote-delivery", "REMOTE")):
        folder = services[name]["environment"][f"MAILYARD_{prefix}_DKIM_DIR"]
        [mount] = [v for v in services[name]["volumes"] if v.endswith(f":{folder}:ro")]
        mounts.add(mount)
    assert len(mounts) == 1
    assert "dkim" not in str(services["queue"]) and "dkim" not in str(services["local-delivery"])


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
