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
from typing import Literal

import asyncpg

from kevin.domain.reports import GroupBy, StpCounts
from kevin.domain.tolerances import TOLERANCE_FIELDS

# Every form takes $1, $2: trade dates (inclusive); $3: one participant or NULL for all;
# and the as-of form $4: the instant. The key column is one of a fixed set (GROUP_KEYS),
# never text from a request.
#
# Each form yields one row per trade, as it stood at the instant: live (not cancelled),
# is_matched, is_agreed and is_forced (matched, by that reason), the first instant it was
# ever matched, its first submission, trade date, key, and per field whether its nearest
# candidate ever differed on it. The figures are one aggregate over those rows, and the
# planner writes a column's expression into every figure that reads it: each form spells
# them in what it has at hand (the status text now, the packed state as of an instant),
# never as a code to be decoded again per figure.

_STATUS = ("CASE {t}status WHEN 'unmatched' THEN 0 WHEN 'mismatched' THEN 1 "
           "WHEN 'matched' THEN 2 ELSE 3 END")
_HOW = "CASE {t}reason WHEN 'forced' THEN 1 WHEN 'agreed' THEN 2 ELSE 0 END"


def _differed(t: str, field: str) -> str:
    """Whether a version's nearest candidate differed on ``field`` (a constant name)."""
    return (f"({t}status = 'mismatched' AND {t}mismatches -> 0 -> 'fields' @> "
            f"'[{{\"field\": \"{field}\"}}]')")


# Now: the latest rows say almost everything. Only an earlier match (since broken or
# amended away) or an earlier mismatch is in older versions; those are few, found by
# ix_trades_earlier, aggregated apart, and joined by hash.
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
    SELECT t.status <> 'cancelled' AS live, t.status = 'matched' AS is_matched,
           t.reason = 'agreed' AND t.status = 'matched' AS is_agreed,
           t.reason = 'forced' AND t.status = 'matched' AS is_forced,
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
    SELECT state % 64 / 8 <> 3 AS live, state % 64 / 8 = 2 AS is_matched,
           state % 64 = 2 * 8 + 2 AS is_agreed, state % 64 = 2 * 8 + 1 AS is_forced,
           first_matched_at, first_submitted_at, trade_date, key, participant,
           counterparty, product, {differed_columns}
    FROM versions
)"""

# The figures: one aggregate per group (or over everything), of counts and the waits
# collected as an array, so that each parallel worker aggregates its share of the rows:
# an ordered-set aggregate such as percentile_cont has no partial form, and a statement
# with one is aggregated by one process. The percentiles are then taken over each group's
# waits, and the totals add the groups up (GROUPING SETS has no partial form either).
# The matched date is the first match's UTC date (AT TIME ZONE INTERVAL '0' is 'UTC'
# without looking the name up); the next weekday after a trade date comes from its day
# number, 0001-01-01 being a Monday (extract(isodow) is a numeric).
_FIGURES = """,
at_instant AS (
    SELECT p.*, {overdue_until} AS overdue_until
    FROM per_trade p{deciding}
),
groups AS (
    SELECT {key} AS key, count(*) AS counted,
           count(*) FILTER (WHERE live) AS trades,
           count(*) FILTER (WHERE is_matched) AS matched,
           count(*) FILTER (WHERE live AND
               (first_matched_at AT TIME ZONE INTERVAL '0')::date <= trade_date)
               AS matched_on_trade_date,
           count(*) FILTER (WHERE live AND
               (first_matched_at AT TIME ZONE INTERVAL '0')::date <= {t_plus_1})
               AS matched_by_t1,
           count(*) FILTER (WHERE is_agreed) AS agreed,
           count(*) FILTER (WHERE is_forced) AS forced,
           {count_overdue} AS overdue,
           array_collect(first_matched_at - first_submitted_at)
               FILTER (WHERE live AND first_matched_at IS NOT NULL) AS waits,
           {count_differed}
    FROM at_instant
    {group_by}
)
"""

# The next weekday after the date {d}: Friday's is Monday, and so is Saturday's.
NEXT_WEEKDAY = ("{d} + CASE ({d} - DATE '0001-01-01') % 7 WHEN 4 THEN 3 WHEN 5 THEN 2 "
                "ELSE 1 END")
_PERCENTILES = ("(SELECT percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY w) "
                "FROM (SELECT unnest({waits}) AS w{source}) AS collected)")
_ROW = """SELECT {is_total} AS is_total, {key} AS key, trades, counted - trades AS cancelled,
       matched, matched_on_trade_date, matched_by_t1, matched - agreed - forced AS auto,
       agreed, forced, trades - matched AS open, overdue,
       {percentiles} AS time_to_match,
       {differed}
