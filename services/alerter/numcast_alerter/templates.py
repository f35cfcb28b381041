"""Annotation templates, the part of Prometheus' a stream rule needs: `{{ $value }}`, `{{ $labels.<name> }}`,
`{{ $value | humanize }}` and `{{ humanize $value }}`, rendered as Prometheus renders them.

No Go template engine exists in Python, and a general one would be a language to sandbox: this one knows four
actions and refuses anything else when the rules file loads, so a rule that loads always renders.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal

_ACTION_RE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_FORMS = (
    (re.compile(r"\$value"), "value"),
    (re.compile(r"\$value\s*\|\s*humanize|humanize\s+\$value"), "humanize"),
    (re.compile(r"\$labels\.([A-Za-z_][A-Za-z0-9_]*)"), "label"),
)
ALLOWED = "{{ $value }}, {{ $labels.<name> }}, {{ $value | humanize }} or {{ humanize $value }}"
_BIG = ("k", "M", "G", "T", "P", "E", "Z", "Y")
_SMALL = ("m", "u", "n", "p", "f", "a", "z", "y")

Template = tuple[str | tuple[str, str], ...]  # text, and (action, label name) pairs


class TemplateError(ValueError):
    """A template this renderer does not know; the message says what it knows."""


def compile_template(text: str) -> Template:
    """The parts of `text`, or TemplateError for any action but the four known ones."""
    parts: list[str | tuple[str, str]] = []
    at = 0
    for match in _ACTION_RE.finditer(text):
        parts.append(text[at : match.start()])
        parts.append(_action(match.group(1)))
        at = match.end()
    tail = text[at:]
    if "{{" in tail:
        raise TemplateError(f"an action is not closed with }}}}; only {ALLOWED} are known")
    parts.append(tail)
    return tuple(part for part in parts if part != "")


def _action(body: str) -> tuple[str, str]:
    for pattern, kind in _FORMS:
        match = pattern.fullmatch(body.strip(" "))
        if match and body.strip(" ") == body.strip():  # Go's trim markers and newlines are not ours
            return kind, match.group(1) if kind == "label" else ""
    raise TemplateError(f"{{{{{body}}}}} is not an action this alerter renders: only {ALLOWED} are known")


def render(template: Template, value: float, labels: Mapping[str, str]) -> str:
    """`template` with `value` and the series' `labels` filled in (a label the series lacks renders empty)."""
    out = []
    for part in template:
        if isinstance(part, str):
            out.append(part)
        elif part[0] == "value":
            out.append(go_float(value))
        elif part[0] == "humanize":
            out.append(humanize(value))
        else:
            out.append(labels.get(part[1], ""))
    return "".join(out)


def go_float(value: float) -> str:
    """A float as Go's fmt prints it with %v: the shortest digits, in e-notation below 1e-4 and from 1e6."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    digits = Decimal(repr(value))  # the shortest repr that reads back exactly, as Go's strconv finds it
    exponent = digits.adjusted()
    if exponent < -4 or exponent >= 6:  # strconv: for the shortest digits, %e from an exponent of 6
        mantissa, _, exp = f"{digits:e}".partition("e")
        if "." in mantissa:
            mantissa = mantissa.rstrip("0").rstrip(".")
        sign, number = exp[0], exp[1:].lstrip("0") or "0"
        return f"{mantissa}e{sign}{number.zfill(2)}"
    text = f"{digits:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def humanize(value: float) -> str:
    """Prometheus' `humanize`: SI prefixes, four significant digits."""
    if value == 0 or math.isnan(value) or math.isinf(value):
        return _g4(value)
    prefix = ""
    if abs(value) >= 1:
        for p in _BIG:
            if abs(value) < 1000:
                break
            prefix, value = p, value / 1000
    else:
        for p in _SMALL:
            if abs(value) >= 1:
                break
            prefix, value = p, value * 1000
    return _g4(value) + prefix


def _g4(value: float) -> str:
    """Go's %.4g."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:.4g}"
