"""The alerting rules in infra/monitoring: valid PromQL, only metrics the services serve, the review's conventions
(ranges, `for:`, runbooks), and `promtool test rules` with a firing and a quiet case for every alert."""

from __future__ import annotations

import re
import subprocess

import pytest
from k8s_support import MONITORING, ROOT, app_for, tool

pytestmark = pytest.mark.k8s

RULES = MONITORING / "config" / "numcast-alerts.yaml"
RULE_TESTS = ROOT / "tests" / "k8s" / "numcast-alerts.test.yaml"
RUNBOOK = ROOT / "docs" / "monitoring.md"
SUFFIXES = ("_total", "_bucket", "_count", "_sum")
UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def rules() -> list[dict]:
    import yaml

    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def served_metrics() -> set[str]:
    """Every metric family both services expose, as Prometheus names it."""
    from prometheus_client.parser import text_string_to_metric_families

    names = set()
    for command in ("control", "worker"):
        text = app_for(command).test_client().get("/metrics").get_data(as_text=True)
        names |= {family.name for family in text_string_to_metric_families(text)}
    return names


def selectors(expr) -> tuple[set[str], list[float]]:
    """The metric names an expression selects and the ranges (seconds) it reads, from its syntax tree."""
    import promql_parser as promql

    names, ranges = set(), []
    if isinstance(expr, promql.VectorSelector):
        names.add(expr.name)
    elif isinstance(expr, (promql.MatrixSelector, promql.SubqueryExpr)):
        ranges.append(expr.range.total_seconds())
        inner = expr.vector_selector if isinstance(expr, promql.MatrixSelector) else expr.expr
        more_names, more_ranges = selectors(inner)
        names |= more_names
        ranges += more_ranges
    else:
        children = [getattr(expr, attr, None) for attr in ("lhs", "rhs", "expr", "param")]
        for child in children + list(getattr(expr, "args", None) or []):
            if child is not None:
                more_names, more_ranges = selectors(child)
                names |= more_names
                ranges += more_ranges
    return names, ranges


def parsed(rule: dict) -> tuple[set[str], list[float]]:
    import promql_parser

    return selectors(promql_parser.parse(rule["expr"]))  # raises ValueError on a syntax error


def test_every_rule_is_a_documented_alert():
    alerts = [rule["alert"] for rule in rules()]
    assert len(alerts) == len(set(alerts)) >= 5
    for rule in rules():
        if rule["alert"] == "Watchdog":  # kube-prometheus' name, which dead-man's-switch services expect
            assert rule["labels"]["severity"] == "none" and rule["expr"] == "vector(1)"
        else:
            assert re.fullmatch(r"Numcast[A-Z][A-Za-z]+", rule["alert"])
            assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_every_expression_parses_and_uses_served_metrics(rule):
    used, _ = parsed(rule)
    assert used or rule["alert"] == "Watchdog"
    served = served_metrics() | {"up"}  # `up` is Prometheus' own, one per target
    for name in used:
        family = next((name.removesuffix(s) for s in SUFFIXES if name.endswith(s)), name)
        assert family in served, f"{rule['alert']} uses {name}, which no service serves"


def test_a_worker_or_control_plane_that_is_down_or_gone_alerts():
    # promtool's cases show each firing for up == 0 and for series that are gone; this keeps the rules from
    # leaving together with their cases.
    assert {"NumcastWorkerDown", "NumcastNoWorkers", "NumcastControlPlaneDown"} <= {r["alert"] for r in rules()}


def seconds(duration: str) -> float:
    """A Prometheus duration (`1h30m`, `15s`) in seconds."""
    parts = re.findall(r"(\d+)(ms|[smhdwy])", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a duration: {duration}"
    return sum(int(n) * UNITS[u] for n, u in parts)


def scrape_interval() -> float:
    import yaml

    return seconds(yaml.safe_load((MONITORING / "config" / "prometheus.yml").read_text())["global"]["scrape_interval"])


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_every_range_is_at_least_four_scrape_intervals(rule):
    _, ranges = parsed(rule)
    for window in ranges:
        assert window >= 4 * scrape_interval(), f"{rule['alert']}: a {window:g} s range holds too few samples"


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_every_rule_waits_at_least_two_scrape_intervals(rule):
    # One failed scrape, or a Prometheus that just started (every absent() true), must not fire an alert alone.
    assert "for" in rule, f"{rule['alert']} has no for:"
    assert seconds(rule["for"]) >= 2 * scrape_interval(), rule["alert"]


def test_every_alert_has_a_runbook_section_and_every_section_an_alert():
    headings = re.findall(r"^### (\S+)$", RUNBOOK.read_text(), re.MULTILINE)
    assert sorted(headings) == sorted(rule["alert"] for rule in rules())
    for rule in rules():
        anchor = rule["alert"].lower()
        assert rule["annotations"]["runbook_url"] == f"docs/monitoring.md#{anchor}"


def test_promtool_checks_the_rules_and_runs_their_tests():
    for command in (["check", "rules", str(RULES)], ["test", "rules", str(RULE_TESTS)]):
        result = subprocess.run([tool("promtool"), *command], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_case_that_fires_and_one_that_stays_quiet():
    import yaml

    cases = [case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    for rule in rules():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in mine), f"{rule['alert']}: no case where it fires"
        assert any(not case["exp_alerts"] for case in mine), f"{rule['alert']}: no case where it stays quiet"
