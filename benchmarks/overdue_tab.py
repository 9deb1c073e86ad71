"""The workbench's overdue tab over a large book: how long the exceptions page's read takes.

    PYTHONPATH=. python benchmarks/overdue_tab.py [--trades 1000000] [--runs 5]
        [--url postgresql://postgres@127.0.0.1:5432/postgres]

Loads a scratch database as benchmarks/report_latency.py does (benchmarks/scratch_book.py:
two participants, 20 trade dates, about 30% of the trades left open: unmatched or
mismatched), gives each
product a cut-off (T+0 17:00 UTC), and times, for BANKA, at two instants — when only the
first trade date's cut-off has passed (few overdue) and when every one has (all open
trades overdue):

- the workbench's overdue tab (``Workbench.exceptions``: its 500 rows and every tab's
  count), against the mismatched tab's read in the same rounds;
- the JSON API's ``GET /v1/trades?overdue=true&limit=500`` (``TradeService.list``),
  which reads on through the book until its page is full.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg

from benchmarks.scratch_book import DATES, FIRST_DATE, arguments, on_scratch_book
from kevin.domain.queries import PageQuery
from kevin.engine.service import Page, TradeService
from kevin.engine.workbench import Exceptions, ExceptionsQuery, Workbench
from kevin.store import database

RULES = {"cutoff": {"business_days": 0, "time": "17:00", "timezone": "UTC", "calendar": "GB"}}
PUT_RULES = """
INSERT INTO rules (product, version, latest, body, actor)
SELECT 'P' || p, 1, true, $1::jsonb, 'bench' FROM generate_series(0, 3) AS p
"""


async def timed(call: Callable[[], Awaitable[object]], runs: int) -> tuple[float, object]:
    values, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = await call()
        values.append(time.perf_counter() - started)
    return statistics.median(values), result


async def measure_at(pool: asyncpg.Pool, label: str, instant: datetime, runs: int) -> None:
    service = TradeService(pool, clock=lambda: instant)
    workbench = Workbench(pool, None, clock=lambda: instant)
    overdue_tab, found = await timed(lambda: workbench.exceptions(
        ExceptionsQuery(tab="overdue", participant="BANKA")), runs)
    mismatched_tab, _ = await timed(lambda: workbench.exceptions(
        ExceptionsQuery(tab="mismatched", participant="BANKA")), runs)
    api_page, page = await timed(lambda: service.list(
        PageQuery("BANKA", limit=500), overdue=True), runs)
    assert isinstance(found, Exceptions) and isinstance(page, Page)
    print(f"{label}: overdue tab {overdue_tab * 1000:7.1f} ms ({len(found.trades)} rows, "
          f"count {found.counts['overdue']}) | mismatched tab {mismatched_tab * 1000:7.1f} ms"
          f" | GET /v1/trades?overdue=true {api_page * 1000:7.1f} ms "
          f"({len(page.trades)} rows)")


async def measure(url: str, runs: int) -> None:
    pool = await database.create_pool(url, min_size=1, max_size=2)
    try:
        if await pool.fetchval("SELECT count(*) FROM rules") == 0:
            await pool.execute(PUT_RULES, RULES)
            await pool.execute("ANALYZE rules")
        midnight = datetime.min.time()
        await measure_at(pool, "first day overdue",
                         datetime.combine(FIRST_DATE, midnight, UTC) + timedelta(hours=18),
                         runs)
        await measure_at(pool, "all overdue",
                         datetime.combine(FIRST_DATE + timedelta(days=DATES), midnight, UTC),
                         runs)
    finally:
        await pool.close()


async def main() -> None:
    args = arguments(__doc__.split("\n")[0]).parse_args()
    await on_scratch_book(args, "overdue", lambda url: measure(url, args.runs))


if __name__ == "__main__":
    asyncio.run(main())
