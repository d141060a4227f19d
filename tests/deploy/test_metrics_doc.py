"""docs/metrics.md is generated from the metric declarations and must be current."""

from __future__ import annotations

from tests.deploy.metricnames import gen_metrics_doc
from tests.deploy.tools import ROOT


def test_metrics_doc_is_current() -> None:
    metrics, missing = gen_metrics_doc.load()
    expected = gen_metrics_doc.render(metrics, missing)
    current = (ROOT / "docs" / "metrics.md").read_text()
    assert current == expected, "docs/metrics.md is stale: run python scripts/gen_metrics_doc.py"


def test_every_metric_has_help_and_mailyard_prefix() -> None:
    metrics, _ = gen_metrics_doc.load()
    assert metrics
    for metric in metrics:
        assert metric.name.startswith("mailyard_") and metric.help, metric.name
        assert not {"address", "domain", "recipient", "sender"} & set(metric.labels), metric.name
