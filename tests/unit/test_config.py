"""Config patches: every key validated, and a refused patch changes nothing."""

import pytest

from numcast_control.config import Config, ConfigError, apply_patch
from numcast_control.settings import MAX_RATE_HZ

BASE = Config(rate_hz=1.0, min=0.0, max=100.0)


def test_a_valid_patch_changes_only_what_it_names():
    assert apply_patch(BASE, {"rate_hz": 20, "paused": True}) == Config(20.0, 0.0, 100.0, True)
    assert apply_patch(BASE, {"min": -5.5}) == Config(1.0, -5.5, 100.0)


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (None, None, "JSON object"),
        ([1], None, "JSON object"),
        ({}, None, "names no setting"),
        ({"rate": 5}, "rate", "unknown setting"),
        ({"rate_hz": "5"}, "rate_hz", "must be a number"),
        ({"rate_hz": True}, "rate_hz", "must be a number"),
        ({"rate_hz": 0}, "rate_hz", "> 0"),
        ({"rate_hz": -1}, "rate_hz", "between"),
        ({"rate_hz": MAX_RATE_HZ + 1}, "rate_hz", "between"),
        ({"rate_hz": float("nan")}, "rate_hz", "between"),
        ({"min": 10**400}, "min", "too large"),
        ({"min": 200}, "min", "must be <= max"),
        ({"max": -1}, "max", "must be <= max"),
        ({"paused": "yes"}, "paused", "true or false"),
        ({"rate_hz": 5, "bogus": 1}, "bogus", "unknown setting"),
    ],
)
def test_bad_patches_are_refused_with_the_field_named(body, field, words):
    with pytest.raises(ConfigError) as caught:
        apply_patch(BASE, body)
    assert caught.value.field == field
    assert words in str(caught.value)
