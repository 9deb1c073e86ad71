"""As-of and history latency for one trade with 1,000,000 rows in the table, hot and
archived.

    python -m benchmarks.history_latency [--server-url URL] [--rows 1000000]
        [--versions 10] [--repeat 2000]

Builds a throwaway database on the server (KEVIN_BENCH_DATABASE_URL, else the local test
server), migrated to head, and bulk-loads ``rows`` trade versions: rows/versions trades of
``versions`` versions each, the last one latest. Then it times, for one trade in the middle
of the key range, the two history reads exactly as the API runs them
(kevin.store.trades.as_of and .versions, over the trade_history view):

1. hot: every version in `trades`;
2. archived: after `kevin archive` (kevin.engine.archive) moved every non-latest version
   into `trades_archive` — which it also times.

``--versions 1000000`` makes it one trade with a million versions (the degenerate
reading): as-of is then timed across the whole history; /versions is not (it returns
every version in one answer).

Each figure is the latency of one call on a warm pooled connection, over ``repeat`` calls
with as-of instants drawn across the trade's whole life (exact version boundaries,
between versions, and before it existed). The EXPLAIN of the as-of query is printed for
both cases to show the primary-key index at work. The database is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import asyncpg
import structlog

from kevin.dburl import to_asyncpg_dsn, with_database
from kevin.engine.archive import archive
from kevin.store import database
from kevin.store import queries as q
from kevin.store import trades as store

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"

# Rows are written straight into trades with INSERT ... SELECT (the trigger allows
# inserts): the benchmark is about reading a big table, not about building one.
# Trade i has versions 1..V, recorded one minute apart; the last is latest.
LOAD = """
INSERT INTO trades (
    participant, trade_id, version, latest, status, reason, counterparty, side, product,
    quantity, price, currency, trade_date, settlement_date, location, attributes,
    mismatches, actor, first_submitted_at, recorded_at)
SELECT CASE WHEN i % 2 = 0 THEN 'BANKA' ELSE 'BANKB' END,
       'T-' || lpad(i::text, 8, '0'), v, v = $2,
       'unmatched',
       CASE WHEN v = 1 THEN 'submitted' ELSE 'amended' END,
       CASE WHEN i % 2 = 0 THEN 'BANKB' ELSE 'BANKA' END,
       CASE WHEN i % 2 = 0 THEN 'sell' ELSE 'buy' END,
       'XAU', 100, 1000 + v + (i % 1000) / 100.0, 'USD', date '2026-11-20',
       date '2026-11-24', 'LDN', '{}'::jsonb, '[]'::jsonb, 'bench',
       $3::timestamptz + i * interval '1 ms',
       $3::timestamptz + i * interval '1 ms' + (v - 1) * interval '1 minute'
