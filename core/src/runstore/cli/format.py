"""Plain-text formatting of times, durations, sizes and values.

Shared by the command line and the web viewer; it imports neither click nor
rich, so the viewer can use it without the terminal toolkit.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["fmt_bytes", "fmt_duration", "fmt_pass_rate", "fmt_time", "fmt_value"]


def fmt_time(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def fmt_duration(ms: int | None) -> str:
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def fmt_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def fmt_pass_rate(rate: float | None, passed: int | None, failed: int | None) -> str:
    if rate is None:
        return "-"
    return f"{rate:.1%} {passed}/{(passed or 0) + (failed or 0)}"


def fmt_value(value: Any) -> str:
    """A compact, unambiguous rendering of a JSON value for tables."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return fmt_time(value)
    return orjson.dumps(value).decode()
