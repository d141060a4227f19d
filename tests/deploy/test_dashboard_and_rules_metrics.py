"""Every dashboard query and alert names a metric the code declares (and the contract in
docs/architecture.md lists); the dashboard has the panels issue 9 asks for."""

from __future__ import annotations

import json

import pytest

from tests.deploy.metricnames import (
    dashboard_exprs,
    declared_series,
    gen_metrics_doc,
    names_in,
    rule_exprs,
)
from tests.deploy.tools import DEPLOY

DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))


def test_metrics_modules_exist() -> None:
    _, missing = declared_series()
    assert not missing, f"metrics modules not written yet: {missing}"


@pytest.mark.parametrize("source", ["dashboards", "alert rules"])
def test_queries_name_declared_metrics(source: str) -> None:
    exprs = ([e for path in DASHBOARDS for e in dashboard_exprs(path)] if source == "dashboards"
             else rule_exprs())
    used = names_in(exprs)
    assert used, f"no mailyard_* metric in the {source}"
    declared, _ = declared_series()
    missing = sorted(used - declared)
    assert not missing, f"{source} use metrics no module declares: {missing}"


def test_queries_stay_within_the_contract() -> None:
    contract = set(gen_metrics_doc.contract_names())
    histogram_parts = {n.removesuffix(s) for n in names_in(
        [e for p in DASHBOARDS for e in dashboard_exprs(p)] + rule_exprs())
        for s in ("_bucket", "_sum", "_count") if n.endswith(s)}
    used = {n for n in names_in([e for p in DASHBOARDS for e in dashboard_exprs(p)]
                                + rule_exprs())
            if not n.endswith(("_bucket", "_sum", "_count"))} | histogram_parts
    assert sorted(used - contract) == []


def test_code_declares_the_whole_contract() -> None:
    declared, _ = declared_series()
    assert sorted(set(gen_metrics_doc.contract_names()) - declared) == []


def test_dashboard_covers_the_questions() -> None:
    (path,) = [p for p in DASHBOARDS if p.name == "mailyard.json"]
    dash = json.loads(path.read_text())
    exprs = " ".join(dashboard_exprs(path))
    for needed in ("mailyard_queue_messages", "mailyard_queue_oldest_message_age_seconds",
                   "mailyard_queue_deliveries_total", "mailyard_remote_deferrals_total",
                   "mailyard_delivery_concurrency_in_use", "mailyard_delivery_concurrency_limit",
                   "mailyard_smtp_messages_accepted_total", "mailyard_smtp_commit_seconds_bucket",
                   "mailyard_smtp_rejections_total", "mailyard_relay_leases_active"):
        assert needed in exprs, needed
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
    assert dash["uid"] == "mailyard-overview"