FROM {source}"""
_GROUPED_ROWS = "{groups}\nUNION ALL\n{totals}"
_TOTALS = "(SELECT {summed} FROM groups) AS totals"
_SUMMED = ("counted", "trades", "matched", "matched_on_trade_date", "matched_by_t1", "agreed",
           "forced", "overdue")

# Overdue at the instant: open, and its trade date at most the last one whose cut-off
# had passed then under what decides it (a cut-off grows with the trade date, so that is
# exactly "its cut-off had passed"). The engine works those dates out per profile claim
# (pair and product, or "*") and per product's rules and binds them as small arrays
# ({n} is the first of their six parameters); '-infinity' where a claim or rules have no
# cut-off or none had passed. Precedence as matching's: pair + product, pair + "*", the
# product's rules. Three hash joins against a handful of rows, in the one pass; only the
# rules' while no profile claims a pair (each join costs every row its probe, an empty
# one too: the claims' two were 0.35 s of CPU at a million trades); none at all while no
# cut-off is in force (OverdueDates None).
_DECIDING_CLAIMS = """
    LEFT JOIN unnest(${a}::text[], ${b}::text[], ${c}::text[], ${d}::date[])
        AS claim(a, b, product, until)
        ON claim.a = least(p.participant, p.counterparty)
       AND claim.b = greatest(p.participant, p.counterparty) AND claim.product = p.product
    LEFT JOIN unnest(${a}::text[], ${b}::text[], ${c}::text[], ${d}::date[])
        AS any_claim(a, b, product, until)
        ON any_claim.a = least(p.participant, p.counterparty)
       AND any_claim.b = greatest(p.participant, p.counterparty) AND any_claim.product = '*'"""
_DECIDING_RULES = """
    LEFT JOIN unnest(${e}::text[], ${f}::date[]) AS product_rules(product, until)
        ON product_rules.product = p.product"""
_OVERDUE_UNTIL = {"claims": "coalesce(claim.until, any_claim.until, product_rules.until)",
                  "rules": "product_rules.until"}
# What decides overdue: None (no cut-off in force), "rules" (the products' rules alone: no
# profile claims a pair) or "claims" (the claims, then the rules).
Deciding = Literal["rules", "claims"] | None


@dataclass(frozen=True)
class OverdueDates:
    """Per profile claim and per product's rules in force at the report's instant, the
    last trade date whose cut-off had passed then (None: no cut-off, or none passed)."""

    claims: dict[tuple[str, str, str], date | None]  # (a, b, product or "*")
    rules: dict[str, date | None]

    @property
    def deciding(self) -> Deciding:
        return "claims" if self.claims else "rules"

    def parameters(self) -> list[list[object]]:
        """The arrays the statement binds: the claims' four (when any), the rules' two."""
        never = date.min  # no trade date is ever at or before it
        claims = list(self.claims.items())
        rules = list(self.rules.items())
        by_rules: list[list[object]] = [[p for p, _ in rules], [d or never for _, d in rules]]
        if not claims:
            return by_rules
        return [[k[0] for k, _ in claims], [k[1] for k, _ in claims],
                [k[2] for k, _ in claims], [d or never for _, d in claims], *by_rules]


_NOW_KEYS: dict[GroupBy | None, str] = {
    None: "''::text", "counterparty": "t.counterparty", "product": "t.product",
}
_AS_OF_KEYS: dict[GroupBy | None, str] = {
    None: "''::text", "counterparty": "max(counterparty)", "product": "max(product)",
}


def _columns(column: Callable[[str], str], separator: str = ",\n           ") -> str:
    return separator.join(column(field) for field in TOLERANCE_FIELDS)


def _bit(field: str) -> int:
    return 1 << TOLERANCE_FIELDS.index(field)


def _differed_bits() -> str:
    """Per version, the fields its nearest candidate differed on, a bit each (_bit): one
    aggregate per trade instead of one per field, in the per-trade hash as in its states."""
    bits = " | ".join(
        f"CASE WHEN mismatches -> 0 -> 'fields' @> '[{{\"field\": \"{f}\"}}]' "
        f"THEN {_bit(f)} ELSE 0 END" for f in TOLERANCE_FIELDS)
    return f"coalesce(bit_or(CASE WHEN status = 'mismatched' THEN {bits} END), 0) AS differed"


def _now(group_by: GroupBy | None, deciding: Deciding) -> str:
    # The latest version's own fields stay one test each: a column is written into every
    # figure that reads it, and the bits of all four would be worked out four times.
    return _PER_TRADE_NOW.format(
        key=_NOW_KEYS[group_by], earlier_differed=_differed_bits(),
        latest_differed=_columns(
            lambda f: f"coalesce(e.differed, 0) & {_bit(f)} <> 0 OR {_differed('t.', f)}"
                      f" AS differed_on_{f}"),
    ) + _figures(group_by, deciding, 4)


def _as_of(group_by: GroupBy | None, deciding: Deciding) -> str:
    return _PER_TRADE_AS_OF.format(
        status=_STATUS.format(t=""), how=_HOW.format(t=""), key=_AS_OF_KEYS[group_by],
        earlier_differed=_differed_bits(),
        differed_columns=_columns(
            lambda f: f"differed & {_bit(f)} <> 0 AS differed_on_{f}", ",\n           "),
    ) + _figures(group_by, deciding, 5)


def _figures(group_by: GroupBy | None, deciding: Deciding, n: int) -> str:
    """``n``: the number of the first of the OverdueDates parameters (``deciding`` None:
    no cut-off in force, nothing is overdue and nothing is joined). Grouped: a row per
    group, then the totals; ungrouped: the one aggregate row is the totals."""
    grouped = group_by is not None
    # The claims' four arrays come first when they are bound at all.
    e = n + 4 if deciding == "claims" else n
    joins = {None: "", "rules": _DECIDING_RULES.format(e=e, f=e + 1),
             "claims": _DECIDING_CLAIMS.format(a=n, b=n + 1, c=n + 2, d=n + 3)
             + _DECIDING_RULES.format(e=e, f=e + 1)}
    differed = _columns(lambda f: f"differed_on_{f}", ", ")
    figures = _FIGURES.format(
        key="key" if grouped else "NULL::text", t_plus_1=NEXT_WEEKDAY.format(d="trade_date"),
        group_by="GROUP BY key" if grouped else "",
        overdue_until="NULL::date" if deciding is None else _OVERDUE_UNTIL[deciding],
        deciding=joins[deciding],
        count_overdue="0::bigint" if deciding is None else (
            "count(*) FILTER (WHERE live AND NOT is_matched AND trade_date <= overdue_until)"),
        count_differed=_columns(
            lambda f: f"count(*) FILTER (WHERE live AND differed_on_{f}) AS differed_on_{f}"))
    if not grouped:
        return figures + _ROW.format(
            is_total="true", key="key", differed=differed, source="groups",
            percentiles=_PERCENTILES.format(waits="waits", source=""))
    summed = ", ".join(f"coalesce(sum({c}), 0)::bigint AS {c}"
                       for c in (*_SUMMED, *(f"differed_on_{f}" for f in TOLERANCE_FIELDS)))
    return figures + _GROUPED_ROWS.format(
        groups=_ROW.format(
            is_total="false", key="key", differed=differed, source="groups",
            percentiles=_PERCENTILES.format(waits="waits", source="")),
        totals=_ROW.format(
            is_total="true", key="NULL::text", differed=differed,
            source=_TOTALS.format(summed=summed),
            percentiles=_PERCENTILES.format(waits="waits", source=" FROM groups")))


# A report reads a year of versions at most: longer than any request's statement may take,
# but bounded all the same.
REPORT_TIMEOUT = 60.0
# The percentiles sort every wait in range (700,000 at a million trades, about 40 MB as
# sort tuples) and as of an instant a row per trade is hashed: in memory, where the
# server's default (4 MB) sends both to temporary files. For the report's transaction only.
REPORT_WORK_MEM = "64MB"

_DECIDINGS: tuple[Deciding, ...] = (None, "rules", "claims")
_NOW_STATEMENTS = {(group_by, deciding): _now(group_by, deciding)
                   for group_by in _NOW_KEYS for deciding in _DECIDINGS}
_AS_OF_STATEMENTS = {(group_by, deciding): _as_of(group_by, deciding)
                     for group_by in _AS_OF_KEYS for deciding in _DECIDINGS}


async def stp_counts(conn: asyncpg.Connection, start: date, end: date,
                     participant: str | None, group_by: GroupBy | None,
                     as_of: datetime | None, overdue: OverdueDates | None = None
                     ) -> tuple[StpCounts, list[StpCounts]]:
    """The totals and, with ``group_by``, each group's counts (ordered by key); as the
    versions are now, or as they were at ``as_of``; ``overdue``: the cut-offs' last
    passed trade dates at the report's instant (None: none in force)."""
    extra = overdue.parameters() if overdue is not None else []
    key = (group_by, overdue.deciding if overdue is not None else None)
    async with conn.transaction(readonly=True):
        await conn.execute(f"SET LOCAL work_mem = '{REPORT_WORK_MEM}'")
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
