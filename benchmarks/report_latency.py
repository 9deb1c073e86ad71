"""The STP report over a million trades: how long GET /v1/reports/stp takes to answer.

    PYTHONPATH=. python benchmarks/report_latency.py [--trades 1000000] [--runs 5]
        [--url postgresql://postgres@127.0.0.1:5432/postgres] [--keep] [--cutoff]

Creates a scratch database, loads --trades trades over 20 trade dates straight into
`trades` with generate_series (two participants, four products; per trade a submitted
version, then for 70% a matched version, 20% a mismatched one naming the price or the
quantity, 10% nothing more: about 1.9 versions a trade), analyzes, and times the report
for the admin over the whole range: ungrouped, grouped by product, and as of the middle
of the load. The target is under 2 s at 1,000,000 trades.

The baseline, run interleaved with the report in the same rounds, is the least work any
such report needs: one pass over the same versions (`count(*)` over the trade-date
range of `trade_history`), so the ratio shows what the report's figures cost on top of
reading the rows at all.

With --cutoff the rounds are measured twice: as loaded (no cut-off in force, so the
report's `overdue` reads nothing more), then with every product's rules carrying a
cut-off (T+1 17:00 London) that has passed for every trade date, so `overdue` reads
the open trades (30% of them) on top.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import UTC, date, datetime, timedelta

import asyncpg

from kevin.dburl import to_asyncpg_dsn, with_database
from kevin.domain.reports import StpQuery
from kevin.engine.reports import Reports
from kevin.store import database
from kevin.store.replica import Reads

FIRST_DATE = date(2026, 11, 2)
DATES = 20

# Each trade: g. Its trade date cycles over DATES days; version 1 is recorded a second
# after the trade date's start, the next version (if any) g % 97 seconds later.
LOAD = """
INSERT INTO trades (participant, trade_id, version, latest, status, reason, counterparty,
    side, product, quantity, price, currency, trade_date, settlement_date, location, actor,
    first_submitted_at, recorded_at, match_id, mismatches)
SELECT p.participant, 'T-' || g, v.version, v.version = v.last, v.status, v.reason,
       p.counterparty, p.side, 'P' || (g % 4), 100, 1000, 'USD', d.trade_date,
       d.trade_date + 2, 'LDN', 'bench', d.submitted,
       d.submitted + (v.version - 1) * ((g % 97) * interval '1 second'),
       CASE WHEN v.status = 'matched' THEN gen_random_uuid() END,
       CASE WHEN v.status = 'mismatched' THEN jsonb_build_array(jsonb_build_object(
           'counterparty_trade_id', 'X', 'fields', jsonb_build_array(jsonb_build_object(
               'field', CASE WHEN g % 2 = 0 THEN 'price' ELSE 'quantity' END,
               'ours', '1', 'theirs', '2', 'tolerance', '0'))))
            ELSE '[]'::jsonb END
FROM generate_series($1::int, $2::int) AS g
CROSS JOIN LATERAL (SELECT CASE WHEN g % 2 = 0 THEN 'BANKA' ELSE 'BANKB' END AS participant,
                           CASE WHEN g % 2 = 0 THEN 'BANKB' ELSE 'BANKA' END AS counterparty,
                           CASE WHEN g % 2 = 0 THEN 'sell' ELSE 'buy' END AS side) AS p
CROSS JOIN LATERAL (SELECT $3::date + (g % $4) AS trade_date,
                           ($3::date + (g % $4))::timestamptz + interval '1 second'
                               AS submitted) AS d
CROSS JOIN LATERAL (
    SELECT 1 AS version, 'unmatched' AS status, 'submitted' AS reason,
           CASE WHEN g % 10 = 0 THEN 1 ELSE 2 END AS last
    UNION ALL
    SELECT 2, CASE WHEN g % 10 IN (1, 2) THEN 'mismatched' ELSE 'matched' END,
           CASE WHEN g % 10 IN (1, 2) THEN 'mismatched' ELSE 'matched' END, 2
    WHERE g % 10 <> 0
) AS v
"""

# Every product's rules with a cut-off (the report reads only the cut-off of them),
# recorded at $1.
CUTOFF_RULES = """
INSERT INTO rules (product, version, latest, body, actor, recorded_at)
SELECT 'P' || p, 1, true, '{"cutoff": {"business_days": 1, "time": "17:00",
    "timezone": "Europe/London", "calendar": "GB"}}'::jsonb, 'bench', $1::timestamptz
