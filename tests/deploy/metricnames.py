"""The metric names dashboards and alert rules use, and the names the code declares."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.tools import DEPLOY, ROOT

METRIC = re.compile(r"\b(mailyard_[a-zA-Z0-9_]+)")


def _gen() -> Any:
    spec = importlib.util.spec_from_file_location("gen_metrics_doc",
                                                  ROOT / "scripts" / "gen_metrics_doc.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_metrics_doc", module)
    spec.loader.exec_module(module)
    return module


gen_metrics_doc = _gen()


def dashboard_exprs(path: Path) -> list[str]:
    exprs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                exprs.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(path.read_text()))
    return exprs


def rule_exprs() -> list[str]:
    exprs = []
    for path in sorted((DEPLOY / "prometheus" / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            exprs += [rule["expr"] for rule in group["rules"]]
    return exprs


def names_in(exprs: list[str]) -> set[str]:
    return {name for expr in exprs for name in METRIC.findall(expr)}


def declared_series() -> tuple[set[str], list[str]]:
    """Every sample name the code's metrics produce, and metrics modules not there yet."""
    metrics, missing = gen_metrics_doc.load()
    return {s for m in metrics for s in [m.name, *m.series]}, missing
