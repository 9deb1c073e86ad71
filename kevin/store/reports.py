"""The STP report's counts, computed in one statement over every version (kevin.domain
.reports turns them into figures).

It reads ``trade_history`` (hot and archived versions alike), so an ``as_of`` report sees
exactly the versions recorded by then and reads the same however often it is asked.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

import asyncpg

from kevin.domain.reports import GroupBy, StpCounts

# $1, $2: trade dates (inclusive); $3: one participant or NULL for all; $4: the instant.
# versions: the report's versions, found by ix_trades_trade_date (and its archive twin).
# per_trade: each trade's version latest at $4 (DISTINCT ON over the version order) with
#   the first instant any version of it was matched; cancelled at $4 is not live.
# The key column is one of a fixed set (GROUP_KEYS), never text from a request.
# GROUPING SETS give the totals (is_total) and each group's figures from one pass.
_STP = """
WITH versions AS MATERIALIZED (
    SELECT participant, trade_id, version, status, reason, counterparty, product,
           trade_date, first_submitted_at, recorded_at,
           CASE WHEN status = 'mismatched' THEN mismatches -> 0 -> 'fields' END AS mismatch
    FROM trade_history
    WHERE trade_date BETWEEN $1 AND $2
      AND ($3::text IS NULL OR participant = $3)
      AND recorded_at <= $4
),
per_trade AS MATERIALIZED (
    SELECT DISTINCT ON (participant, trade_id)
           participant, trade_id, status, reason, counterparty, product, trade_date,
           first_submitted_at,
           min(recorded_at) FILTER (WHERE status = 'matched')
               OVER (PARTITION BY participant, trade_id) AS first_matched_at
    FROM versions
    ORDER BY participant, trade_id, version DESC
),
at_instant AS (
    SELECT *, status <> 'cancelled' AS live, ''::text AS whole,
           (first_matched_at AT TIME ZONE 'UTC')::date AS matched_on,
           trade_date + CASE extract(isodow FROM trade_date)
                            WHEN 5 THEN 3 WHEN 6 THEN 2 ELSE 1 END AS t_plus_1
    FROM per_trade
),
figures AS (
    SELECT GROUPING({key}) = 1 AS is_total, {key} AS key,
           count(*) FILTER (WHERE live) AS trades,
           count(*) FILTER (WHERE NOT live) AS cancelled,
           count(*) FILTER (WHERE status = 'matched') AS matched,
           count(*) FILTER (WHERE live AND matched_on <= trade_date) AS matched_on_trade_date,
           count(*) FILTER (WHERE live AND matched_on <= t_plus_1) AS matched_by_t1,
           count(*) FILTER (WHERE status = 'matched' AND reason NOT IN ('forced', 'agreed'))
               AS auto,
           count(*) FILTER (WHERE status = 'matched' AND reason = 'agreed') AS agreed,
           count(*) FILTER (WHERE status = 'matched' AND reason = 'forced') AS forced,
           count(*) FILTER (WHERE status IN ('unmatched', 'mismatched')) AS open,
           percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (
               ORDER BY first_matched_at - first_submitted_at) FILTER (WHERE live)
               AS time_to_match
    FROM at_instant
    GROUP BY GROUPING SETS ((), ({key}))
),
mismatch_fields AS (
    SELECT GROUPING(l.{key}) = 1 AS is_total, l.{key} AS key,
           jsonb_object_agg(field, n) AS fields
    FROM (
        SELECT l.{key}, f.field, count(DISTINCT (l.participant, l.trade_id)) AS n
        FROM at_instant l
        JOIN versions v USING (participant, trade_id)
        CROSS JOIN LATERAL jsonb_array_elements(v.mismatch) AS e(entry)
        CROSS JOIN LATERAL (SELECT e.entry ->> 'field') AS f(field)
        WHERE l.live AND v.mismatch IS NOT NULL
        GROUP BY l.{key}, f.field
    ) AS l
    GROUP BY GROUPING SETS ((), (l.{key}))
)
SELECT f.*, coalesce(m.fields, '{{}}') AS fields
FROM figures f
LEFT JOIN mismatch_fields m ON m.is_total = f.is_total AND m.key IS NOT DISTINCT FROM f.key
"""

# Without group_by, every trade falls in one group (the column ``whole``, ''): the
# GROUPING SETS then give the same figures twice, and the caller keeps the total.
GROUP_KEYS: dict[GroupBy | None, str] = {
    None: "whole", "counterparty": "counterparty", "product": "product",
}
_STATEMENTS = {group_by: _STP.format(key=column) for group_by, column in GROUP_KEYS.items()}


async def stp_counts(conn: asyncpg.Connection, start: date, end: date,
                     participant: str | None, group_by: GroupBy | None,
                     as_of: datetime) -> tuple[StpCounts, list[StpCounts]]:
    """The totals and, with ``group_by``, each group's counts (ordered by key)."""
    rows = await conn.fetch(_STATEMENTS[group_by], start, end, participant, as_of)
    total = next((_counts(r) for r in rows if r["is_total"]), None) or _empty()
    groups = sorted((_counts(r) for r in rows if not r["is_total"]),
                    key=lambda c: c.key or "")
    return total, groups if group_by else []


def _counts(row: asyncpg.Record) -> StpCounts:
    percentiles: list[Decimal | None] = (
        [None if p is None else _seconds(p) for p in row["time_to_match"]]
        if row["time_to_match"] is not None else [None, None, None])
    fields = row["fields"]
    return StpCounts(
        key=None if row["is_total"] else row["key"], trades=row["trades"],
        cancelled=row["cancelled"], matched=row["matched"],
        matched_on_trade_date=row["matched_on_trade_date"],
        matched_by_t1=row["matched_by_t1"], auto=row["auto"], agreed=row["agreed"],
        forced=row["forced"], open=row["open"], p50=percentiles[0], p90=percentiles[1],
        p99=percentiles[2], mismatch_fields=dict(fields) if fields else {})


def _seconds(interval: timedelta) -> Decimal:
    return Decimal(interval.days * 86_400 + interval.seconds) + Decimal(
        interval.microseconds).scaleb(-6)


def _empty() -> StpCounts:
    return StpCounts(key=None, trades=0, cancelled=0, matched=0, matched_on_trade_date=0,
                     matched_by_t1=0, auto=0, agreed=0, forced=0, open=0, p50=None,
                     p90=None, p99=None, mismatch_fields={})
