"""The STP report's counts, computed in one statement over the versions (kevin.domain
.reports turns them into figures).

It reads ``trade_history`` (hot and archived versions alike), so an ``as_of`` report sees
exactly the versions recorded by then and reads the same however often it is asked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

import asyncpg

from kevin.domain.reports import GroupBy, StpCounts
from kevin.domain.tolerances import TOLERANCE_FIELDS

# Every form takes $1, $2: trade dates (inclusive); $3: one participant or NULL for all;
# and the as-of form $4: the instant. The key column is one of a fixed set (GROUP_KEYS),
# never text from a request.
#
# Each form yields one row per trade: its status and how it matched at the instant
# (status 0 unmatched, 1 mismatched, 2 matched, 3 cancelled; how 0 auto, 1 forced,
# 2 agreed), the first instant it was ever matched, its first submission, trade date, key,
# and per field whether its nearest candidate ever differed on it.

_STATUS = ("CASE {t}status WHEN 'unmatched' THEN 0 WHEN 'mismatched' THEN 1 "
           "WHEN 'matched' THEN 2 ELSE 3 END")
_HOW = "CASE {t}reason WHEN 'forced' THEN 1 WHEN 'agreed' THEN 2 ELSE 0 END"


def _differed(t: str, field: str) -> str:
    """Whether a version's nearest candidate differed on ``field`` (a constant name)."""
    return (f"({t}status = 'mismatched' AND {t}mismatches -> 0 -> 'fields' @> "
            f"'[{{\"field\": \"{field}\"}}]')")


# Now: the latest rows say almost everything (ix_trades_trade_date finds them). Only an
# earlier match (since broken or amended away) or an earlier mismatch is in older
# versions; those are few, aggregated apart, and joined by hash.
_PER_TRADE_NOW = """
WITH earlier AS (
    SELECT participant, trade_id,
           min(recorded_at) FILTER (WHERE status = 'matched') AS first_matched_at,
           {earlier_differed}
    FROM trade_history
    WHERE trade_date BETWEEN $1 AND $2 AND ($3::text IS NULL OR participant = $3)
      AND NOT latest AND status IN ('matched', 'mismatched')
    GROUP BY participant, trade_id
),
per_trade AS (
    SELECT {status} AS status, {how} AS how,
           least(e.first_matched_at,
                 CASE WHEN t.status = 'matched' THEN t.recorded_at END) AS first_matched_at,
           t.first_submitted_at, t.trade_date, {key} AS key,
           {latest_differed}
    FROM trades t
    LEFT JOIN earlier e USING (participant, trade_id)
    WHERE t.latest AND t.trade_date BETWEEN $1 AND $2
      AND ($3::text IS NULL OR t.participant = $3)
)"""

# As of an instant: one hash aggregate over the versions recorded by then, a row per
# trade. The version latest then wins max() because its number leads the packed state
# (version * 64 + status * 8 + how). A trade amended to another trade date, counterparty
# or product counts under the greatest of its values.
_PER_TRADE_AS_OF = """
WITH versions AS (
    SELECT participant, trade_id,
           max(version * 64 + {status} * 8 + {how}) AS state,
           min(recorded_at) FILTER (WHERE status = 'matched') AS first_matched_at,
           min(first_submitted_at) AS first_submitted_at,
           max(trade_date) AS trade_date,
           {key} AS key,
           {earlier_differed}
    FROM trade_history
    WHERE trade_date BETWEEN $1 AND $2 AND ($3::text IS NULL OR participant = $3)
      AND recorded_at <= $4
    GROUP BY participant, trade_id
),
per_trade AS (
    SELECT state % 64 / 8 AS status, state % 8 AS how, first_matched_at,
           first_submitted_at, trade_date, key, {differed_columns}
    FROM versions
)"""