FROM generate_series(0, 3) AS p
"""

FLOOR = """
SELECT count(*) FROM trade_history
WHERE trade_date BETWEEN $1 AND $2 AND recorded_at <= $3
"""


async def load(url: str, trades: int) -> None:
    conn = await asyncpg.connect(to_asyncpg_dsn(url))
    try:
        await conn.execute("INSERT INTO participants (name) VALUES ('BANKA'), ('BANKB')")
        step = 100_000
        for start in range(1, trades + 1, step):
            await conn.execute(LOAD, start, min(start + step - 1, trades), FIRST_DATE, DATES,
                               timeout=600)
        await conn.execute("ANALYZE trades")
        await conn.execute("ANALYZE trades_archive")
    finally:
        await conn.close()


async def measure(url: str, runs: int) -> None:
    pool = await database.create_pool(url, min_size=1, max_size=2)
    reports = Reports(Reads(pool))
    last = FIRST_DATE + timedelta(days=DATES - 1)
    middle = await pool.fetchval(
        "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY recorded_at) FROM trades")
    end_of_time = await pool.fetchval("SELECT clock_timestamp()")
    cases = {
        "report, ungrouped": StpQuery.of(FIRST_DATE, last, None, None, None),
        "report, by product": StpQuery.of(FIRST_DATE, last, None, "product", None),
        "report, as of mid-load": StpQuery.of(FIRST_DATE, last, None, None, middle),
        "report, one participant": StpQuery.of(FIRST_DATE, last, "BANKA", None, None),
    }
    timings: dict[str, list[float]] = {name: [] for name in [*cases, "floor: count(*)"]}
    try:
        for _ in range(runs):
            started = time.perf_counter()
            rows = await pool.fetchval(FLOOR, FIRST_DATE, last, end_of_time, timeout=60)
            timings["floor: count(*)"].append(time.perf_counter() - started)
            for name, query in cases.items():
                started = time.perf_counter()
                report = await reports.stp(query)
                timings[name].append(time.perf_counter() - started)
        print(f"versions in range: {rows:,}; last report: {report.trades:,} trades, "
              f"{report.matched:,} matched, {report.open:,} open, "
              f"{report.overdue:,} overdue")
        floor = statistics.median(timings["floor: count(*)"])
        for name, values in timings.items():
            median = statistics.median(values)
            print(f"{name:<26} median {median:6.3f} s  best {min(values):6.3f} s  "
                  f"({median / floor:4.1f}x the floor)")
    finally:
        await pool.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--cutoff", action="store_true",
                        help="measure again with a cut-off in force for every product")
    parser.add_argument("--reuse", metavar="DATABASE",
                        help="measure a database a --keep run left, without loading")
    args = parser.parse_args()
    if args.reuse:
        await measure(with_database(args.url, args.reuse), args.runs)
        return
    name = f"kevin_bench_report_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(to_asyncpg_dsn(args.url))
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = with_database(args.url, name)
    try:
        await database.migrate(url)
        started = time.perf_counter()
        await load(url, args.trades)
        print(f"loaded {args.trades:,} trades in {time.perf_counter() - started:.1f} s")
        await measure(url, args.runs)
        if args.cutoff:
            conn = await asyncpg.connect(to_asyncpg_dsn(url))
            try:
                # In force before the first trade: the as-of report reads them too.
                await conn.execute(CUTOFF_RULES, datetime(
                    FIRST_DATE.year, FIRST_DATE.month, FIRST_DATE.day, tzinfo=UTC))
            finally:
                await conn.close()
            print("with a cut-off in force for every product:")
            await measure(url, args.runs)
    finally:
        if not args.keep:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
