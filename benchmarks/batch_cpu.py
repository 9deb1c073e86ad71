"""Where a bulk batch's time goes, in-process: per batch, the Python CPU of reading the
lines, the engine, writing the answer and freeing what the request built, the CPU of the
PostgreSQL backend that ran it (from /proc, Linux), the wall time, and the statements'
times (asyncpg's query logger).

    PYTHONPATH=. python benchmarks/batch_cpu.py [--url postgresql://postgres@127.0.0.1:5432/postgres]
        [--lines 10000] [--requests 6] [--timeline]

With ``--timeline``, also when the batch's connection had a statement in flight: the
share of the engine's wall time it did, the longest stretches it sat idle (the engine's
Python working with PostgreSQL waiting) and the statements in order — what a change that
overlaps the two must shorten.

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


def timeline(statements: list[tuple[float, float, str]], began: float,
             ended: float) -> list[str]:
    """``statements`` (start, end, text; perf_counter) of one batch's engine, which ran
    from ``began`` to ``ended``, as lines to print: the share with a statement in flight,
    the longest idle stretches, the statements (ms from ``began``)."""
    in_flight, last, idle = 0.0, began, []
    for start, end, text in sorted(statements):
        if start > last:
            idle.append((start - last, last - began, text))
        in_flight += max(0.0, end - max(start, last))
        last = max(last, end)
    if ended > last:
        idle.append((ended - last, last - began, "(the engine returns)"))
    ms = round
    return [
        f"    in flight {in_flight:.3f} s of the engine's {ended - began:.3f} s; "
        f"{len(statements)} statements",
        "    idle the longest (ms, at ms, before): " + "; ".join(
            f"{ms(gap * 1000)} at {ms(at * 1000)} before {text[:24]}"
            for gap, at, text in sorted(idle, reverse=True)[:6]),
        "    statements (at ms, took ms): " + ", ".join(
            f"{text[:12]} {ms((start - began) * 1000)}+{ms((end - start) * 1000)}"
            for start, end, text in sorted(statements)),
    ]


async def main(url: str, lines: int, requests: int, show_timeline: bool = False) -> None:
    run_id = secrets.token_hex(3)
    async with scratch_database(url, "cpu") as scratch:
        await create_participants(scratch)
        pool = await database.create_pool(scratch, min_size=1, max_size=1,
                                          command_timeout=600)
        elapsed: defaultdict[str, float] = defaultdict(float)
        intervals: list[tuple[float, float, str]] = []

        def log(query: asyncpg.connection.LoggedQuery) -> None:
            text = " ".join(query.query.split())[:60]
            elapsed[text] += query.elapsed
            ended = time.perf_counter()  # the logger runs as the statement completes
            intervals.append((ended - query.elapsed, ended, text))

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
                    read, engine_began = time.process_time(), time.perf_counter()
                    intervals.clear()
                    outcomes = await service.submit_batch(
                        me, [s for s in parsed if isinstance(s, TradeSubmission)])
                    decided, engine_ended = time.process_time(), time.perf_counter()
                    engine_statements = list(intervals)
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
                if show_timeline:
                    print("\n".join(timeline(engine_statements, engine_began, engine_ended)),
                          flush=True)
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
    parser.add_argument("--timeline", action="store_true",
                        help="when the connection had a statement in flight, and not")
    args = parser.parse_args()
    tune_garbage_collector()
    run: Callable[..., Any]
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    run(main(args.url, args.lines, args.requests, args.timeline))
