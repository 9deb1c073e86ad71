"""Cut-offs: the instant by which a trade should be matched, and whether it is overdue.

Pure values, no I/O. A cut-off (``kevin.domain.profiles.Cutoff``) comes from the
profile or product rules deciding the trade; ``cutoff_at`` turns it and the trade date
into one UTC instant.

Choices, documented in docs/api.md ("Cut-offs and ageing"):

- The day: the ``business_days``-th business day of the calendar after the trade date.
  With 0 on a trade date that is not a business day (a weekend, a holiday), the day rolls
  forward to the next business day (the "following" convention): a cut-off never falls on
  a day the desk is closed.
- The time: ``time`` on that day in ``timezone``. In the hour skipped when the clocks go
  forward (01:30 in Europe/London on the last Sunday of March), the wall-clock time is
  read with the offset before the change, so it lands as far after the gap's start as it
  was written after it (01:30 GMT, which is 02:30 BST). In the hour repeated when the
  clocks go back, the first occurrence (the earlier instant) is the cut-off: a chaser
  never comes later than the desk's clock said.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from kevin.domain.profiles import Cutoff
from kevin.domain.tolerances import holiday_calendar, is_business_day, shift_business_days

OPEN_STATUSES = frozenset({"unmatched", "mismatched"})


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def cutoff_day(trade_date: date, cutoff: Cutoff) -> date:
    """The local day of the cut-off: the n-th business day after the trade date, or the
    trade date itself (rolled forward to a business day) when n is 0."""
    calendar = holiday_calendar(cutoff.calendar)
    if cutoff.business_days == 0:
        day = trade_date
        while not is_business_day(calendar, day):
            day = shift_business_days(calendar, day, 1)
        return day
    return shift_business_days(calendar, trade_date, cutoff.business_days)


def local_instant(day: date, at: time, zone: str) -> datetime:
    """``at`` on ``day`` in ``zone`` as a UTC instant: a time in a skipped hour uses the
    offset before the change, a time in a repeated hour its first occurrence (fold 0)."""
    return datetime.combine(day, at, tzinfo=_zone(zone)).replace(fold=0).astimezone(UTC)


def cutoff_at(trade_date: date, cutoff: Cutoff) -> datetime:
    """The UTC instant of a trade's cut-off."""
    return local_instant(cutoff_day(trade_date, cutoff), cutoff.local_time(), cutoff.timezone)


def is_overdue(status: str, cutoff_instant: datetime | None, now: datetime) -> bool:
    """Overdue: the cut-off has passed (``now`` after it; at the instant itself the trade
    is still in time) while the trade is unmatched or mismatched. Matched and cancelled
    trades are never overdue."""
    return cutoff_instant is not None and status in OPEN_STATUSES and now > cutoff_instant


@dataclass(frozen=True)
class DecidingCutoffs:
    """The live cut-offs, to decide many trades' without a query each: the pairs'
    profiles by (participant_a, participant_b, product or ``"*"``), the products' rules."""

    profiles: dict[tuple[str, str, str], Cutoff | None]
    rules: dict[str, Cutoff | None]

    def for_trade(self, participant: str, counterparty: str, product: str) -> Cutoff | None:
        """Precedence as matching's: pair + product, pair + ``"*"``, the product's rules."""
        first, second = sorted((participant, counterparty))
        for claim in ((first, second, product), (first, second, "*")):
            if claim in self.profiles:
                return self.profiles[claim]
        return self.rules.get(product)

    def in_force(self) -> set[Cutoff]:
        """Every distinct cut-off among them."""
        return {c for c in (*self.profiles.values(), *self.rules.values()) if c is not None}

    def latest_trade_date_passed(self, now: datetime) -> date | None:
        """The latest trade date whose cut-off, under any of them, is before ``now``: no
        trade of a later date is overdue at ``now`` (None: none is)."""
        found = [d for c in self.in_force() if (d := latest_trade_date_passed(c, now))]
        return max(found) if found else None


# How far back from "now" a trade date's cut-off can still lie ahead: 31 business days
# and the holidays among them fit well inside; the walk below stops far earlier.
_LOOKBACK = timedelta(days=400)


def trade_dates_passing(cutoff: Cutoff, since: datetime | None, now: datetime) -> list[date]:
    """The trade dates whose cut-off (under ``cutoff``) is in ``[since, now)``: the trades
    of these dates became overdue in that span (at ``since`` they were still in time, at
    ``now`` they are not). ``since`` None: every trade date whose cut-off is before
    ``now``, as the latest one (every earlier date's has passed too) — see
    ``latest_trade_date_passed``.

    A cut-off never precedes its trade date's own day by more than a day in UTC and grows
    with the trade date, so the walk goes back from the day after ``now`` and stops at the
    first date whose cut-off is before ``since``."""
    found = []
    day = now.date() + timedelta(days=1)
    floor = now.date() - _LOOKBACK
    while day >= floor:
        at = cutoff_at(day, cutoff)
        if since is not None and at < since:
            break
        if at < now:
            found.append(day)
            if since is None:
                break
        day -= timedelta(days=1)
    return sorted(found)


def latest_trade_date_passed(cutoff: Cutoff, now: datetime) -> date | None:
    """The latest trade date whose cut-off is before ``now`` (None: none within reach)."""
    passed = trade_dates_passing(cutoff, None, now)
    return passed[-1] if passed else None
