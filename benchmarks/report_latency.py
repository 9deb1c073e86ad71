"""The STP report over a million trades: how long GET /v1/reports/stp takes to answer.

    PYTHONPATH=. python benchmarks/report_latency.py [--trades 1000000] [--runs 5]
        [--url postgresql://postgres@127.0.0.1:5432/postgres] [--keep] [--cutoff]

Loads --trades trades over 20 trade dates into a scratch database
(benchmarks/scratch_book.py: two participants, four products, about 1.9 versions a
trade, 30% of the trades left open) and times the report for the admin over the whole
range: ungrouped, grouped by product and by counterparty, as of the middle of the load,
and for one participant. The target is under 2 s at 1,000,000 trades.

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

import asyncio
import statistics
import time
from datetime import UTC, datetime, timedelta

import asyncpg

from benchmarks.scratch_book import DATES, FIRST_DATE, arguments, on_scratch_book
from kevin.dburl import to_asyncpg_dsn
from kevin.domain.reports import StpQuery
from kevin.engine.reports import Reports
from kevin.store import database
from kevin.store.replica import Reads

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
        "report, by counterparty": StpQuery.of(FIRST_DATE, last, None, "counterparty", None),
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
    parser = arguments(__doc__.split("\n")[0])
    parser.add_argument("--cutoff", action="store_true",
                        help="measure again with a cut-off in force for every product")
    args = parser.parse_args()

    async def rounds(url: str) -> None:
        await measure(url, args.runs)
        if args.cutoff and not args.reuse:
            conn = await asyncpg.connect(to_asyncpg_dsn(url))
            try:
                # In force before the first trade: the as-of report reads them too.
                await conn.execute(CUTOFF_RULES, datetime(
                    FIRST_DATE.year, FIRST_DATE.month, FIRST_DATE.day, tzinfo=UTC))
            finally:
                await conn.close()
            print("with a cut-off in force for every product:")
            await measure(url, args.runs)

    await on_scratch_book(args, "report", rounds)


if __name__ == "__main__":
    asyncio.run(main())