# The figures: grouped, GROUPING SETS give the totals (is_total) and each group's from one
# pass; ungrouped, one plain aggregate.
_FIGURES = """,
at_instant AS (
    SELECT *, status <> 3 AS live,
           (first_matched_at AT TIME ZONE 'UTC')::date AS matched_on,
           trade_date + CASE extract(isodow FROM trade_date)
                            WHEN 5 THEN 3 WHEN 6 THEN 2 ELSE 1 END AS t_plus_1
    FROM per_trade
)
SELECT {is_total} AS is_total, {key} AS key,
       count(*) FILTER (WHERE live) AS trades,
       count(*) FILTER (WHERE NOT live) AS cancelled,
       count(*) FILTER (WHERE status = 2) AS matched,
       count(*) FILTER (WHERE live AND matched_on <= trade_date) AS matched_on_trade_date,
       count(*) FILTER (WHERE live AND matched_on <= t_plus_1) AS matched_by_t1,
       count(*) FILTER (WHERE status = 2 AND how = 0) AS auto,
       count(*) FILTER (WHERE status = 2 AND how = 2) AS agreed,
       count(*) FILTER (WHERE status = 2 AND how = 1) AS forced,
       count(*) FILTER (WHERE status IN (0, 1)) AS open,
       percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (
           ORDER BY first_matched_at - first_submitted_at)
           FILTER (WHERE live AND first_matched_at IS NOT NULL)
           AS time_to_match,
       {count_differed}
FROM at_instant
{group_by}
"""

_NOW_KEYS: dict[GroupBy | None, str] = {
    None: "''::text", "counterparty": "t.counterparty", "product": "t.product",
}
_AS_OF_KEYS: dict[GroupBy | None, str] = {
    None: "''::text", "counterparty": "max(counterparty)", "product": "max(product)",
}


def _columns(column: Callable[[str], str], separator: str = ",\n           ") -> str:
    return separator.join(column(field) for field in TOLERANCE_FIELDS)


def _earlier_differed(field: str) -> str:
    return f"coalesce(bool_or({_differed('', field)}), false) AS differed_on_{field}"


def _now(group_by: GroupBy | None) -> str:
    return _PER_TRADE_NOW.format(
        status=_STATUS.format(t="t."), how=_HOW.format(t="t."), key=_NOW_KEYS[group_by],
        earlier_differed=_columns(_earlier_differed),
        latest_differed=_columns(
            lambda f: f"coalesce(e.differed_on_{f}, false) OR {_differed('t.', f)}"
                      f" AS differed_on_{f}"),
    ) + _figures(group_by)


def _as_of(group_by: GroupBy | None) -> str:
    return _PER_TRADE_AS_OF.format(
        status=_STATUS.format(t=""), how=_HOW.format(t=""), key=_AS_OF_KEYS[group_by],
        earlier_differed=_columns(_earlier_differed),
        differed_columns=_columns(lambda f: f"differed_on_{f}", ", "),
    ) + _figures(group_by)


def _figures(group_by: GroupBy | None) -> str:
    grouped = group_by is not None
    return _FIGURES.format(
        is_total="GROUPING(key) = 1" if grouped else "true",
        key="key" if grouped else "NULL::text",
        group_by="GROUP BY GROUPING SETS ((), (key))" if grouped else "",
        count_differed=_columns(
            lambda f: f"count(*) FILTER (WHERE live AND differed_on_{f}) AS differed_on_{f}",
            ",\n       "))


# The trades open at the instant (their version latest then, among those in range, is
# unmatched or mismatched), counted by what decides their cut-off (pair, product), their
# trade date and the report's group key: few rows, from which the engine tells the
# overdue ones (a cut-off is computed, kevin.domain.cutoffs). Now: the partial index of
# open trades by trade date (ix_trades_open_by_trade_date). As of an instant: the versions
# recorded by then, as the figures read them.
_OPEN_NOW = """
SELECT t.participant, t.counterparty, t.product, t.trade_date, {key} AS key,
       count(*) AS open
FROM trades t
WHERE t.latest AND t.status IN ('unmatched', 'mismatched')
  AND t.trade_date BETWEEN $1 AND $2 AND ($3::text IS NULL OR t.participant = $3)
GROUP BY 1, 2, 3, 4, 5
"""
_OPEN_AS_OF = """
WITH versions AS (
    SELECT participant,
           (array_agg(status ORDER BY version DESC))[1] AS status,
           (array_agg(counterparty ORDER BY version DESC))[1] AS counterparty,
           (array_agg(product ORDER BY version DESC))[1] AS product,
           (array_agg(trade_date ORDER BY version DESC))[1] AS trade_date,
           {key} AS key
    FROM trade_history
    WHERE trade_date BETWEEN $1 AND $2 AND ($3::text IS NULL OR participant = $3)
      AND recorded_at <= $4
    GROUP BY participant, trade_id
)
SELECT participant, counterparty, product, trade_date, key, count(*) AS open
FROM versions WHERE status IN ('unmatched', 'mismatched')
GROUP BY 1, 2, 3, 4, 5
"""


