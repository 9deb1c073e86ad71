"""Server memory after 1,000,000 trades: a real `kevin serve` takes them through
POST /v1/trades/batch (half sells that rest, half buys that match them), and its resident
set size is read from /proc before, during and after.

    PYTHONPATH=. python benchmarks/server_memory.py [--url postgresql://postgres@127.0.0.1:5432/postgres]
        [--trades 1000000] [--lines 10000]

Creates a scratch database on the server and drops it at the end. The figure to watch is
RSS after the last batch (and VmHWM, the peak): the server keeps no per-trade state, so it
should stay flat however many trades went through. Target: <= 250 MB. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

from kevin.bench import workload as w
from kevin.bench.batch import batch_lines
from kevin.bench.runner import ServeProcess, create_participants, scratch_database

SETTLE = 2.0


def memory(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    return fields


async def run(args: argparse.Namespace) -> None:
    run_id = secrets.token_hex(3)
    async with scratch_database(args.url, "memory") as url:
        keys = await create_participants(url)
        with tempfile.TemporaryDirectory() as tmp:
            async with ServeProcess(url, secrets.token_urlsafe(8), Path(tmp) / "s.log") as s:
                assert s.process is not None
                pid = s.process.pid
                print(f"after start: {memory(pid)} MiB", flush=True)
                batches = args.trades // args.lines // 2
                started = time.perf_counter()
                timeout = aiohttp.ClientTimeout(total=600)
                async with aiohttp.ClientSession(timeout=timeout) as session:
                    for index in range(batches):
                        for side, me in (("sell", w.SELLER), ("buy", w.BUYER)):
                            body = b"\n".join(orjson.dumps(line) for line in
                                              batch_lines(run_id, index, args.lines, side))
                            async with session.post(
                                    f"{s.base}/v1/trades/batch", data=body,
                                    headers={"Authorization": f"Bearer {keys[me]}",
                                             "Content-Type": "application/x-ndjson"}) as resp:
                                await resp.read()
                                if resp.status != 200:
                                    sys.exit(f"batch answered {resp.status}")
                        done = (index + 1) * 2 * args.lines
                        if (index + 1) % max(1, batches // 10) == 0:
                            elapsed = time.perf_counter() - started
                            print(f"{done:>9} trades  {done / elapsed:8.0f} trades/s  "
                                  f"{memory(pid)} MiB", flush=True)
                print(f"after {batches * 2 * args.lines} trades: {memory(pid)} MiB "
                      f"(VmRSS now, VmHWM peak); {os.cpu_count()} CPUs", flush=True)
                # The server hands freed heap back shortly after a batch (kevin.heap).
                await asyncio.sleep(SETTLE)
                print(f"{SETTLE:g} s later, idle: {memory(pid)} MiB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get(
        "KEVIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--lines", type=int, default=10_000)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
