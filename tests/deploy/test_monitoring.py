"""The optional monitoring files in k8s/optional/: alert logic and dashboard queries.

`promtool` (Debian's `prometheus` package; .ci/run installs it as root) runs the alert
unit tests of tests/deploy/alerts_test.yaml and checks that every dashboard query parses.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[2]
OPTIONAL = PROJECT / "k8s" / "optional"
RULES = OPTIONAL / "prometheusrule.yaml"
DASHBOARD = OPTIONAL / "grafana-dashboard.json"
BENTOML_METRICS = {"bentoml_service_request_total", "bentoml_service_request_duration_seconds"}
"""BentoML's HTTP metrics for a @bentoml.service (namespace bentoml_service, _bentoml_impl/server/app.py;
their names are checked against a live server in tests/service/test_drift.py)."""


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is missing: apt-get install prometheus (.ci/run does it as root)")
    return path


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def rule_groups() -> dict:
    rule = yaml.safe_load(RULES.read_text())
    assert rule["kind"] == "PrometheusRule"
    return rule["spec"]


def test_alert_rules_pass_their_promtool_unit_tests(tmp_path):
    tool = promtool()
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_groups()))
    shutil.copy(Path(__file__).with_name("alerts_test.yaml"), tmp_path)
    checked = subprocess.run([tool, "check", "rules", "rules.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([tool, "test", "rules", "alerts_test.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    tested_alerts = set(re.findall(r"alertname: (\w+)", (tmp_path / "alerts_test.yaml").read_text()))
    assert tested_alerts == {r["alert"] for g in rule_groups()["groups"] for r in g["rules"]}


def test_dashboard_queries_are_valid_promql(tmp_path):
    tool = promtool()
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query{i}", "expr": expr}
                                                         for i, expr in enumerate(dashboard_queries())]}]}
    (tmp_path / "queries.yaml").write_text(yaml.safe_dump(rules))
    checked = subprocess.run([tool, "check", "rules", "queries.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_rules_and_dashboard_use_only_metrics_the_service_exports():
    """A renamed metric would leave a silent alert or an empty panel."""
    source = "\n".join(p.read_text() for p in (PROJECT / "service").glob("*.py"))
    ours = set(re.findall(r"""(?:Gauge|Histogram|Counter)\(\s*["'](\w+)["']""", source))
    assert {"model_input_drift", "model_prediction_drift", "model_drift_window_rows", "model_batch_rows"} <= ours
    expressions = [*dashboard_queries(), *(r["expr"] for g in rule_groups()["groups"] for r in g["rules"])]
    used = {re.sub(r"_(bucket|sum|count)$", "", name)
            for expr in expressions for name in re.findall(r"\b(model_\w+|bentoml_\w+)", expr)}
    assert used - ours - BENTOML_METRICS == set()
    panels = " ".join(dashboard_queries())
    for topic in ("request_duration_seconds", "request_total", "503", "model_batch_rows", "model_input_drift"):
        assert topic in panels, f"the dashboard has no panel on {topic}"
