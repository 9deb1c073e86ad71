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
           t.participant, t.counterparty, t.product,
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
           max(counterparty) AS counterparty, max(product) AS product,
           {earlier_differed}
    FROM trade_history
    WHERE trade_date BETWEEN $1 AND $2 AND ($3::text IS NULL OR participant = $3)
      AND recorded_at <= $4
    GROUP BY participant, trade_id
),
per_trade AS (
    SELECT state % 64 / 8 AS status, state % 8 AS how, first_matched_at,
           first_submitted_at, trade_date, key, participant, counterparty, product,
           {differed_columns}
    FROM versions
)"""

# The figures: grouped, GROUPING SETS give the totals (is_total) and each group's from one
# pass; ungrouped, one plain aggregate.
_FIGURES = """,
at_instant AS (
    SELECT p.*, status <> 3 AS live,
           (first_matched_at AT TIME ZONE 'UTC')::date AS matched_on,
           trade_date + CASE extract(isodow FROM trade_date)
                            WHEN 5 THEN 3 WHEN 6 THEN 2 ELSE 1 END AS t_plus_1,
           {overdue_until} AS overdue_until
    FROM per_trade p{deciding}
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
       count(*) FILTER (WHERE status IN (0, 1) AND trade_date <= overdue_until) AS overdue,
       percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (
           ORDER BY first_matched_at - first_submitted_at)
           FILTER (WHERE live AND first_matched_at IS NOT NULL)
           AS time_to_match,
       {count_differed}
FROM at_instant
{group_by}
"""

# Overdue at the instant: open, and its trade date at most the last one whose cut-off
# had passed then under what decides it (a cut-off grows with the trade date, so that is
# exactly "its cut-off had passed"). The engine works those dates out per profile claim
# (pair and product, or "*") and per product's rules and binds them as small arrays
# ({n} is the first of their six parameters); '-infinity' where a claim or rules have no
# cut-off or none had passed. Precedence as matching's: pair + product, pair + "*", the
# product's rules. Three hash joins against a handful of rows, in the one pass; none at
# all while no cut-off is in force (OverdueDates None).
_DECIDING = """
    LEFT JOIN unnest(${a}::text[], ${b}::text[], ${c}::text[], ${d}::date[])
        AS claim(a, b, product, until)
        ON claim.a = least(p.participant, p.counterparty)
       AND claim.b = greatest(p.participant, p.counterparty) AND claim.product = p.product
    LEFT JOIN unnest(${a}::text[], ${b}::text[], ${c}::text[], ${d}::date[])
        AS any_claim(a, b, product, until)
        ON any_claim.a = least(p.participant, p.counterparty)
       AND any_claim.b = greatest(p.participant, p.counterparty) AND any_claim.product = '*'
    LEFT JOIN unnest(${e}::text[], ${f}::date[]) AS product_rules(product, until)
        ON product_rules.product = p.product"""
_OVERDUE_UNTIL = "coalesce(claim.until, any_claim.until, product_rules.until)"


@dataclass(frozen=True)
class OverdueDates:
    """Per profile claim and per product's rules in force at the report's instant, the
    last trade date whose cut-off had passed then (None: no cut-off, or none passed)."""

    claims: dict[tuple[str, str, str], date | None]  # (a, b, product or "*")
    rules: dict[str, date | None]

    def parameters(self) -> list[list[object]]:
        never = date.min  # no trade date is ever at or before it
        claims = list(self.claims.items())
        rules = list(self.rules.items())
        return [[k[0] for k, _ in claims], [k[1] for k, _ in claims],
                [k[2] for k, _ in claims], [d or never for _, d in claims],
                [p for p, _ in rules], [d or never for _, d in rules]]


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


def _now(group_by: GroupBy | None, overdue: bool) -> str:
    return _PER_TRADE_NOW.format(
        status=_STATUS.format(t="t."), how=_HOW.format(t="t."), key=_NOW_KEYS[group_by],
        earlier_differed=_columns(_earlier_differed),
        latest_differed=_columns(
            lambda f: f"coalesce(e.differed_on_{f}, false) OR {_differed('t.', f)}"
                      f" AS differed_on_{f}"),
    ) + _figures(group_by, 4 if overdue else None)


def _as_of(group_by: GroupBy | None, overdue: bool) -> str:
    return _PER_TRADE_AS_OF.format(
        status=_STATUS.format(t=""), how=_HOW.format(t=""), key=_AS_OF_KEYS[group_by],
        earlier_differed=_columns(_earlier_differed),
        differed_columns=_columns(lambda f: f"differed_on_{f}", ", "),
    ) + _figures(group_by, 5 if overdue else None)


def _figures(group_by: GroupBy | None, overdue_parameters: int | None) -> str:
    """``overdue_parameters``: the number of the first of the six OverdueDates parameters
    (None: no cut-off in force, nothing is overdue and nothing is joined)."""
    grouped = group_by is not None
    n = overdue_parameters
    return _FIGURES.format(
        is_total="GROUPING(key) = 1" if grouped else "true",
        key="key" if grouped else "NULL::text",
        group_by="GROUP BY GROUPING SETS ((), (key))" if grouped else "",
        overdue_until="NULL::date" if n is None else _OVERDUE_UNTIL,
        deciding="" if n is None else _DECIDING.format(
            a=n, b=n + 1, c=n + 2, d=n + 3, e=n + 4, f=n + 5),
        count_differed=_columns(
            lambda f: f"count(*) FILTER (WHERE live AND differed_on_{f}) AS differed_on_{f}",
            ",\n       "))


# A report reads a year of versions at most: longer than any request's statement may take,
# but bounded all the same.
REPORT_TIMEOUT = 60.0

_NOW_STATEMENTS = {(group_by, overdue): _now(group_by, overdue)
                   for group_by in _NOW_KEYS for overdue in (False, True)}
_AS_OF_STATEMENTS = {(group_by, overdue): _as_of(group_by, overdue)
                     for group_by in _AS_OF_KEYS for overdue in (False, True)}


async def stp_counts(conn: asyncpg.Connection, start: date, end: date,
                     participant: str | None, group_by: GroupBy | None,
                     as_of: datetime | None, overdue: OverdueDates | None = None
                     ) -> tuple[StpCounts, list[StpCounts]]:
    """The totals and, with ``group_by``, each group's counts (ordered by key); as the
    versions are now, or as they were at ``as_of``; ``overdue``: the cut-offs' last
    passed trade dates at the report's instant (None: none in force)."""
    extra = overdue.parameters() if overdue is not None else []
    key = (group_by, overdue is not None)
    if as_of is None:
        rows = await conn.fetch(_NOW_STATEMENTS[key], start, end, participant, *extra,
                                timeout=REPORT_TIMEOUT)
    else:
        rows = await conn.fetch(_AS_OF_STATEMENTS[key], start, end, participant, as_of,
                                *extra, timeout=REPORT_TIMEOUT)
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
        forced=row["forced"], open=row["open"], overdue=row["overdue"],
        p50=percentiles[0], p90=percentiles[1],
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
