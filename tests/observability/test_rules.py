"""The Prometheus rules and the Grafana dashboard: valid offline, and about metrics that exist."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

from ledgerly import metrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "ledgerly.json"
METRIC = re.compile(r"\b(ledgerly_[a-z0-9_]+)")
RECORDED = re.compile(r"\b(ledgerly:[a-z0-9_:]+)")


@pytest.fixture
def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: `make system-deps` installs Debian's prometheus package"
    return path


def rules() -> list[dict]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def exported_names() -> set[str]:
    """Every series name the app can export: this process's metrics and the scrape-time ones."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "gauge": ("",),
    }
    families = list(REGISTRY.collect()) + list(metrics.registry().collect())
    return {
        family.name + suffix for family in families for suffix in suffixes.get(family.type, ("",))
    }


def test_promtool_accepts_the_rules(promtool):
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_the_rules_unit_tests_pass(promtool):
    """Error rate over 5% for 5 minutes pages (and 2% does not); one 401 pages at once and
    resolves; fallbacks over 20% page."""
    result = subprocess.run(
        [promtool, "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        check=False,
        cwd=RULE_TESTS.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_dashboard_query_is_valid_promql(tmp_path, promtool):
    as_rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:panel_{i}", "expr": expr}
                    for i, expr in enumerate(dashboard_exprs())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(as_rules))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("alert", "severity", "words"),
    [
        ("LedgerlyModelErrorRateHigh", "page", ["> 0.05"]),
        ("LedgerlyModelLatencyP95High", "page", ["0.95", "> 15"]),
        ("LedgerlyFallbackRateHigh", "page", ["> 0.2"]),
        ("LedgerlyDailyCostAboveForecast", "ticket", ["1.2 *"]),
        ("LedgerlyStepsPerRunP95High", "ticket", ["0.95", "> 10"]),
        ("LedgerlyEscalationRateDoubled", "ticket", ["2 *", "offset 48h"]),
        ("LedgerlyRefundApprovalRateDropped", "ticket", ["segment"]),
        ("LedgerlyToolShareShifted", "ticket", ["tool_call_share"]),
        ("LedgerlyHelpfulRatingsFalling", "ticket", ["helpful_ratio"]),
        ("LedgerlyProviderUnauthorized", "page", ['status="401"']),
    ],
)
def test_the_issues_thresholds_are_alerts(alert, severity, words):
    rule = next(r for r in rules() if r.get("alert") == alert)
    assert rule["labels"]["severity"] == severity
    recorded = {r["record"]: r["expr"] for r in rules() if "record" in r}
    expr = rule["expr"]
    expanded = expr + "".join(recorded[name] for name in RECORDED.findall(expr))
    assert all(word in expanded for word in words)


def test_the_dashboard_is_grafana_json_with_a_query_on_every_panel():
    board = json.loads(DASHBOARD.read_text())
    panels = board["panels"]
    assert board["uid"] == "ledgerly-ops"
    assert len({p["id"] for p in panels}) == len(panels)
    assert all(p["targets"] and all(t["expr"] for t in p["targets"]) for p in panels)
    assert {v["name"] for v in board["templating"]["list"]} == {"datasource"}


@pytest.mark.django_db
def test_every_metric_named_in_the_rules_and_dashboard_is_exported(redis_client):
    exported = exported_names()
    exprs = [r["expr"] for r in rules()] + dashboard_exprs()
    named = {name for expr in exprs for name in METRIC.findall(expr)}
    recorded = {r["record"] for r in rules() if "record" in r}
    used_recorded = {name for expr in exprs for name in RECORDED.findall(expr)}
    assert named
    assert named - exported == set()
    assert used_recorded - recorded == set()
