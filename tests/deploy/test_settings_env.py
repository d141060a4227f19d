"""The environment compose and Kubernetes give each service names real settings (pydantic
ignores unknown MAILYARD_* variables, so a typo would silently fall back to a default) and
loads: every service's Settings.load() accepts it."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
import yaml

from tests.deploy.kustomize import render
from tests.deploy.tools import DEPLOY, ROOT, SERVICES

PREFIX = {"smtp-ingress": "INGRESS", "queue": "QUEUE", "remote-delivery": "REMOTE",
          "local-delivery": "LOCAL", "relay-auth": "RELAYAUTH", "directory": "DIRECTORY"}


def settings_class(service: str) -> Any:
    module = importlib.import_module(f"mailyard.{service.replace('-', '_')}.settings")
    return module.Settings


def compose_env(service: str) -> dict[str, str]:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = doc["services"][service]["environment"]
    return {k: str(v).replace("${MAILYARD_ME:-mail.localhost}", "mail.localhost")
            for k, v in env.items()}


def k8s_env(service: str) -> dict[str, str]:
    docs = render(DEPLOY / "k8s" / "overlays" / "prod")
    (workload,) = [d for d in docs if d["kind"] in {"Deployment", "StatefulSet"}
                   and d["metadata"]["name"] == service]
    configmaps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    env = {}
    for item in workload["spec"]["template"]["spec"]["containers"][0]["env"]:
        ref = item.get("valueFrom", {}).get("configMapKeyRef")
        if ref:  # the value the overlay's ConfigMap gives (it must have the key)
            env[item["name"]] = configmaps[ref["name"]][ref["key"]]
        else:    # a field (pod name) or a literal
            env[item["name"]] = item.get("value", "pod-0")
    return env


@pytest.mark.parametrize("source", ["compose", "k8s"])
@pytest.mark.parametrize("service", SERVICES)
def test_env_names_are_settings_and_load(service: str, source: str,
                                         monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Any) -> None:
    env = compose_env(service) if source == "compose" else k8s_env(service)
    cls = settings_class(service)
    prefix = f"MAILYARD_{PREFIX[service]}_"
    fields = set(cls.model_fields)
    for name in env:
        assert name.startswith(prefix), f"{name}: wrong prefix for {service}"
        assert name.removeprefix(prefix).lower() in fields, f"{name} is no setting of {service}"
    for name, value in env.items():
        # Paths inside the container do not exist here; point them into tmp_path.
        inside = value.startswith(("/var/", "/etc/", "/run/"))
        monkeypatch.setenv(name, str(tmp_path / value.lstrip("/")) if inside else value)
    cls.load()
