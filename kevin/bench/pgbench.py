"""The minimal ceiling: pgbench running pgbench_pair.sql, the least SQL a matched pair
needs on Kevin's tables (see the script). Unlike the asyncpg ceiling (kevin.bench.ceiling),
which issues the engine's own statements, it does not move when Kevin's SQL changes, so
the service's ratio to it says how close Kevin comes to what the job costs at all."""

from __future__ import annotations

import asyncio
import math
import re
import shutil
from pathlib import Path
from typing import Any

from kevin.bench.children import spawn
from kevin.dburl import to_asyncpg_dsn

SCRIPT = Path(__file__).with_name("pgbench_pair.sql")

_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)
_DONE = re.compile(r"^number of transactions actually processed: (\d+)", re.MULTILINE)
_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.MULTILINE)
_LATENCY = re.compile(r"^latency average = ([0-9.]+) ms", re.MULTILINE)


class PgbenchFailed(Exception):
    pass


def pgbench() -> str | None:
    """pgbench's path (it ships with PostgreSQL), or None when it is not on PATH."""
    return shutil.which("pgbench")


async def run(url: str, concurrency: int, duration: float) -> dict[str, Any]:
    """One slice: ``concurrency`` clients for ``duration`` seconds (whole seconds, as
    pgbench counts them) on the database at ``url``; pairs, pairs/s and mean latency."""
    command = pgbench()
    if command is None:
        raise PgbenchFailed("pgbench is not on PATH")
    seconds = max(1, math.ceil(duration))
    process = await spawn(
        command, "--no-vacuum", "--client", str(concurrency), "--jobs", str(concurrency),
        "--time", str(seconds), "--file", str(SCRIPT), to_asyncpg_dsn(url),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    text = out.decode()
    tps, done = _TPS.search(text), _DONE.search(text)
    if process.returncode != 0 or tps is None or done is None:
        raise PgbenchFailed(f"pgbench failed ({process.returncode}): "
                            f"{(err.decode() or text).strip()[-500:]}")
    failed, latency = _FAILED.search(text), _LATENCY.search(text)
    return {"pairs": int(done.group(1)), "seconds": seconds,
            "pairs_per_s": round(float(tps.group(1)), 1),
            "errors": int(failed.group(1)) if failed else 0,
            "latency_average_ms": float(latency.group(1)) if latency else None}


def merged(slices: list[dict[str, Any]]) -> dict[str, Any]:
    pairs, seconds = sum(s["pairs"] for s in slices), sum(s["seconds"] for s in slices)
    return {"pairs": pairs, "seconds": seconds,
            "pairs_per_s": round(pairs / seconds, 1) if seconds else 0.0,
            "errors": sum(s["errors"] for s in slices), "script": str(SCRIPT.name)}
