"""Match latency against a shallow and a deep book: 1,000 and 1,000,000 resting trades.

    PYTHONPATH=. python benchmarks/match_latency.py [--url postgresql://postgres@127.0.0.1:5432/postgres]

Creates one scratch database per depth on the server (dropped at the end unless --keep),
bulk-loads resting trades (BANKB buys from BANKA: the same product, currency, participants
and side as the counterpart of every measured trade, so the whole book shares one match
key, the worst case for the candidate query) straight into `trades` and `feed` with
generate_series (their updates already published: a book that deep is not a feed
backlog, and the in-process sequencer must not spend the measurement catching up), then
submits the matching leg (BANKA's sell at the price of one resting buy) over HTTP to an
in-process Kevin, one request at a time, in rounds that alternate between the depths (so
a noisy neighbour slows both alike), and reports p50/p99.

The book has the same price density at both depths (one trade per 0.001), so the rows
within tolerance are the same; what grows is only the depth. Matching must cost the same:
the target is p50 at 1,000,000 within 1.5x of p50 at 1,000. It also prints EXPLAIN
(ANALYZE, BUFFERS) of the candidate query at each depth.

``--profile``: one more book at the deepest depth where a matching profile of the pair
(BANKA, BANKB) for XAU is in force, with the same tolerance as the product's rules, so
every submission is decided by the profile (the answer must say so) and finds the same
match; its p50 against the deepest book without a profile, in the same interleaved
rounds (target: within 1.1x).
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

from kevin import jsoncodec
from kevin.api.app import create_app
from kevin.dburl import to_asyncpg_dsn, with_database
from kevin.domain.models import Trade
from kevin.domain.profiles import Profile
from kevin.domain.rules import Rules
from kevin.engine.service import TradeService
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
INSERT INTO feed (participant, trade_id, version, seq)
SELECT participant, trade_id, version, $1 + row_number() OVER () - 1 FROM loaded
"""


def price_of(g: int) -> Decimal:
    return BASE + g * STEP


def body(n: int, g: int) -> dict[str, Any]:
    return {"trade_id": f"A-{n}", "counterparty": "BANKB", "side": "sell", "product": "XAU",
            "quantity": "100", "price": str(price_of(g)), "currency": "USD",
            "trade_date": "2026-11-20", "settlement_date": "2026-11-24", "location": "LDN"}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def explain(conn: asyncpg.Connection, g: int) -> str:
    """EXPLAIN ANALYZE of the statement matching runs (CANDIDATES): for a trade that
    matches resting B-g, and for one that matches nothing (its quantity is off), where
    the walk for the nearest mismatches runs instead."""
    out = []
    rules = Rules.model_validate(RULES)
    for title, quantity in [("a trade that matches", 100), ("a trade that mismatches", 101)]:
        probe = Trade(trade_id="PROBE", participant="BANKA", version=1, status="unmatched",
                      reason="submitted", recorded_at=datetime.now(UTC),
                      first_submitted_at=datetime.now(UTC) + timedelta(seconds=1),
                      counterparty="BANKB", side="sell", product="XAU",
                      quantity=Decimal(quantity), price=price_of(g), currency="USD",
                      trade_date=datetime(2026, 11, 20).date(),
                      settlement_date=datetime(2026, 11, 24).date(), location="LDN")
        args = q.CANDIDATE_SEARCH.args(match_store.candidate_values(probe, rules))
        rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {q.CANDIDATES}", *args)
        out.append(f"-- CANDIDATES, {title}\n" + "\n".join(r[0] for r in rows))
    return "\n".join(out)