@dataclass(frozen=True)
class OpenGroup:
    """Trades open at the report's instant that share what decides their cut-off."""

    participant: str
    counterparty: str
    product: str
    trade_date: date
    key: str
    open: int


async def open_groups(conn: asyncpg.Connection, start: date, end: date,
                      participant: str | None, group_by: GroupBy | None,
                      as_of: datetime | None) -> list[OpenGroup]:
    """The trades the report counts as open, grouped (as the versions are now, or were at
    ``as_of``)."""
    if as_of is None:
        rows = await conn.fetch(_OPEN_NOW_STATEMENTS[group_by], start, end, participant,
                                timeout=REPORT_TIMEOUT)
    else:
        rows = await conn.fetch(_OPEN_AS_OF_STATEMENTS[group_by], start, end, participant,
                                as_of, timeout=REPORT_TIMEOUT)
    return [OpenGroup(r["participant"], r["counterparty"], r["product"], r["trade_date"],
                      r["key"], r["open"]) for r in rows]


# A report reads a year of versions at most: longer than any request's statement may take,
# but bounded all the same.
REPORT_TIMEOUT = 60.0

_NOW_STATEMENTS = {group_by: _now(group_by) for group_by in _NOW_KEYS}
_AS_OF_STATEMENTS = {group_by: _as_of(group_by) for group_by in _AS_OF_KEYS}
_OPEN_NOW_STATEMENTS = {group_by: _OPEN_NOW.format(key=key) for group_by, key in _NOW_KEYS.items()}
_OPEN_AS_OF_STATEMENTS = {group_by: _OPEN_AS_OF.format(key=key)
                          for group_by, key in _AS_OF_KEYS.items()}


async def stp_counts(conn: asyncpg.Connection, start: date, end: date,
                     participant: str | None, group_by: GroupBy | None,
                     as_of: datetime | None) -> tuple[StpCounts, list[StpCounts]]:
    """The totals and, with ``group_by``, each group's counts (ordered by key); as the
    versions are now, or as they were at ``as_of``."""
    if as_of is None:
        rows = await conn.fetch(_NOW_STATEMENTS[group_by], start, end, participant,
                                timeout=REPORT_TIMEOUT)
    else:
        rows = await conn.fetch(_AS_OF_STATEMENTS[group_by], start, end, participant, as_of,
                                timeout=REPORT_TIMEOUT)
    total = next((_counts(r) for r in rows if r["is_total"]), None) or _empty()
    groups = sorted((_counts(r) for r in rows if not r["is_total"]),
                    key=lambda c: c.key or "")
    return total, groups if group_by else []


def _counts(row: asyncpg.Record) -> StpCounts:
    percentiles: list[Decimal | None] = (
        [None if p is None else _seconds(p) for p in row["time_to_match"]]
        if row["time_to_match"] is not None else [None, None, None])
    return StpCounts(
        key=None if row["is_total"] else row["key"], trades=row["trades"],
        cancelled=row["cancelled"], matched=row["matched"],
        matched_on_trade_date=row["matched_on_trade_date"],
        matched_by_t1=row["matched_by_t1"], auto=row["auto"], agreed=row["agreed"],
        forced=row["forced"], open=row["open"], p50=percentiles[0], p90=percentiles[1],
        p99=percentiles[2],
        mismatch_fields={field: row[f"differed_on_{field}"] for field in TOLERANCE_FIELDS
                         if row[f"differed_on_{field}"]})


def _seconds(interval: timedelta) -> Decimal:
    return Decimal(interval.days * 86_400 + interval.seconds) + Decimal(
        interval.microseconds).scaleb(-6)


def _empty() -> StpCounts:
    return StpCounts(key=None, trades=0, cancelled=0, matched=0, matched_on_trade_date=0,
                     matched_by_t1=0, auto=0, agreed=0, forced=0, open=0, p50=None,
                     p90=None, p99=None, mismatch_fields={})
