"""Byte sizes in config fields: "200MB", "1.5GiB", "2TB" or a plain number of bytes."""

from __future__ import annotations

import re
from typing import Any

_SIZE = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[KMGTP]?i?B?)?", re.IGNORECASE)
_PREFIXES = "KMGTP"


def parse_bytes(value: Any) -> Any:
    """Bytes for a size string (decimal units "MB", binary units "MiB"); other values are
    returned unchanged for pydantic to check."""
    if not isinstance(value, str):
        return value
    match = _SIZE.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not a size; use bytes or e.g. '200MB', '1GiB', '2TB'")
    unit = (match.group("unit") or "").upper()
    prefix = unit.replace("I", "").replace("B", "")
    exponent = _PREFIXES.index(prefix) + 1 if prefix else 0
    scale = (1024 if "I" in unit else 1000) ** exponent
    return int(float(match.group("number")) * scale)


def format_bytes(n: int) -> str:
    """`5.00 TB (5000000000000 bytes)`: decimal units, as BigQuery bills them."""
    value, unit = float(n), "B"
    for prefix in _PREFIXES:
        if value < 1000:
            break
        value, unit = value / 1000, f"{prefix}B"
    shown = f"{int(value)} B" if unit == "B" else f"{value:.2f} {unit}"
    return f"{shown} ({n} bytes)"