FROM generate_series(0, $1 - 1) AS i, generate_series(1, $2) AS v
"""

# /versions is one unpaginated answer: past this many, timing it measures JSON, not SQL.
MAX_VERSIONS_READ = 100_000
# Loading and vacuuming a million rows may outlast the pool's per-statement timeout.
LONG = 1800.0

START = datetime.fromisoformat("2026-01-01T00:00:00+00:00")


def summary(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    pick = lambda p: ms[min(len(ms) - 1, int(p * len(ms)))]  # noqa: E731
    return (f"p50 {statistics.median(ms):7.3f} ms   p95 {pick(0.95):7.3f} ms   "
            f"p99 {pick(0.99):7.3f} ms   max {ms[-1]:7.3f} ms   (n={len(ms)})")


async def timed(call: Callable[[], Awaitable[object]], repeat: int) -> list[float]:
    for _ in range(min(50, repeat)):  # warm the plan cache and the buffers
        await call()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return samples


async def measure(conn: asyncpg.Connection, participant: str, trade_id: str,
                  instants: list[datetime], versions: int, repeat: int, label: str) -> None:
    last = await store.as_of(conn, participant, trade_id, max(instants))
    assert last is not None and last.version == versions, "as-of is wrong"
    it = itertools.cycle(instants)

    async def one_as_of() -> object:
        return await store.as_of(conn, participant, trade_id, next(it))

    as_of = await timed(one_as_of, repeat)
    print(f"  as_of    ({label}): {summary(as_of)}")
    if versions <= MAX_VERSIONS_READ:
        history = await store.versions(conn, participant, trade_id)
        assert [t.version for t in history] == list(range(1, versions + 1)), "history is wrong"
        hist = await timed(lambda: store.versions(conn, participant, trade_id), repeat)
        print(f"  versions ({label}): {summary(hist)}")
    else:
        print(f"  versions ({label}): not timed — /versions returns all {versions:,} at once")
    plan = await conn.fetch("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) "
                            + q.SELECT_AS_OF, participant, trade_id, instants[len(instants) // 2])
    print(f"  EXPLAIN ANALYZE as_of ({label}):")
    for row in plan:
        print("    " + row[0])


async def main(server_url: str, rows: int, versions: int, repeat: int) -> None:
    trades = rows // versions
    name = f"kevin_bench_history_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(to_asyncpg_dsn(server_url))
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = with_database(server_url, name)
    try:
        await database.migrate(url)
        pool = await database.create_pool(url, min_size=1, max_size=2)
        try:
            async with pool.acquire() as conn:
                server = await conn.fetchval("SHOW server_version")
                print(f"PostgreSQL {server}; {trades:,} trades x {versions} versions = "
                      f"{trades * versions:,} rows in trades")
                started = time.perf_counter()
                await conn.execute(LOAD, trades, versions, START, timeout=LONG)
                await conn.execute("VACUUM ANALYZE trades", timeout=LONG)
                print(f"  loaded in {time.perf_counter() - started:.1f} s")
                assert await conn.fetchval("SELECT count(*) FROM trades") == trades * versions

                i = trades // 2
                participant, trade_id = ("BANKA" if i % 2 == 0 else "BANKB"), f"T-{i:08d}"
                first = START + timedelta(milliseconds=i)
                minute = timedelta(minutes=1)
                # Exact version boundaries and instants between versions (at most 1,000
                # versions of a long history, spread over all of it).
                picked = range(0, versions, max(1, versions // 1000))
                instants = [first + v * minute for v in picked]
                instants += [first + v * minute + timedelta(seconds=30) for v in picked]
                instants.append(first + (versions - 1) * minute)
                instants += [first - timedelta(microseconds=1)]  # before it existed: None
                random.Random(7).shuffle(instants)
                print(f"one trade: {participant}/{trade_id}")
                await measure(conn, participant, trade_id, instants, versions, repeat, "hot")

                # After every version (synthetic instants): every non-latest one moves.
                cutoff = START + timedelta(milliseconds=trades, minutes=versions, days=1)
                started = time.perf_counter()
                report = await archive(pool, cutoff)
                took = time.perf_counter() - started
                print(f"kevin archive: moved {report.moved:,} versions in {report.batches} "
                      f"batches, {took:.1f} s ({report.moved / took:,.0f} versions/s)")
                await conn.execute("VACUUM ANALYZE trades", timeout=LONG)
                await conn.execute("VACUUM ANALYZE trades_archive", timeout=LONG)
                hot = await conn.fetchval("SELECT count(*) FROM trades")
                cold = await conn.fetchval("SELECT count(*) FROM trades_archive")
                print(f"  trades {hot:,} rows, trades_archive {cold:,} rows")
                await measure(conn, participant, trade_id, instants, versions, repeat,
                              "archived")
        finally:
            await pool.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server-url", default=os.environ.get("KEVIN_BENCH_DATABASE_URL",
                                                               DEFAULT_SERVER))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--versions", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()
    # Quiet the per-batch progress log of the archiver; the figures are what we print.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    asyncio.run(main(args.server_url, args.rows, args.versions, args.repeat))
    sys.exit(0)
