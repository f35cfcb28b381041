"""Reading what comes from outside: JSON nested no deeper than a bound, numbers written in ASCII digits only.

Python's JSON decoder recurses once per `[` or `{`: a thousand of them (under the envelope's 1 KiB limit) raise
RecursionError, which no door expects, where a `ValueError` says "not JSON". And `int()`, `float()`,
`str.isdigit()` and the regular expression `\\d` all take any Unicode digit (`int("٣") == 3`, `"²".isdigit()`,
yet `int("²")` fails): a request's number is read here, from ASCII digits or not at all.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Deeper than any message, body or file of ours (the deepest, an alert webhook, nests 4 levels); far below the
# interpreter's recursion limit, whatever the stack already holds.
MAX_DEPTH = 32
_STRING_RE = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS_RE = re.compile(r"[\[\]{}]")
_DECODER = json.JSONDecoder()
_INT_RE = re.compile(r"[0-9]{1,18}")  # 64 bits at most: int() of 5,000 digits is refused, and costs
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class TooDeep(ValueError):
    """JSON nested deeper than MAX_DEPTH: a ValueError, as any other text that is no JSON for us."""


def check_depth(text: str | bytes, limit: int = MAX_DEPTH) -> None:
    """Raise TooDeep if `text`'s arrays and objects nest deeper than `limit` (strings' contents do not count)."""
    if isinstance(text, bytes | bytearray):
        opened = text.count(b"[") + text.count(b"{")
    else:
        opened = text.count("[") + text.count("{")
    if opened <= limit:  # the common case, at C speed: too few brackets to nest that deep
        return
    if isinstance(text, bytes | bytearray):
        text = text.decode("utf-8", "replace")
    depth = 0
    for bracket in _BRACKETS_RE.findall(_STRING_RE.sub("", text)):
        if bracket in "[{":
            depth += 1
            if depth > limit:
                raise TooDeep(f"nested deeper than {limit} levels")
        else:
            depth -= 1


def loads(text: str | bytes, decoder: json.JSONDecoder = _DECODER) -> Any:
    """`decoder.decode(text)` once its depth is checked; ValueError (TooDeep, JSONDecodeError) for what is no
    JSON here, UnicodeDecodeError for bytes that are not UTF-8."""
    check_depth(text)
    if isinstance(text, bytes | bytearray):
        text = text.decode()  # strictly UTF-8: json.loads would guess UTF-16/32 from the first bytes
    return decoder.decode(text)


def ascii_int(text: str) -> int:
    """A non-negative integer in 1 to 18 ASCII digits (`"42"`); ValueError for anything else (`"٣"`, `"²"`, `"+1"`,
    `"1_0"`)."""
    if not _INT_RE.fullmatch(text):
        raise ValueError(f"{text[:40]!r} is not a whole number in digits 0-9")
    return int(text)


def ascii_float(text: str) -> float:
    """A number in ASCII digits (`"-1.5e3"`); ValueError for anything else, infinities and NaN included."""
    if not _FLOAT_RE.fullmatch(text):
        raise ValueError(f"{text[:40]!r} is not a number in digits 0-9")
    return float(text)
