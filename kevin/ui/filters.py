"""Template filters: how the workbench writes times, ages and amounts."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from kevin.domain.models import decimal_text


def utc(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def utc_input(value: datetime | None) -> str:
    """The value of a ``datetime-local`` input, read as UTC."""
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def age(value: datetime | None, now: datetime | None = None) -> str:
    """How long ago, in the largest two units: ``3d 4h``, ``2h 5m``, ``40s``."""
    if value is None:
        return ""
    seconds = max(0, int(((now or datetime.now(UTC)) - value).total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {seconds}s"
    return f"{seconds}s"


def amount(value: Any) -> str:
    return decimal_text(value) if isinstance(value, Decimal) else str(value)


FILTERS = {"utc": utc, "utc_input": utc_input, "age": age, "amount": amount}
