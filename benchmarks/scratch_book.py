"""A large book in a scratch database, for the benchmarks that read one
(benchmarks/report_latency.py, benchmarks/overdue_tab.py).

`load` writes --trades trades over DATES trade dates from FIRST_DATE straight into
`trades` with generate_series: two participants (BANKA sells, BANKB buys), four products
(P0 to P3); per trade a submitted version, then for 70% a matched version, 20% a
mismatched one naming the price or the quantity, 10% nothing more: about 1.9 versions a
trade, 30% of the trades left open. Then it analyzes.

`arguments` and `on_scratch_book` are the command line both share: a fresh database
named kevin_bench_<name>_<random>, migrated and loaded, measured, and dropped unless
--keep; --reuse DATABASE measures one that --keep left, without loading.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import date

import asyncpg

from kevin.dburl import to_asyncpg_dsn, with_database
from kevin.store import database

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


def arguments(description: str) -> argparse.ArgumentParser:
    """The options every benchmark on a scratch book takes; add your own before parsing."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--reuse", metavar="DATABASE",
                        help="measure a database a --keep run left, without loading")
    return parser


async def on_scratch_book(args: argparse.Namespace, name: str,
                          measure: Callable[[str], Awaitable[None]]) -> None:
    """`measure(url)` on a fresh scratch book of args.trades trades (or on --reuse's),
    the database dropped afterwards, whatever happens, unless --keep."""
    if args.reuse:
        await measure(with_database(args.url, args.reuse))
        return
    scratch = f"kevin_bench_{name}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(to_asyncpg_dsn(args.url))
    await admin.execute(f'CREATE DATABASE "{scratch}"')
    url = with_database(args.url, scratch)
    try:
        await database.migrate(url)
        started = time.perf_counter()
        await load(url, args.trades)
        print(f"loaded {args.trades:,} trades in {time.perf_counter() - started:.1f} s")
        await measure(url)
    finally:
        if args.keep:
            print(f"kept: --reuse {scratch}")
        else:
            await admin.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
        await admin.close()
