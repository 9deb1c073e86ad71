"""How long building a day's book through the batch path takes, and a replay over it:
dry run and apply.

    python -m benchmarks.replay_latency [--server-url URL] [--trades 10000 [100000 ...]]
    python -m benchmarks.replay_latency --trades 10000 --keep      # keeps the book built
    python -m benchmarks.replay_latency --reuse kevin_bench_replay_1234abcd [--runs 5]

For each size, builds a throwaway database (KEVIN_BENCH_DATABASE_URL, else the local
test server), submits ``trades`` XAU trades through the service's bulk path (batches of
1,000) — half BANKA's sells, half BANKB's buys at prices spread so that exact matching
pairs about a third of them and mismatches the rest — then times a dry-run replay from
before the first trade under a 0.50 price tolerance, the apply of the same replay, and a
second dry run (which must find nothing left to change). Each database is dropped at the
end; with ``--keep`` it is kept as built (no apply) and named, and ``--reuse NAME`` then
times ``--runs`` dry runs over it without building anything (drop it yourself after).
With several sizes, the last line compares the dry runs' times with the first size's: a
replay that stays linear takes size/first times as long. The process runs as `kevin
serve` does: its garbage collector tuned the same way (kevin.cli), the busy tables
analyzed once they hold a few thousand rows (kevin.store.analyze).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import time
import uuid
from datetime import datetime
from decimal import Decimal

import asyncpg
import structlog

from kevin.cli import tune_garbage_collector
from kevin.dburl import to_asyncpg_dsn, with_database
from kevin.domain.models import TradeSubmission
from kevin.domain.rules import Rules
from kevin.engine.replay import Replayer
from kevin.engine.service import TradeService
from kevin.store import analyze, database

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
BATCH = 1000


def _line(trade_id: str, side: str, counterparty: str, price: Decimal) -> TradeSubmission:
    return TradeSubmission.model_validate({
        "trade_id": trade_id, "counterparty": counterparty, "side": side, "product": "XAU",
        "quantity": "100", "price": str(price), "currency": "USD",
        "trade_date": "2026-11-20", "settlement_date": "2026-11-24", "location": "LDN"})


async def main(server_url: str, sizes: list[int], keep: bool) -> None:
    dry_runs: dict[int, float] = {}
    for trades in sizes:
        dry_runs[trades] = await one_size(server_url, trades, keep)
    first = sizes[0]
    for trades in sizes[1:]:
        print(f"dry run of {trades:,} trades: {dry_runs[trades] / dry_runs[first]:.1f} x the "
              f"time of {first:,} ({trades / first:.0f} x the trades)")


LOOSE = {"XAU": Rules.model_validate({"price_tolerance": {"abs": "0.50"}})}


async def one_size(server_url: str, trades: int, keep: bool) -> float:
    name = f"kevin_bench_replay_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(to_asyncpg_dsn(server_url))
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = with_database(server_url, name)
    try:
        await database.migrate(url)
        pool = await database.create_pool(url, min_size=1, max_size=4, command_timeout=600)
        try:
            since = await build(pool, trades)
            if keep:
                print(f"  kept: --reuse {name}")
                return await timed(Replayer(pool), since, trades, "dry run", apply=False)
            replayer = Replayer(pool)
            dry_run = await timed(replayer, since, trades, "dry run", apply=False)
            await timed(replayer, since, trades, "apply", apply=True)
            await timed(replayer, since, trades, "dry run again", apply=False)
            return dry_run
        finally:
            await pool.close()
    finally:
        if not keep:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def build(pool: asyncpg.Pool, trades: int) -> datetime:
    """The day's book, built through the batch path; returns an instant before it."""
    service = TradeService(pool)
    for participant in ("BANKA", "BANKB"):
        await service.create_participant(participant)
    async with pool.acquire() as conn:
        since: datetime = await conn.fetchval("SELECT clock_timestamp()")
    rng = random.Random(7)
    started, cpu = time.perf_counter(), time.process_time()
    for side, participant, counterparty in (("sell", "BANKA", "BANKB"),
                                            ("buy", "BANKB", "BANKA")):
        lines = [_line(f"{participant[-1]}-{i}", side, counterparty,
                       Decimal(1000) + Decimal(rng.randrange(0, 300)) / 100)
                 for i in range(trades // 2)]
        for at in range(0, len(lines), BATCH):
            await service.submit_batch(participant, lines[at:at + BATCH])
            async with pool.acquire() as conn:  # the server's statistics task
                await analyze.analyze_young_tables(conn)
    async with pool.acquire() as conn:
        versions = await conn.fetchval("SELECT count(*) FROM trade_history")
        matched = await conn.fetchval(
            "SELECT count(*) FROM trades WHERE latest AND status = 'matched'")
    built, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(f"PostgreSQL {await _version(pool)}; {trades:,} XAU trades "
          f"({versions:,} versions, {matched:,} matched exactly) "
          f"built through POST /v1/trades/batch's path in {built:.1f} s "
          f"({trades / built:,.0f} trades/s; this process's CPU {cpu:.1f} s)")
    return since


async def timed(replayer: Replayer, since: datetime, trades: int, label: str, *,
                apply: bool) -> float:
    started, cpu = time.perf_counter(), time.process_time()
    result = await replayer.replay(since, LOOSE, apply=apply, actor="bench")
    took, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(f"  {label:13}: {took:6.2f} s, {len(result.changes):,} changes "
          f"({trades / took:,.0f} trades replayed/s; this process's CPU "
          f"{cpu:.2f} s)")
    return took


async def reuse(server_url: str, name: str, runs: int) -> None:
    """Dry runs over a book kept by ``--keep`` (its replay records aside, unchanged)."""
    pool = await database.create_pool(with_database(server_url, name), min_size=1,
                                      max_size=4, command_timeout=600)
    try:
        async with pool.acquire() as conn:
            trades = await conn.fetchval("SELECT count(*) FROM trades WHERE version = 1")
            # Just before the first version: every trade is replayed.
            since = await conn.fetchval("SELECT min(recorded_at) - interval '1 millisecond'"
                                        " FROM trade_history")
        print(f"{name}: {trades:,} trades")
        for _ in range(runs):
            await timed(Replayer(pool), since, trades, "dry run", apply=False)
    finally:
        await pool.close()


async def _version(pool: asyncpg.Pool) -> str:
    async with pool.acquire() as conn:
        return await conn.fetchval("SHOW server_version")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server-url", default=os.environ.get("KEVIN_BENCH_DATABASE_URL",
                                                               DEFAULT_SERVER))
    parser.add_argument("--trades", type=int, nargs="+", default=[10_000])
    parser.add_argument("--keep", action="store_true",
                        help="keep each database as built (no apply) and name it")
    parser.add_argument("--reuse", metavar="NAME",
                        help="only time dry runs over a database kept with --keep")
    parser.add_argument("--runs", type=int, default=3, help="dry runs with --reuse")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    tune_garbage_collector()
    if args.reuse:
        asyncio.run(reuse(args.server_url, args.reuse, args.runs))
    else:
        asyncio.run(main(args.server_url, args.trades, args.keep))
