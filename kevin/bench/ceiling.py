"""The ceiling: a matched pair's SQL work issued straight over asyncpg.

No HTTP, no pydantic, no engine — only the statements the engine issues for a pair (the
named constants of kevin.store, so the two cannot drift apart silently; the test
tests/test_bench.py records the engine's statements for a pair and compares), one
transaction per pair, N connections. What is left between this and the service is the
cost of everything Kevin adds on top of PostgreSQL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from kevin.bench import workload as w
from kevin.store import database


@dataclass
class Tally:
    """Pairs completed in the measured window, and their latencies."""

    pairs: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0


PairWork = Callable[[asyncpg.Connection, str, int, int, int], Awaitable[None]]


def pair_statements() -> PairWork:
    """The pair's statements, as the engine issues them (see the module docstring)."""
    from kevin.bench import engine_mirror

    return engine_mirror.pair


async def run(url: str, *, concurrency: int, duration: float, warmup: float, keys: int,
              run_id: str) -> dict[str, Any]:
    """Drive ``concurrency`` connections for ``warmup + duration`` seconds; count the pairs
    that complete inside the measured window."""
    pool = await database.create_pool(url, min_size=concurrency, max_size=concurrency)
    work = pair_statements()
    tally = Tally()
    start = time.perf_counter()
    window = (start + warmup, start + warmup + duration)

    async def client(c: int) -> None:
        i = 0
        async with pool.acquire() as conn:
            while True:
                began = time.perf_counter()
                if began >= window[1]:
                    return
                try:
                    await work(conn, run_id, c, i, keys)
                except asyncpg.PostgresError:
                    tally.errors += 1
                done = time.perf_counter()
                if window[0] <= began and done <= window[1]:
                    tally.pairs += 1
                    tally.latencies.append(done - began)
                i += 1

    try:
        await asyncio.gather(*(client(c) for c in range(concurrency)))
    finally:
        await pool.close()
    return {
        "pairs": tally.pairs, "seconds": duration, "pairs_per_s": round(tally.pairs / duration, 1),
        "errors": tally.errors, "latency": w.latency_summary(tally.latencies),
        "latency_is": "the pair's transaction, BEGIN to COMMIT",
        "latencies_s": tally.latencies,  # for the runner to merge rounds; not reported
    }