async def run(args: argparse.Namespace) -> None:
    admin = await asyncpg.connect(to_asyncpg_dsn(args.url))
    books = [Book(depth) for depth in args.depths]
    if args.profile:
        books.append(Book(args.depths[-1], profile=True))
    try:
        for book in books:
            await book.open(admin, args.url)
        # Flush what the bulk loads wrote, so no checkpoint lands in one book's samples.
        await admin.execute("CHECKPOINT")
        rng = random.Random(7)
        rounds = max(1, args.samples // args.round_size)
        async with aiohttp.ClientSession() as session:
            for book in books:  # warm up each connection pool and its prepared statements
                await book.measure(session, rng, args.warmup, keep=False)
            # Interleaved rounds: a noisy neighbour slows both books alike.
            for _ in range(rounds):
                for book in books:
                    await book.measure(session, rng, args.round_size)
        for book in books:
            book.plan = await explain(book.conn, book.unused(rng, 1)[0])

        print()
        print(f"{'resting trades':>16} {'samples':>8} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'mean ms':>8}")
        for book in books:
            t = book.timings
            print(f"{book.depth:>16,} {len(t):>8} {percentile(t, 50):>8.2f} "
                  f"{percentile(t, 99):>8.2f} {statistics.fmean(t):>8.2f}")
        shallow, deep = books[0], books[len(args.depths) - 1]
        ratio50 = percentile(deep.timings, 50) / percentile(shallow.timings, 50)
        ratio99 = percentile(deep.timings, 99) / percentile(shallow.timings, 99)
        verdict = "within" if ratio50 <= 1.5 else "NOT within"
        print(f"\np50 ratio {deep.depth:,} / {shallow.depth:,}: {ratio50:.2f} "
              f"({verdict} the 1.5x target); p99 ratio {ratio99:.2f}")
        if args.profile:
            profiled = books[-1]
            ratio = percentile(profiled.timings, 50) / percentile(deep.timings, 50)
            verdict = "within" if ratio <= 1.1 else "NOT within"
            print(f"p50 ratio with a pair profile in force / without, {deep.depth:,} "
                  f"resting: {ratio:.2f} ({verdict} the 1.1x target); p99 ratio "
                  f"{percentile(profiled.timings, 99) / percentile(deep.timings, 99):.2f}")
        for book in books[:len(args.depths)]:
            print(f"\nEXPLAIN (ANALYZE, BUFFERS) of the candidate queries, "
                  f"{book.depth:,} resting:")
            print(book.plan)
    finally:
        for book in books:
            await book.close(admin, keep=args.keep)
        await admin.close()


class Book:
    """A scratch database with ``depth`` resting trades and an in-process Kevin on it."""

    def __init__(self, depth: int, profile: bool = False) -> None:
        self.depth = depth
        self.profile = profile
        self.name = f"kevin_matchbench_{uuid.uuid4().hex[:8]}"
        self.timings: list[float] = []
        self.used: set[int] = set()
        self.plan = ""
        self.submitted = 0

    async def open(self, admin: asyncpg.Connection, server_url: str) -> None:
        await admin.execute(f'CREATE DATABASE "{self.name}"')
        url = with_database(server_url, self.name)
        await database.migrate(url)
        self.pool = await database.create_pool(url, min_size=2, max_size=4)
        service = TradeService(self.pool)
        self.key = (await service.create_participant("BANKA")).api_key
        await service.create_participant("BANKB")
        self.runner = web.AppRunner(create_app(service, ADMIN), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}"
        self.conn = await asyncpg.connect(to_asyncpg_dsn(url))
        # As the pool's connections: jsonb parameters (the candidate search's location
        # set) go through Kevin's JSON codec.
        await self.conn.set_type_codec("jsonb", encoder=jsoncodec.dumps_str,
                                       decoder=jsoncodec.loads, schema="pg_catalog")
        await self.conn.execute(
            "INSERT INTO rules (product, version, latest, body, actor) "
            "VALUES ('XAU', 1, true, $1, 'bench')", RULES)
        if self.profile:
            await service.agreements.put_profile("a-b-gold", Profile.model_validate({
                "participants": ["BANKA", "BANKB"], "product": "XAU",
                "fields": {"price": RULES["price_tolerance"]}}), "bench")
        started = time.perf_counter()
        await self.conn.execute(LOAD, 1, self.depth, BASE, STEP)
        await self.conn.execute("VACUUM ANALYZE trades")
        await self.conn.execute("VACUUM ANALYZE feed")
        print(f"loaded {self.depth:,} resting trades{' (profile)' if self.profile else ''} "
              f"into {self.name} in "
              f"{time.perf_counter() - started:.1f}s", flush=True)

    def unused(self, rng: random.Random, n: int) -> list[int]:
        picks: list[int] = []
        while len(picks) < n:
            g = rng.randint(1, self.depth)
            if g not in self.used:
                self.used.add(g)
                picks.append(g)
        return picks

    async def measure(self, session: aiohttp.ClientSession, rng: random.Random, n: int,
                      keep: bool = True) -> None:
        kind = "profile" if self.profile else "product"
        for g in self.unused(rng, n):
            self.submitted += 1
            started = time.perf_counter()
            async with session.post(f"{self.base}/v1/trades", json=body(self.submitted, g),
                                    headers={"Authorization": f"Bearer {self.key}"}) as resp:
                answer = await resp.json()
            elapsed = time.perf_counter() - started
            if resp.status != 201 or answer["status"] != "matched" or \
                    answer["match"]["counterparty_trade_id"] != f"B-{g}" or \
                    answer["match"]["rules"]["kind"] != kind:
                raise SystemExit(f"unexpected answer for B-{g}: {resp.status} {answer}")
            if keep:
                self.timings.append(elapsed * 1000)

    async def close(self, admin: asyncpg.Connection, keep: bool) -> None:
        if hasattr(self, "conn"):
            await self.conn.close()
            await self.runner.cleanup()
            await self.pool.close()
        if keep:
            print(f"kept database {self.name}")
        else:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get(
        "KEVIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="a PostgreSQL server URL; a scratch database is created on it")
    parser.add_argument("--depths", type=int, nargs="+", default=[1_000, 1_000_000])
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--round-size", type=int, default=50,
                        help="submissions per book per interleaved round")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--profile", action="store_true",
                        help="also measure the deepest book with a pair profile in force")
    args = parser.parse_args()
    # One access-log line per request would drown the figures.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.depths != sorted(args.depths):
        parser.error("--depths must ascend (the first is the baseline)")
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
