"""deploy/k8s: both overlays render, pass kubernetes-validate --strict, and keep the rules
of issue 9 (probes, limits, securityContext, PDBs, autoscaling, policies, storage, SMTP)."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.deploy.kustomize import render
from tests.deploy.tools import DEPLOY, GRPC_SERVICES, HTTP_ONLY_SERVICES, SERVICES, tool

K8S = DEPLOY / "k8s"
TARGETS = ["base", "overlays/dev", "overlays/prod"]
Doc = dict[str, Any]


@pytest.fixture(scope="module", params=TARGETS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[Doc]]:
    return request.param, render(K8S / request.param)


def by(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_spec(doc: Doc) -> Doc:
    spec: Doc = doc["spec"]["template"]["spec"]
    return spec


def test_kubernetes_validate_strict(rendered: tuple[str, list[Doc]], tmp_path: Any) -> None:
    validator = tool("kubernetes-validate", "pip install kubernetes-validate")
    name, docs = rendered
    out = tmp_path / "rendered.yaml"
    out.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    result = subprocess.run([validator, "--strict", "--quiet", str(out)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, f"{name}:\n{result.stdout}{result.stderr}"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed (optional "
                    "cross-check of the built-in renderer)")
@pytest.mark.parametrize("target", TARGETS)
def test_renderer_matches_kubectl_kustomize(target: str) -> None:
    out = subprocess.run(["kubectl", "kustomize", str(K8S / target)], capture_output=True,
                         text=True, check=True).stdout

    def key(d: Doc) -> tuple[str, str]:
        return d["kind"], d["metadata"]["name"]

    theirs = sorted((d for d in yaml.safe_load_all(out) if d), key=key)
    assert sorted(render(K8S / target), key=key) == theirs


def test_overlays_set_namespace_and_image() -> None:
    for target, ns in (("overlays/dev", "mailyard-dev"), ("overlays/prod", "mailyard")):
        docs = render(K8S / target)
        assert by(docs, "Namespace").keys() == {ns}
        for doc in docs:
            if doc["kind"] != "Namespace":
                assert doc["metadata"]["namespace"] == ns, doc["metadata"]["name"]
        prod_images = {c["image"] for d in workloads(docs).values()
                       for c in pod_spec(d)["containers"]}
        assert len(prod_images) == 1 and ":" in prod_images.pop()


def workloads(docs: list[Doc]) -> dict[str, Doc]:
    """Every Mailyard service's workload: Deployments, and the queue's StatefulSet."""
    found = {**by(docs, "Deployment"), **by(docs, "StatefulSet")}
    return {name: doc for name, doc in found.items() if name in SERVICES}


def test_queue_state_is_a_local_volume(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    queue = by(docs, "StatefulSet")["queue"]
    assert queue["spec"]["replicas"] == 2  # a standby with a state of its own takes over
    (claim,) = queue["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    ctr = pod_spec(queue)["containers"][0]
    env = {e["name"]: e.get("value") for e in ctr["env"]}
    mounts = {m["name"]: m["mountPath"] for m in ctr["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == env["MAILYARD_QUEUE_STATE_DIR"]


def test_deployments_probes_resources_security(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    deployments = workloads(docs)
    assert set(deployments) == set(SERVICES)
    # mail-access (Dovecot + its login bridge) is checked by its own test below
    assert set(by(docs, "Deployment")) == set(SERVICES) - {"queue"} | {"mail-access"}
    for name, dep in deployments.items():
        spec = pod_spec(dep)
        assert spec["automountServiceAccountToken"] is False
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] != 0
        assert psc["seccompProfile"]["type"] == "RuntimeDefault"
        (ctr,) = spec["containers"]  # one process per pod
        assert ctr["command"] == [f"mailyard-{name}"]
        csc = ctr["securityContext"]
        assert csc["readOnlyRootFilesystem"] is True
        assert csc["allowPrivilegeEscalation"] is False
        assert csc["capabilities"]["drop"] == ["ALL"]
        for part in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(ctr["resources"][part]), (name, part)
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if name in GRPC_SERVICES:
                assert ctr[probe]["grpc"]["port"] == 50051, (name, probe)
            else:
                assert name in HTTP_ONLY_SERVICES
                assert ctr[probe]["httpGet"]["port"] == "http", (name, probe)
        if name in HTTP_ONLY_SERVICES:
            assert ctr["readinessProbe"]["httpGet"]["path"] == "/readyz"
        env = {e["name"]: e.get("value") for e in ctr["env"]}
        prefix = next(k for k in env if k.endswith("_NATS_URL")).removesuffix("_NATS_URL")
        assert env[f"{prefix}_HTTP_PORT"] == "8080" and env[f"{prefix}_HTTP_HOST"] == "0.0.0.0"
        if name in GRPC_SERVICES:
            assert env[f"{prefix}_GRPC_PORT"] == "50051"
        assert not any("PASSWORD" in k or "SECRET" in k for k in env), "secrets in plain env"


def test_nats_is_a_3_replica_jetstream_statefulset(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    sts = by(docs, "StatefulSet")["nats"]
    assert sts["spec"]["replicas"] == 3
    conf = by(docs, "ConfigMap")["nats-config"]["data"]["nats.conf"]
    assert "jetstream" in conf and "sync_interval: always" in conf
    assert conf.count("nats-headless:6222") == 3
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert by(docs, "PodDisruptionBudget")["nats"]["spec"]["minAvailable"] == 2
    for ctr in pod_spec(sts)["containers"]:
        assert ctr["securityContext"]["readOnlyRootFilesystem"] is True


def test_every_workload_has_a_pdb(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    pdbs = by(docs, "PodDisruptionBudget")
    for name in [*SERVICES, "nats"]:
        labels = pdbs[name]["spec"]["selector"]["matchLabels"]
        assert labels == {"app.kubernetes.io/name": name}


def test_delivery_services_autoscale(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    hpas = by(docs, "HorizontalPodAutoscaler")
    for name in ("remote-delivery", "local-delivery"):
        spec = hpas[name]["spec"]
        assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                          "name": name}
        assert 1 <= spec["minReplicas"] < spec["maxReplicas"]
    keda = yaml.safe_load((K8S / "extras/keda-remote-delivery.yaml").read_text())
    trigger = keda["spec"]["triggers"][0]
    assert trigger["type"] == "nats-jetstream"
    assert trigger["metadata"]["consumer"] == "remote-delivery"


def test_spool_is_rwx_and_shared(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    pvcs = by(docs, "PersistentVolumeClaim")
    for claim in ("mailyard-spool", "mailyard-mail"):
        assert pvcs[claim]["spec"]["accessModes"] == ["ReadWriteMany"]
    deployments = workloads(docs)
    for name in ("smtp-ingress", "queue", "remote-delivery", "local-delivery"):
        claims = {v["persistentVolumeClaim"]["claimName"] for v in pod_spec(deployments[name])[
            "volumes"] if "persistentVolumeClaim" in v}
        assert "mailyard-spool" in claims, name
    storage = (K8S / "base/storage.yaml").read_text()
    assert "fsync" in storage and "rename" in storage


def test_the_dkim_secret_is_mounted_read_only_into_both_signers(
        rendered: tuple[str, list[Doc]]) -> None:
    """smtp-ingress signs our users' mail and remote-delivery the platform's own (bounces,
    vacation replies): both read the one Secret of keys, read-only, where their DKIM_DIR
    says; optional, so a site without keys starts (and signs nothing). No other workload
    gets the private keys."""
    _, docs = rendered
    deployments = workloads(docs)
    for name, prefix in (("smtp-ingress", "INGRESS"), ("remote-delivery", "REMOTE")):
        pod = pod_spec(deployments[name])
        [container] = pod["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        [volume] = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName")
                    == "mailyard-dkim"]
        assert volume["secret"]["optional"] is True, name
        [mount] = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
        assert mount["readOnly"] is True, name
        assert env[f"MAILYARD_{prefix}_DKIM_DIR"] == mount["mountPath"], name
    for name, workload in deployments.items():
        if name not in ("smtp-ingress", "remote-delivery"):
            assert "mailyard-dkim" not in str(pod_spec(workload)), name


def test_smtp_service_keeps_client_ip(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    smtp = by(docs, "Service")["smtp"]["spec"]
    assert smtp["type"] == "LoadBalancer"
    assert smtp["externalTrafficPolicy"] == "Local"
    ports = {p["port"]: p["targetPort"] for p in smtp["ports"]}
    assert ports == {25: "smtp", 587: "submission", 465: "smtps"}
    ingress = pod_spec(workloads(docs)["smtp-ingress"])["containers"][0]
    named = {p["name"]: p["containerPort"] for p in ingress["ports"]}
    assert (named["smtp"], named["submission"], named["smtps"]) == (2525, 2587, 2465)


def _allowed_sources(docs: list[Doc], app: str, port: int) -> list[Doc]:
    """The `from` peers of every policy that lets traffic reach (app, port)."""
    sources: list[Doc] = []
    for pol in by(docs, "NetworkPolicy").values():
        selector = pol["spec"]["podSelector"]
        labels = {"app.kubernetes.io/name": app, "app.kubernetes.io/part-of": "mailyard"}
        if not _matches(selector, labels):
            continue
        for rule in pol["spec"].get("ingress", []):
            if any(p["port"] == port for p in rule.get("ports", [{"port": port}])):
                sources += rule.get("from", [{"anywhere": True}])
    return sources


def _matches(selector: Doc, labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        if expr["operator"] != "In" or labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


ADMIN = [{"namespaceSelector": {"matchLabels": {"mailyard.io/admin": "true"}}},
         {"podSelector": {"matchLabels": {"mailyard.io/admin": "true"}}}]


def test_network_policies(rendered: tuple[str, list[Doc]]) -> None:
    _, docs = rendered
    deny = by(docs, "NetworkPolicy")["default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    relay = _allowed_sources(docs, "relay-auth", 50051)
    assert relay == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "smtp-ingress"}}},
                     {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "mail-access"}}},
                     *ADMIN]
    for port in (1143, 1993, 1110, 1995):  # IMAP / POP3 for everyone
        assert _allowed_sources(docs, "mail-access", port) == [{"anywhere": True}]
    for admin_api in ("queue", "remote-delivery"):
        assert _allowed_sources(docs, admin_api, 50051) == ADMIN, admin_api
    # relay-auth hands upgraded password hashes to the directory, local-delivery a list
    # member's confirmation
    assert _allowed_sources(docs, "directory", 50051) == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "relay-auth"}}},
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "local-delivery"}}}, *ADMIN]
    for port in (2525, 2587, 2465):
        assert _allowed_sources(docs, "smtp-ingress", port) == [{"anywhere": True}]
    for name in SERVICES:
        metrics = _allowed_sources(docs, name, 8080)
        assert metrics == [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "monitoring"}}}], name


def test_mail_access_serves_the_mail_volume_as_the_mail_user(
        rendered: tuple[str, list[Doc]]) -> None:
    """Dovecot and its login bridge: the mail volume local-delivery writes, the uid it
    writes as (one owner for mail files), probes, and the IMAP/POP3 ports."""
    _, docs = rendered
    pod = by(docs, "Deployment")["mail-access"]["spec"]["template"]["spec"]
    local = by(docs, "Deployment")["local-delivery"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == local["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["runAsNonRoot"] is True
    [conf] = pod["initContainers"]
    assert conf["command"][0] == "mailyard-dovecot-conf"
    uid = str(local["securityContext"]["runAsUser"])
    assert f"--mail-uid={uid}" in conf["command"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert set(containers) == {"mail-access", "dovecot"}
    assert containers["mail-access"]["command"] == ["mailyard-mail-access"]
    assert containers["dovecot"]["command"][:2] == ["dovecot", "-F"]
    for ctr in containers.values():
        assert {"startupProbe", "livenessProbe", "readinessProbe"} <= set(ctr)
        assert ctr["securityContext"]["allowPrivilegeEscalation"] is False
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
              for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {"mail": "mailyard-mail"}
    mounts = {m["name"]: m["mountPath"] for m in containers["dovecot"]["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in local["containers"][0]["env"]}
    assert mounts["mail"] == env["MAILYARD_LOCAL_MAIL_DIR"]
    service = by(docs, "Service")["mail-access"]["spec"]
    ports = {p["port"]: p["targetPort"] for p in service["ports"]}
    assert {143: "imap", 993: "imaps", 110: "pop3", 995: "pop3s"}.items() <= ports.items()
    assert service["externalTrafficPolicy"] == "Local"  # the lease is for the client's IP


def test_local_delivery_starts_without_a_listmail_key(rendered: tuple[str, list[Doc]]) -> None:
    """local-delivery mounts only the Secret's listmail key (ConfirmListMember and nothing
    else); a Secret made before that key existed left its pods unable to start (a missing
    key of a required secret volume), and no mail was delivered. The key is optional: list
    confirmations are deferred until it is added."""
    _, docs = rendered
    pod = by(docs, "Deployment")["local-delivery"]["spec"]["template"]["spec"]
    [auth] = [v for v in pod["volumes"] if v["name"] == "auth"]
    assert auth["secret"]["items"] == [{"key": "listmail", "path": "listmail"}]
    assert auth["secret"]["optional"] is True
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    token_file = env["MAILYARD_LOCAL_TOKEN_FILE"]
    assert token_file == f"/etc/mailyard/auth/{auth['secret']['items'][0]['path']}"
