"""Template filters: how the workbench writes times, ages and amounts."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from kevin.domain.cutoffs import OPEN_STATUSES
from kevin.domain.models import AgedTrade, decimal_text


def utc(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def utc_minute(value: datetime) -> str:
    """An instant to the minute, where space is short (cut-offs are set to the minute)."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def utc_input(value: datetime | None) -> str:
    """The value of a ``datetime-local`` input, read as UTC."""
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def span(seconds: float) -> str:
    """A duration in its largest two units: ``3d 4h``, ``2h 5m``, ``40s``."""
    seconds = max(0, int(seconds))
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


def age(value: datetime | None, now: datetime | None = None) -> str:
    """How long ago, in the largest two units."""
    if value is None:
        return ""
    return span(((now or datetime.now(UTC)) - value).total_seconds())


def ageing(trade: AgedTrade, now: datetime) -> str:
    """Where a trade stands against its cut-off at ``now``, in words (never colour
    alone): ``overdue by 2h 5m``, ``due in 40m 0s``; a matched or cancelled trade is no
    longer due; ``no cut-off`` when nothing gives it one."""
    if trade.cutoff_at is None:
        return "no cut-off"
    if trade.status not in OPEN_STATUSES:
        return f"{trade.status}: no longer due"
    if trade.overdue:
        return f"overdue by {span((now - trade.cutoff_at).total_seconds())}"
    return f"due in {span((trade.cutoff_at - now).total_seconds())}"


def amount(value: Any) -> str:
    return decimal_text(value) if isinstance(value, Decimal) else str(value)


FILTERS = {"utc": utc, "utc_minute": utc_minute, "utc_input": utc_input, "age": age,
           "ageing": ageing, "amount": amount}
