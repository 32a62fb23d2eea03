"""Prometheus and Grafana provisioning: the files parse, and every metric they query is one
the services export (found by scanning the source for prometheus-client definitions)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SOURCE_DIRS = ("core", "ingress", "streams", "notifier", "automations", "control_plane", "ops")

# `Counter("name"`, `Gauge(name="name"`, `GaugeMetricFamily("name"` ...
DEFINITION = re.compile(
    r"\b(Counter|Gauge|Histogram|Summary|CounterMetricFamily|GaugeMetricFamily|"
    r"HistogramMetricFamily|SummaryMetricFamily)\(\s*(?:name\s*=\s*)?[\"']([a-zA-Z_:][\w:]*)[\"']")
METRIC_REF = re.compile(r"\bhookstream_\w+")

# What the dashboard must show (the list) and the names the services agreed to export.
AGREED = {
    "hookstream_webhooks_accepted_total", "hookstream_webhooks_rejected_total",
    "hookstream_records_filtered_total", "hookstream_invitations_scheduled_total",
    "hookstream_invitations_released_total", "hookstream_scheduled_waiting",
    "hookstream_dlq_records_total", "hookstream_invitations_sent_total",
    "hookstream_invitations_failed_total", "hookstream_smtp_seconds_bucket",
    "hookstream_consumer_lag",
}


def exported_series(kind: str, name: str) -> set[str]:
    """The sample names prometheus-client exposes for a metric defined as `kind(name)`."""
    if kind in ("Counter", "CounterMetricFamily"):
        base = name.removesuffix("_total")
        return {base + "_total", base + "_created"}
    if kind in ("Histogram", "HistogramMetricFamily"):
        return {name + "_bucket", name + "_sum", name + "_count", name + "_created"}
    if kind in ("Summary", "SummaryMetricFamily"):
        return {name, name + "_sum", name + "_count", name + "_created"}
    return {name}


def scan_exported() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in SOURCE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for kind, name in DEFINITION.findall(path.read_text(encoding="utf-8")):
                for series in exported_series(kind, name):
                    found.setdefault(series, path.relative_to(ROOT))
    return found


def load_dashboard() -> dict[str, Any]:
    return json.loads((DEPLOY / "grafana/dashboards/hookstream.json").read_text())


def dashboard_exprs(dash: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def alert_exprs() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def test_scanner_reads_definitions_as_prometheus_client_names_them() -> None:
    src = ('X = Counter("hookstream_a_total", "h")\nY = Histogram(\n    "hookstream_b", "h")\n'
           'Z = GaugeMetricFamily(name="hookstream_c", documentation="h")\n'
           'W = Counter("hookstream_d", "h")\n')
    got = {s for k, n in DEFINITION.findall(src) for s in exported_series(k, n)}
    assert {"hookstream_a_total", "hookstream_b_bucket", "hookstream_c",
            "hookstream_d_total"} <= got
    assert "hookstream_b" not in got and "hookstream_a_total_total" not in got


def test_prometheus_scrapes_every_service() -> None:
    conf = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    # Every replica: Docker's DNS names each service's containers (tests/deploy/test_compose.py).
    targets = {f"{name}:{sd['port']}" for job in conf["scrape_configs"]
               for sd in job["dns_sd_configs"] for name in sd["names"]}
    assert targets == {"admin:8081", "ingress:8080", "worker:8082", "notifier:8083",
                       "survey:8084"}
    assert all(job.get("metrics_path", "/metrics") == "/metrics" for job in conf["scrape_configs"])
    assert conf["rule_files"] == ["/etc/prometheus/alerts.yml"]
    for rule in (r for g in yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())["groups"]
                 for r in g["rules"]):
        if "record" in rule:  # a recording rule the alerts read
            assert rule["record"] and rule["expr"]
            continue
        assert rule["alert"] and rule["expr"] and rule["annotations"]["runbook"]


def test_grafana_provisioning_is_consistent() -> None:
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    (source,) = ds["datasources"]
    assert (source["type"], source["url"]) == ("prometheus", "http://prometheus:9090")
    prov = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/hookstream.yml").read_text())
    (provider,) = prov["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"

    dash = load_dashboard()
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        assert panel["targets"], panel["title"]
        for t in panel["targets"]:
            assert t["datasource"]["uid"] == source["uid"]
            assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]
    titles = " | ".join(p["title"].lower() for p in dash["panels"])
    for needed in ("ingest rate", "error rate by reason", "consumer lag", "waiting invitations",
                   "mails sent"):
        assert needed in titles


def test_dashboard_covers_the_agreed_metrics() -> None:
    queried = {m for e in dashboard_exprs(load_dashboard()) for m in METRIC_REF.findall(e)}
    assert AGREED <= queried, f"dashboard does not show: {sorted(AGREED - queried)}"


def test_every_queried_metric_is_exported_by_the_source() -> None:
    exported = scan_exported()
    queried = {m for e in dashboard_exprs(load_dashboard()) + alert_exprs()
               for m in METRIC_REF.findall(e)}
    missing = sorted(queried - set(exported))
    assert not missing, (f"queried but defined nowhere in {', '.join(SOURCE_DIRS)}: {missing}; "
                         f"exported: {sorted(exported)}")


def test_consumer_lag_collector_is_served_by_a_service() -> None:
    """`hookstream_consumer_lag` comes from core.kafka.lag.LagCollector; a service registers it."""
    users = [p.relative_to(ROOT) for folder in ("ingress", "streams", "notifier", "control_plane",
                                                "hookstream")
             for p in (ROOT / folder).rglob("*.py") if "LagCollector" in p.read_text()]
    assert users, "no service registers core.kafka.lag.LagCollector on its /metrics"
