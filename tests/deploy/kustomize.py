"""A small kustomize renderer for the features deploy/k8s uses, so the manifests are rendered
and validated offline without kubectl. Supported (anything else raises): resources (files
and directories), namespace, labels (metadata only), images, replicas, patches (strategic
merge files with merge-by-name lists, and inline JSON 6902 with a target).

When `kubectl kustomize` is available, tests/deploy/test_k8s.py checks that this renderer
and kubectl produce the same objects."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Doc = dict[str, Any]
SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "replicas",
             "patches"}
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "StorageClass", "ClusterRole",
                  "ClusterRoleBinding", "PriorityClass", "CustomResourceDefinition"}
# Lists whose items are merged by key in a strategic merge patch (as Kubernetes declares).
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
              "volumeMounts": "mountPath", "ports": "containerPort"}


def load_docs(path: Path) -> list[Doc]:
    # deepcopy: YAML aliases must not make two objects share one mapping.
    return [copy.deepcopy(d) for d in yaml.safe_load_all(path.read_text()) if d]


def render(root: Path) -> list[Doc]:
    spec = yaml.safe_load((root / "kustomization.yaml").read_text())
    unknown = set(spec) - SUPPORTED
    if unknown:
        raise ValueError(f"{root}: kustomization fields this renderer does not know: {unknown}")
    docs: list[Doc] = []
    for entry in spec.get("resources", []):
        path = root / entry
        docs += render(path) if path.is_dir() else load_docs(path)
    for patch in spec.get("patches", []):
        _patch(root, docs, patch)
    ns = spec.get("namespace")
    for doc in docs:
        meta = doc.setdefault("metadata", {})
        if ns and doc["kind"] not in CLUSTER_SCOPED:
            meta["namespace"] = ns
        for label in spec.get("labels", []):
            if label.get("includeSelectors") or label.get("includeTemplates"):
                raise ValueError("labels with includeSelectors/includeTemplates not supported")
            meta.setdefault("labels", {}).update(label["pairs"])
        for image in spec.get("images", []):
            _set_image(doc, image)
    for rep in spec.get("replicas", []):
        matches = [d for d in docs if d["kind"] in {"Deployment", "StatefulSet", "ReplicaSet"}
                   and d["metadata"]["name"] == rep["name"]]
        if not matches:
            raise ValueError(f"replicas: nothing named {rep['name']}")
        for doc in matches:
            doc["spec"]["replicas"] = rep["count"]
    return docs


def _find(docs: list[Doc], kind: str, name: str) -> Doc:
    for doc in docs:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise ValueError(f"patch target {kind}/{name} not found")


def _patch(root: Path, docs: list[Doc], patch: Doc) -> None:
    if "path" in patch:
        for pdoc in load_docs(root / patch["path"]):
            target = _find(docs, pdoc["kind"], pdoc["metadata"]["name"])
            merged = strategic_merge(target, pdoc)
            target.clear()
            target.update(merged)
        return
    target_spec = patch["target"]
    ops = yaml.safe_load(patch["patch"])
    target = _find(docs, target_spec["kind"], target_spec["name"])
    for op in ops:
        json6902(target, op)


def strategic_merge(base: Any, patch: Any, key: str = "") -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for k, v in patch.items():
            out[k] = strategic_merge(base[k], v, k) if k in base else copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and key in MERGE_KEYS:
        merge_key = MERGE_KEYS[key]
        out = copy.deepcopy(base)
        for item in patch:
            for i, existing in enumerate(out):
                if existing.get(merge_key) == item.get(merge_key):
                    out[i] = strategic_merge(existing, item)
                    break
            else:
                out.append(copy.deepcopy(item))
        return out
    return copy.deepcopy(patch)


def json6902(doc: Doc, op: Doc) -> None:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
    parent: Any = doc
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last = parts[-1]
    kind = op["op"]
    if kind in {"add", "replace"}:
        if isinstance(parent, list):
            index = len(parent) if last == "-" else int(last)
            if kind == "add":
                parent.insert(index, op["value"])
            else:
                parent[index] = op["value"]
        else:
            if kind == "replace" and last not in parent:
                raise ValueError(f"replace of missing {op['path']}")
            parent[last] = op["value"]
    elif kind == "remove":
        del parent[int(last) if isinstance(parent, list) else last]
    else:
        raise ValueError(f"JSON patch op {kind} not supported")


def _containers(doc: Doc) -> list[Doc]:
    spec = doc.get("spec", {})
    pod = spec.get("template", {}).get("spec", spec if doc["kind"] == "Pod" else {})
    return [*pod.get("containers", []), *pod.get("initContainers", [])]


def _set_image(doc: Doc, image: Doc) -> None:
    for ctr in _containers(doc):
        ref = ctr.get("image", "")
        name = ref.split("@")[0]
        if ":" in name.rsplit("/", 1)[-1]:
            name = name.rsplit(":", 1)[0]
        if name != image["name"]:
            continue
        new = image.get("newName", name)
        if "digest" in image:
            ctr["image"] = f"{new}@{image['digest']}"
        elif "newTag" in image:
            ctr["image"] = f"{new}:{image['newTag']}"
        else:
            ctr["image"] = new + ref[len(name):]
