"""The straight-through-processing (STP) report: how much matched, how fast, and why not.

Pure: the store counts per trade date range (kevin.store.reports) and this module turns
the counts into the figures users read (shares as percentages, seconds as decimals). A
trade is counted by its trade date and by its state at the report's instant; one that is
cancelled at that instant is out of every figure but ``cancelled``.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict

from kevin.domain.errors import ValidationFailed
from kevin.domain.models import DecimalText, UtcText

# Shares and seconds are decimals, written as strings like every decimal Kevin answers.
Figure = Annotated[Decimal, DecimalText] | None

GroupBy = Literal["counterparty", "product"]
GROUP_BYS: tuple[GroupBy, ...] = ("counterparty", "product")
# A year and a day: a calendar year, leap or not, fits; a range that spans years does not.
MAX_RANGE_DAYS = 366

_PCT = Decimal("0.1")
_SECONDS = Decimal("0.001")


@dataclass(frozen=True)
class StpQuery:
    """What a report is about: trade dates ``start``..``end`` (inclusive), whose trades
    (None: every participant's, the admin only), grouped or not, as of an instant."""

    start: date
    end: date
    participant: str | None
    group_by: GroupBy | None
    as_of: datetime | None

    @classmethod
    def of(cls, start: date, end: date, participant: str | None, group_by: str | None,
           as_of: datetime | None) -> StpQuery:
        problems = []
        if start > end:
            problems.append({"field": "from", "message": "must not be after to"})
        elif (end - start).days + 1 > MAX_RANGE_DAYS:
            problems.append({"field": "to",
                             "message": f"a report covers at most {MAX_RANGE_DAYS} days"})
        if group_by is not None and group_by not in GROUP_BYS:
            problems.append({"field": "group_by",
                             "message": f"must be one of {', '.join(GROUP_BYS)}"})
        if problems:
            raise ValidationFailed(
                "; ".join(f"{p['field']} {p['message']}" for p in problems), problems)
        return cls(start, end, participant, group_by if group_by else None,  # type: ignore[arg-type]
                   as_of)


@dataclass(frozen=True)
class StpCounts:
    """One group's counts as the store reads them (``key`` None: every trade)."""

    key: str | None
    trades: int
    cancelled: int
    matched: int
    matched_on_trade_date: int
    matched_by_t1: int
    auto: int
    agreed: int
    forced: int
    open: int
    p50: Decimal | None
    p90: Decimal | None
    p99: Decimal | None
    mismatch_fields: dict[str, int]
    overdue: int = 0  # of the open, those past their cut-off at the instant


class TimeToMatch(BaseModel):
    model_config = ConfigDict(frozen=True)

    p50: Figure
    p90: Figure
    p99: Figure


class StpFigures(BaseModel):
    """One group's figures. Shares are of the trades not cancelled at the instant; time to
    match is the first matched version's ``recorded_at`` minus the first submission, over
    the trades that were ever matched."""

    model_config = ConfigDict(frozen=True)

    trades: int
    cancelled: int
    matched: int
    matched_on_trade_date_pct: Figure
    matched_by_t1_pct: Figure
    auto: int
    agreed: int
    forced: int
    open: int
    overdue: int
    time_to_match_seconds: TimeToMatch
    mismatch_fields: dict[str, int]

    @classmethod
    def of(cls, counts: StpCounts) -> StpFigures:
        return cls(
            trades=counts.trades, cancelled=counts.cancelled, matched=counts.matched,
            matched_on_trade_date_pct=percent(counts.matched_on_trade_date, counts.trades),
            matched_by_t1_pct=percent(counts.matched_by_t1, counts.trades),
            auto=counts.auto, agreed=counts.agreed, forced=counts.forced, open=counts.open,
            overdue=counts.overdue,
            time_to_match_seconds=TimeToMatch(p50=seconds(counts.p50), p90=seconds(counts.p90),
                                              p99=seconds(counts.p99)),
            mismatch_fields=dict(sorted(counts.mismatch_fields.items())))


class StpGroup(StpFigures):
    key: str


class StpReport(StpFigures):
    """The report: the figures over every trade in range, and per group when asked."""

    start: date
    end: date
    participant: str | None
    group_by: GroupBy | None
    as_of: Annotated[datetime, UtcText]
    groups: list[StpGroup]


def percent(part: int, whole: int) -> Decimal | None:
    """``part`` of ``whole`` in percent to one decimal (None when there is nothing)."""
    if whole == 0:
        return None
    return (Decimal(100 * part) / Decimal(whole)).quantize(_PCT, ROUND_HALF_EVEN)


def seconds(value: Decimal | None) -> Decimal | None:
    return None if value is None else value.quantize(_SECONDS, ROUND_HALF_EVEN)


def build_report(query: StpQuery, as_of: datetime, total: StpCounts,
                 groups: list[StpCounts]) -> StpReport:
    figures = StpFigures.of(total).model_dump()
    return StpReport(
        **figures, start=query.start, end=query.end, participant=query.participant,
        group_by=query.group_by, as_of=as_of,
        groups=[StpGroup(key=g.key or "", **StpFigures.of(g).model_dump()) for g in groups])


CSV_COLUMNS = (
    "key", "trades", "cancelled", "matched", "matched_on_trade_date_pct",
    "matched_by_t1_pct", "auto", "agreed", "forced", "open", "overdue",
    "time_to_match_p50_seconds",
    "time_to_match_p90_seconds", "time_to_match_p99_seconds", "mismatch_fields",
)


def csv_rows(report: StpReport) -> list[list[str]]:
    """The groups as CSV rows (the whole report as one row ``all`` when not grouped);
    mismatch fields as ``field=n`` pairs joined by ``;``."""
    rows: list[tuple[str, StpFigures]] = (
        [(g.key, g) for g in report.groups] if report.group_by else [("all", report)])

    def text(value: object) -> str:
        return "" if value is None else str(value)

    return [[key, *(text(v) for v in (
        f.trades, f.cancelled, f.matched, f.matched_on_trade_date_pct, f.matched_by_t1_pct,
        f.auto, f.agreed, f.forced, f.open, f.overdue, f.time_to_match_seconds.p50,
        f.time_to_match_seconds.p90, f.time_to_match_seconds.p99)),
        ";".join(f"{k}={n}" for k, n in f.mismatch_fields.items())] for key, f in rows]


def csv_text(report: StpReport) -> str:
    """The report as RFC 4180 CSV: a header row (CSV_COLUMNS), then ``csv_rows``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(csv_rows(report))
    return out.getvalue()
