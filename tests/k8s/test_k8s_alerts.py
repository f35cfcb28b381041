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
# The base comes from prometheus.yml's external label runbook_base_url (where the operator serves docs/).
RUNBOOK_URL = "{{ $externalLabels.runbook_base_url }}/monitoring.md"
SUFFIXES = ("_total", "_bucket", "_count", "_sum")
UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def rules() -> list[dict]:
    import yaml

    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


# The services by the component label their pods carry (app.kubernetes.io/component), which the rules select on.
COMMANDS = {"control-plane": "control", "worker": "worker", "alerter": "alerter"}


def served_metrics(command: str) -> set[str]:
    """Every metric family `numcast <command>` exposes, as Prometheus names it."""
    from prometheus_client.parser import text_string_to_metric_families

    text = app_for(command).test_client().get("/metrics", environ_base={"numcast.admin": True}).get_data(as_text=True)
    return {family.name for family in text_string_to_metric_families(text)}


def nodes(expr):
    """Every node of a PromQL syntax tree."""
    import promql_parser as promql

    yield expr
    if isinstance(expr, promql.MatrixSelector):
        yield from nodes(expr.vector_selector)
        return
    for attr in ("lhs", "rhs", "expr", "param"):
        child = getattr(expr, attr, None)
        if child is not None and not isinstance(child, str | float):
            yield from nodes(child)
    for child in getattr(expr, "args", None) or []:
        yield from nodes(child)


def parsed(rule: dict) -> tuple[list, list[float]]:
    """The vector selectors of a rule's expression and the ranges (seconds) it reads."""
    import promql_parser as promql

    tree = promql.parse(rule["expr"])  # raises ValueError on a syntax error
    found = list(nodes(tree))
    selectors = [node for node in found if isinstance(node, promql.VectorSelector)]
    ranges = [n.range.total_seconds() for n in found if isinstance(n, promql.MatrixSelector | promql.SubqueryExpr)]
    return selectors, ranges


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
def test_every_expression_parses_and_uses_metrics_the_selected_service_serves(rule):
    import promql_parser as promql

    selectors, _ = parsed(rule)
    assert selectors or rule["alert"] == "Watchdog"
    for selector in selectors:
        if selector.name == "up":  # Prometheus' own, one per target
            continue
        matchers = {m.name: m.value for m in selector.matchers.matchers if m.op == promql.MatchOp.Equal}
        component = matchers.get("component")
        commands = [COMMANDS[component]] if component else list(COMMANDS.values())
        family = next((selector.name.removesuffix(s) for s in SUFFIXES if selector.name.endswith(s)), selector.name)
        served = set().union(*(served_metrics(command) for command in commands))
        assert family in served, f"{rule['alert']} uses {selector.name}, which {' or '.join(commands)} never serves"


# Each target's `up`, one sample per 15 s scrape: answering for 2.5 minutes, then a fault from 2m45s.
UP, DOWN, GONE = "1x30", "1x10 0x20", "1x10 stale"  # DOWN: every scrape fails; GONE: the target disappears
TARGETS = {
    "machine-1": 'up{job="numcast", namespace="numcast", component="worker", pod="machine-1-a", worker="machine-1"}',
    "machine-2": 'up{job="numcast", namespace="numcast", component="worker", pod="machine-2-a", worker="machine-2"}',
    "control": 'up{job="numcast", namespace="numcast", component="control-plane", pod="control-plane-a"}',
}
# (machine-1, machine-2, control-plane) -> the down alerts firing at 5m, as (alertname, worker).
DOWN_OR_GONE = {
    "all up": ((UP, UP, UP), []),
    "a worker down": ((DOWN, UP, UP), [("NumcastWorkerDown", "machine-1")]),
    "a worker gone": ((GONE, UP, UP), [("NumcastWorkerDown", "machine-1")]),
    "every worker down": (
        (DOWN, DOWN, UP),
        [("NumcastNoWorkers", ""), ("NumcastWorkerDown", "machine-1"), ("NumcastWorkerDown", "machine-2")],
    ),
    "every worker gone": (
        (GONE, GONE, UP),
        [("NumcastNoWorkers", ""), ("NumcastWorkerDown", "machine-1"), ("NumcastWorkerDown", "machine-2")],
    ),
    "the control-plane down": ((UP, UP, DOWN), [("NumcastControlPlaneDown", "")]),
    "the control-plane gone": ((UP, UP, GONE), [("NumcastControlPlaneDown", "")]),
}


FIRING = (
    'count by (alertname, worker) (ALERTS{alertstate="firing", '
    'alertname=~"NumcastWorkerDown|NumcastNoWorkers|NumcastControlPlaneDown"})'
)


def sample(alertname: str, worker: str) -> str:
    """The labels of one series of FIRING."""
    return f'{{alertname="{alertname}"' + (f', worker="{worker}"' if worker else "") + "}"


@pytest.mark.parametrize("case", DOWN_OR_GONE)
def test_a_worker_or_control_plane_that_is_down_or_gone_alerts(case, tmp_path):
    """The rules themselves, evaluated by promtool on the series of each case: what fires, and only that."""
    import yaml

    values, firing = DOWN_OR_GONE[case]
    test = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": [
                    {"series": series, "values": value} for series, value in zip(TARGETS.values(), values, strict=True)
                ],
                "promql_expr_test": [
                    {"expr": FIRING, "eval_time": "2m", "exp_samples": []},  # before the fault: quiet
                    {
                        "expr": FIRING,
                        "eval_time": "5m",
                        "exp_samples": [{"labels": sample(*alert), "value": 1} for alert in firing],
                    },
                ],
            }
        ],
    }
    path = tmp_path / "down-or-gone.test.yaml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    result = subprocess.run([tool("promtool"), "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alerter_s_own_failures_alert():
    # Alertmanager unreachable or refusing, and a rules file the alerter refused: each with promtool cases.
    assert {"NumcastAlertmanagerSendErrors", "NumcastAlertRulesReloadFailed"} <= {r["alert"] for r in rules()}


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
    section = RUNBOOK.read_text().split("\n## Alerts\n", 1)[1].split("\n## ", 1)[0]
    headings = re.findall(r"^### (\S+)$", section, re.MULTILINE)
    assert sorted(headings) == sorted(rule["alert"] for rule in rules())
    for rule in rules():
        anchor = rule["alert"].lower()
        assert rule["annotations"]["runbook_url"] == RUNBOOK_URL + f"#{anchor}"


def test_runbook_urls_are_absolute_links_from_a_base_the_operator_sets_that_never_becomes_a_label():
    import yaml

    config = yaml.safe_load((MONITORING / "config" / "prometheus.yml").read_text())
    base = config["global"]["external_labels"]["runbook_base_url"]
    assert re.fullmatch(r"https://[^\s/]+(/[^\s]*)?[^/]", base), f"{base}: an absolute https URL, no trailing /"
    # External labels go onto every alert sent to Alertmanager: this one is for the template only.
    assert {"action": "labeldrop", "regex": "runbook_base_url"} in config["alerting"]["alert_relabel_configs"]


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
