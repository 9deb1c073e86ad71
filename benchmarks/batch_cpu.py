"""Where a bulk batch's time goes, in-process: per batch, the Python CPU of reading the
lines, the engine, writing the answer and freeing what the request built, the CPU of the
PostgreSQL backend that ran it (from /proc, Linux), the wall time, and the statements'
times (asyncpg's query logger).

    PYTHONPATH=. python benchmarks/batch_cpu.py [--url postgresql://postgres@127.0.0.1:5432/postgres]
        [--lines 10000] [--requests 6]

The batches are `kevin bench batch`'s (BANKA's sells, then BANKB's buys that match them
line for line), submitted on one pooled connection of a scratch database (dropped at the
end), with the garbage collector tuned as `kevin serve` tunes it. CPU is steadier than
wall time on a shared machine: the figures to compare between two checkouts (run one,
then the other, then the first again).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import secrets
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import asyncpg
import orjson

from kevin import heap
from kevin.api.batch import parse_line, results_body
from kevin.bench import batch as b
from kevin.bench import workload as w
from kevin.bench.runner import create_participants, scratch_database
from kevin.cli import tune_garbage_collector
from kevin.domain.models import TradeSubmission
from kevin.engine.service import TradeService
from kevin.store import database


def backend_cpu(pid: int) -> float:
    stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()  # noqa: PTH123, SIM115
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


async def main(url: str, lines: int, requests: int) -> None:
    run_id = secrets.token_hex(3)
    async with scratch_database(url, "cpu") as scratch:
        await create_participants(scratch)
        pool = await database.create_pool(scratch, min_size=1, max_size=1,
                                          command_timeout=600)
        elapsed: defaultdict[str, float] = defaultdict(float)

        def log(query: asyncpg.connection.LoggedQuery) -> None:
            elapsed[" ".join(query.query.split())[:60]] += query.elapsed

        async with pool.acquire() as conn:  # the pool's only connection
            conn.add_query_logger(log)
            backend = await conn.fetchval("SELECT pg_backend_pid()")
        service = TradeService(pool)
        totals: defaultdict[str, float] = defaultdict(float)
        try:
            for index, side in b._plan(lines, requests):
                me = w.SELLER if side == "sell" else w.BUYER
                body = b"\n".join(orjson.dumps(line)
                                  for line in b.batch_lines(run_id, index, lines, side))
                began, cpu, pg = time.perf_counter(), time.process_time(), backend_cpu(backend)
                # As the batch route does: the collector paused until the request's
                # objects are freed; ``free`` is freeing them and its first pass after.
                with heap.collector_paused():
                    parsed = [parse_line(raw, me) for raw in body.split(b"\n")]
                    read = time.process_time()
                    outcomes = await service.submit_batch(
                        me, [s for s in parsed if isinstance(s, TradeSubmission)])
                    decided = time.process_time()
                    results_body(
                        [{"line": n, "result": None, "trade": None, "error": None}
                         for n in range(1, len(outcomes) + 1)], list(range(len(outcomes))),
                        outcomes)
                    answered = time.process_time()
                    del parsed, outcomes
                gc.collect(0)
                figures = {"read": read - cpu, "engine": decided - read,
                           "answer": answered - decided,
                           "free": time.process_time() - answered,
                           "postgresql": backend_cpu(backend) - pg,
                           "wall": time.perf_counter() - began}
                for name, value in figures.items():
                    totals[f"{side} {name}"] += value
                statements = "; ".join(f"{text[:28]}… {seconds:.2f} s"
                                       for text, seconds in sorted(
                                           elapsed.items(), key=lambda kv: -kv[1])[:3])
                elapsed.clear()
                print(f"{side} {index}: " + ", ".join(f"{k} {v:.3f} s"
                                                     for k, v in figures.items()), flush=True)
                print(f"    {statements}", flush=True)
        finally:
            await pool.close()
    for side in ("sell", "buy"):
        print(f"{side}s: " + ", ".join(f"{k.split()[1]} {v:.2f} s" for k, v in totals.items()
                                        if k.startswith(side)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get(
        "KEVIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=6)
    args = parser.parse_args()
    tune_garbage_collector()
    run: Callable[..., Any]
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    run(main(args.url, args.lines, args.requests))
