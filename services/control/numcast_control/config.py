"""The live configuration of the generator and the validation of changes to it."""

from __future__ import annotations

import dataclasses
import math

from numcast_control.settings import MAX_ABS_VALUE, MAX_RATE_HZ


class ConfigError(ValueError):
    """A refused change; `field` names the offending key (or None for the body as a whole)."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field

    def to_dict(self) -> dict:
        """The JSON error body."""
        return {"error": str(self), "field": self.field}


@dataclasses.dataclass(frozen=True)
class Config:
    """What `PATCH /api/config` can change."""

    rate_hz: float
    min: float
    max: float
    paused: bool = False

    def to_dict(self) -> dict:
        """The JSON form, as `GET /api/status` shows it."""
        return dataclasses.asdict(self)


def _number(key: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(key, f"{key} must be a number, got {type(value).__name__}")
    try:
        value = float(value)
    except OverflowError:
        raise ConfigError(key, f"{key} is too large") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise ConfigError(key, f"{key} must be between {low:g} and {high:g}")
    return value


def apply_patch(config: Config, body: object) -> Config:
    """The config after `body` is applied; raise ConfigError and change nothing if any key is wrong."""
    if not isinstance(body, dict):
        raise ConfigError(None, "body must be a JSON object")
    if not body:
        raise ConfigError(None, "body names no setting; use any of rate_hz, min, max, paused")
    changes: dict[str, object] = {}
    for key, value in body.items():
        if key == "rate_hz":
            changes[key] = _number(key, value, 0, MAX_RATE_HZ)
            if changes[key] <= 0:
                raise ConfigError(key, f"rate_hz must be > 0 and <= {MAX_RATE_HZ:g}")
        elif key in ("min", "max"):
            changes[key] = _number(key, value, -MAX_ABS_VALUE, MAX_ABS_VALUE)
        elif key == "paused":
            if not isinstance(value, bool):
                raise ConfigError(key, f"paused must be true or false, got {type(value).__name__}")
            changes[key] = value
        else:
            raise ConfigError(str(key)[:64], f"unknown setting {str(key)[:64]!r}; use rate_hz, min, max or paused")
    new = dataclasses.replace(config, **changes)
    if new.min > new.max:
        field = "min" if "min" in changes else "max"
        raise ConfigError(field, f"min ({new.min:g}) must be <= max ({new.max:g})")
    return new
