"""The alert rules against series as several workers export them: `promtool test rules`
(Debian's `prometheus` package, installed by tests/support/ensure_promtool.sh when missing)
runs deploy/prometheus/alerts_test.yml, and the dashboard's lag queries are the ones that
file checks."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "deploy" / "prometheus"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "hookstream.json"
DEDUP = "max by (group, topic, partition) (hookstream_consumer_lag)"


def promtool() -> str:
    if shutil.which("promtool") is None:
        subprocess.run(["bash", str(REPO / "tests/support/ensure_promtool.sh")], check=True,
                       timeout=600)
    found = shutil.which("promtool")
    assert found, "tests/support/ensure_promtool.sh did not install promtool"
    return found


def test_promtool_checks_and_unit_tests_the_rules() -> None:
    tool = promtool()
    check = subprocess.run([tool, "check", "rules", "alerts.yml"], cwd=PROMETHEUS,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    run = subprocess.run([tool, "test", "rules", "alerts_test.yml"], cwd=PROMETHEUS,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "SUCCESS" in run.stdout, run.stdout + run.stderr


def test_promtool_accepts_the_scrape_config(tmp_path: Path) -> None:
    """prometheus.yml as Prometheus reads it (DNS service discovery included), with its rule
    file at the path the container mounts it on pointed at the repository's."""
    conf = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert conf["rule_files"] == ["/etc/prometheus/alerts.yml"]
    conf["rule_files"] = [str(PROMETHEUS / "alerts.yml")]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(conf))
    run = subprocess.run([promtool(), "check", "config", str(local)], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def _dashboard_lag_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])
            if "hookstream_consumer_lag" in t["expr"]]


def test_lag_is_taken_once_over_workers_everywhere() -> None:
    """Every query of the lag takes `max` over the workers before it sums: raw
    hookstream_consumer_lag carries `instance`, and two workers may export it for a moment."""
    exprs = _dashboard_lag_exprs()
    assert len(exprs) >= 2
    rules = [r for g in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
             for r in g["rules"]]
    for rule in rules:
        if "hookstream_consumer_lag" in rule["expr"]:
            exprs.append(rule["expr"])
    for expr in exprs:
        raw = re.sub(r"\w*:hookstream_consumer_lag:\w+", "", expr)  # recorded, already max'ed
        uses = raw.count("hookstream_consumer_lag")
        assert uses == raw.count(DEDUP), f"lag summed without max over workers: {expr}"


def test_the_dashboard_queries_are_the_tested_ones() -> None:
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())
    tested = {e["expr"] for t in tests["tests"] for e in t.get("promql_expr_test", [])}
    for expr in _dashboard_lag_exprs():
        assert expr in tested, f"the dashboard's {expr!r} is not in alerts_test.yml"
    alerted = {a["alertname"] for t in tests["tests"] for a in t.get("alert_rule_test", [])}
    assert {"HookstreamConsumerLagGrowing", "HookstreamConsumerLagNotExported"} <= alerted
