"""Match latency against a shallow and a deep book: 1,000 and 1,000,000 resting trades.

    PYTHONPATH=. python benchmarks/match_latency.py [--url postgresql://postgres@127.0.0.1:5432/postgres]

Creates a scratch database on the server (dropped at the end unless --keep), bulk-loads
resting trades (BANKB buys from BANKA: the same product, currency, participants and side
as the counterpart of every measured trade, so the whole book shares one match key, the
worst case for the candidate query) straight into `trades` and `feed` with
generate_series, then submits the matching leg (BANKA's sell at the price of one resting
buy) over HTTP to an in-process Kevin, one request at a time, and reports p50/p99.

The book has the same price density at both depths (one trade per 0.001), so the rows
within tolerance are the same; what grows is only the depth. Matching must cost the same:
the target is p50 at 1,000,000 within 1.5x of p50 at 1,000. It also prints EXPLAIN
(ANALYZE, BUFFERS) of the candidate query at each depth.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import asyncpg
import structlog
from aiohttp import web

from kevin.api.app import create_app
from kevin.dburl import to_asyncpg_dsn, with_database
from kevin.domain.models import Trade
from kevin.domain.rules import Rules
from kevin.engine.service import Kevin
from kevin.store import database
from kevin.store import matching as match_store
from kevin.store import matching_queries as q

ADMIN = "bench-admin"
RULES = {"price_tolerance": {"abs": "0.0025"}}  # about 5 resting trades within tolerance
STEP = Decimal("0.001")
BASE = Decimal(500)

LOAD = """
WITH loaded AS (
    INSERT INTO trades (participant, trade_id, version, latest, status, reason, counterparty,
        side, product, quantity, price, currency, trade_date, settlement_date, location,
        actor, first_submitted_at)
    SELECT 'BANKB', 'B-' || g, 1, true, 'unmatched', 'submitted', 'BANKA', 'buy', 'XAU',
        100, $3::numeric + g * $4::numeric, 'USD', DATE '2026-11-20', DATE '2026-11-24',
        'LDN', 'bench',        clock_timestamp() - interval '1 day'
    FROM generate_series($1::int, $2::int) g
    RETURNING participant, trade_id, version
)
INSERT INTO feed (participant, trade_id, version) SELECT * FROM loaded
"""


def price_of(g: int) -> Decimal:
    return BASE + g * STEP


def body(n: int, g: int) -> dict[str, Any]:
    return {"trade_id": f"A-{n}", "counterparty": "BANKB", "side": "sell", "product": "XAU",
            "quantity": "100", "price": str(price_of(g)), "currency": "USD",
            "trade_date": "2026-11-20", "settlement_date": "2026-11-24", "location": "LDN"}


async def measure(session: aiohttp.ClientSession, url: str, key: str, picks: list[int],
                  first: int, warmup: int) -> list[float]:
    timings = []
    for n, g in enumerate(picks, start=first):
        started = time.perf_counter()
        async with session.post(f"{url}/v1/trades", json=body(n, g),
                                headers={"Authorization": f"Bearer {key}"}) as resp:
            answer = await resp.json()
        elapsed = time.perf_counter() - started
        if resp.status != 201 or answer["status"] != "matched" or \
                answer["match"]["counterparty_trade_id"] != f"B-{g}":
            raise SystemExit(f"unexpected answer for B-{g}: {resp.status} {answer}")
        if n - first >= warmup:
            timings.append(elapsed * 1000)
    return timings


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def explain(conn: asyncpg.Connection, g: int) -> str:
    probe = Trade(trade_id="PROBE", participant="BANKA", version=1, status="unmatched",
                  reason="submitted", recorded_at=datetime.now(UTC),
                  first_submitted_at=datetime.now(UTC) + timedelta(seconds=1),
                  counterparty="BANKB", side="sell", product="XAU", quantity=Decimal(100),
                  price=price_of(g), currency="USD",
                  trade_date=datetime(2026, 11, 20).date(),
                  settlement_date=datetime(2026, 11, 24).date(), location="LDN")
    rules = Rules.model_validate(RULES)
    args = [*match_store._key_args(probe, match_store.MATCH_PER_SIDE),
            *match_store._within_args(probe, rules)]
    out = []
    for title, sql, params in [("within tolerance (MATCH_CANDIDATES)", q.MATCH_CANDIDATES, args),
                               ("nearest, for mismatches (NEAREST_CANDIDATES)",
                                q.NEAREST_CANDIDATES, args[:11])]:
        rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}", *params)
        out.append(f"-- {title}\n" + "\n".join(r[0] for r in rows))
    return "\n".join(out)


async def run(args: argparse.Namespace) -> None:
    name = f"kevin_matchbench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(to_asyncpg_dsn(args.url))
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = with_database(args.url, name)
    try:
        await database.migrate(url)
        pool = await database.create_pool(url, min_size=2, max_size=4)
        service = Kevin(pool)
        key = await service.create_participant("BANKA")
        await service.create_participant("BANKB")
        runner = web.AppRunner(create_app(service, ADMIN), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        base = f"http://127.0.0.1:{port}"
        conn = await asyncpg.connect(to_asyncpg_dsn(url))
        rng = random.Random(7)
        results: dict[int, list[float]] = {}
        plans: dict[int, str] = {}
        loaded = 0
        async with aiohttp.ClientSession() as session:
            async with session.put(f"{base}/v1/rules/XAU", json=RULES,
                                   headers={"Authorization": f"Bearer {ADMIN}"}) as resp:
                assert resp.status == 200, await resp.text()
            used: set[int] = set()
            for depth in args.depths:
                started = time.perf_counter()
                await conn.execute(LOAD, loaded + 1, depth, BASE, STEP)
                await conn.execute("VACUUM ANALYZE trades")
                await conn.execute("VACUUM ANALYZE feed")
                print(f"loaded {depth - loaded:,} resting trades in "
                      f"{time.perf_counter() - started:.1f}s (book depth {depth:,})", flush=True)
                loaded = depth
                picks: list[int] = []
                while len(picks) < args.samples + args.warmup:
                    g = rng.randint(1, depth)
                    if g not in used:
                        used.add(g)
                        picks.append(g)
                plans[depth] = await explain(conn, picks[-1])
                results[depth] = await measure(session, base, key, picks,
                                               first=len(used) * 10, warmup=args.warmup)
        await conn.close()
        await runner.cleanup()
        await pool.close()

        print()
        print(f"{'resting trades':>16} {'samples':>8} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'mean ms':>8}")
        for depth, timings in results.items():
            print(f"{depth:>16,} {len(timings):>8} {percentile(timings, 50):>8.2f} "
                  f"{percentile(timings, 99):>8.2f} {statistics.fmean(timings):>8.2f}")
        shallow, deep = (results[d] for d in (args.depths[0], args.depths[-1]))
        ratio50 = percentile(deep, 50) / percentile(shallow, 50)
        ratio99 = percentile(deep, 99) / percentile(shallow, 99)
        verdict = "within" if ratio50 <= 1.5 else "NOT within"
        print(f"\np50 ratio {args.depths[-1]:,} / {args.depths[0]:,}: {ratio50:.2f} "
              f"({verdict} the 1.5x target); p99 ratio {ratio99:.2f}")
        for depth, plan in plans.items():
            print(f"\nEXPLAIN (ANALYZE, BUFFERS) of the candidate query, {depth:,} resting:")
            print(plan)
    finally:
        if not args.keep:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            print(f"kept database {name}")
        await admin.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get(
        "KEVIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="a PostgreSQL server URL; a scratch database is created on it")
    parser.add_argument("--depths", type=int, nargs="+", default=[1_000, 1_000_000])
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()
    # One access-log line per request would drown the figures.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.depths != sorted(args.depths):
        parser.error("--depths must ascend (the book only grows)")
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
