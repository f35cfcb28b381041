"""Annotation templates as Prometheus renders them: {{ $value }}, {{ $labels.<name> }} and humanize, nothing else."""

import pytest

from numcast_alerter.rules import RulesError, parse
from numcast_alerter.templates import TemplateError, compile_template, render

# What promtool 2.42 renders for `vector(VALUE)` with {{ $value }} and {{ $value | humanize }} (Go's %v and %.4g).
PROMTOOL = [
    (99, "99", "99"),
    (96.5, "96.5", "96.5"),
    (1234567, "1.234567e+06", "1.235M"),
    (123456, "123456", "123.5k"),
    (100000, "100000", "100k"),
    (123456789, "1.23456789e+08", "123.5M"),
    (0.0001, "0.0001", "100u"),
    (0.00001, "1e-05", "10u"),
    (0.0012345, "0.0012345", "1.234m"),
    (1e21, "1e+21", "1Z"),
    (2.5e25, "2.5e+25", "25Y"),
    (1e-30, "1e-30", "1e-06y"),
    (-1234.5, "-1234.5", "-1.234k"),
    (1234.5, "1234.5", "1.234k"),
    (0, "0", "0"),
]


@pytest.mark.parametrize(("value", "plain", "human"), PROMTOOL, ids=[str(v) for v, _, _ in PROMTOOL])
def test_value_and_humanize_render_as_prometheus_renders_them(value, plain, human):
    template = compile_template("{{ $value }} {{ $value | humanize }} {{humanize $value}}")
    assert render(template, float(value), {}) == f"{plain} {human} {human}"


def test_labels_are_the_series_labels_and_a_missing_one_is_empty():
    template = compile_template("on {{ $labels.pod }}{{ $labels.absent }}: {{$value}} }} left as text")
    assert render(template, 1.5, {"pod": "web-1"}) == "on web-1: 1.5 }} left as text"


@pytest.mark.parametrize(
    "text",
    [
        '{{ $value | printf "%.2f" }}',
        "{{ .Value }}",
        "{{ $labels }}",
        "{{ $labels.bad-name }}",
        '{{ query "up" }}',
        "{{ $externalLabels.x }}",
        "{{- $value -}}",
        "{{/* a comment */}}",
        "{{ $value",
        "{{ if $value }}x{{ end }}",
        "{{}}",
    ],
)
def test_anything_else_is_refused(text):
    with pytest.raises(TemplateError, match="only"):
        compile_template(text)


def test_a_rule_renders_its_annotations_with_its_value_and_refuses_a_bad_template_at_load():
    (rule,) = parse("rules:\n  - {alert: A, above: 1, annotations: {summary: 'value {{ $value }}'}}", "t")
    assert rule.render(96.25, {}) == {"summary": "value 96.25"}
    assert rule.annotations == {"summary": "value {{ $value }}"}, "the rule as written, for /api/alerts"
    with pytest.raises(RulesError) as caught:
        parse("rules:\n  - {alert: High, above: 1, annotations: {summary: '{{ $value | printf }}'}}", "rules.yaml")
    message = str(caught.value)
    assert message.startswith("rules.yaml: rule 1 (High): line 2: key 'annotations': summary: the template ") and (
        "{{ $value | printf }}" in message
    ), message
