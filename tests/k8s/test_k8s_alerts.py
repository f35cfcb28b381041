"""The alerting rules in infra/extras: valid PromQL, complete, and only metrics the services really serve."""

from __future__ import annotations

import re

import pytest
from k8s_support import ROOT, app_for

pytestmark = pytest.mark.k8s

RULES = ROOT / "infra" / "extras" / "prometheus" / "numcast-alerts.yaml"
SUFFIXES = ("_total", "_bucket", "_count", "_sum")


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


def test_every_rule_is_a_documented_alert():
    alerts = [rule["alert"] for rule in rules()]
    assert len(alerts) == len(set(alerts)) >= 5
    for rule in rules():
        assert re.fullmatch(r"Numcast[A-Z][A-Za-z]+", rule["alert"])
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_every_expression_parses_and_uses_served_metrics(rule):
    import promql_parser

    promql_parser.parse(rule["expr"])  # raises ValueError on a syntax error
    used = set(re.findall(r"\bnumcast_[a-z_]+", rule["expr"]))
    assert used
    served = served_metrics()
    for name in used:
        family = next((name.removesuffix(s) for s in SUFFIXES if name.endswith(s)), name)
        assert family in served, f"{rule['alert']} uses {name}, which no service serves"
