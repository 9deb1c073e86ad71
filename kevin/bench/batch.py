"""``kevin bench batch``: bulk ingest through ``POST /v1/trades/batch`` against a
COPY-only ceiling, in the same run, on the same PostgreSQL server.

Workload: pairs of requests — BANKA posts a batch of sells, then BANKB the batch of buys
that match them line for line — so half the trades rest and half match. The ceiling
COPYs the same trades' first versions and their feed rows into a scratch database, one
transaction per batch: what PostgreSQL can take in at all, with nothing matched.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

from kevin import jsoncodec
from kevin.bench import workload as w
from kevin.dburl import to_asyncpg_dsn

PRODUCT = "BULK"
TARGET_COPY_RATIO = 0.30  # the service's trades/s over the COPY ceiling's


def batch_lines(run_id: str, index: int, lines: int, side: str) -> list[dict[str, Any]]:
    """Batch ``index`` of sells (BANKA) or of the matching buys (BANKB)."""
    other = w.BUYER if side == "sell" else w.SELLER
    return [{
        "trade_id": f"{run_id}-{side[0]}-{index}-{i}", "counterparty": other, "side": side,
        "product": PRODUCT, "quantity": "100", "price": f"{1000 + index}.{i:06d}",
        "currency": "USD", "trade_date": w.TRADE_DATE.isoformat(),
        "settlement_date": w.SETTLEMENT_DATE.isoformat(), "location": "LDN",
        "attributes": {"bench": run_id},
    } for i in range(lines)]


def _plan(lines: int, requests: int) -> list[tuple[int, str]]:
    """(batch index, side) in the order they are posted: sells, then their buys."""
    return [(i // 2, "sell" if i % 2 == 0 else "buy") for i in range(requests)]


# --- the ceiling ------------------------------------------------------------------------

TRADE_COPY_COLUMNS = (
    "participant", "trade_id", "version", "latest", "status", "reason", "counterparty",
    "side", "product", "quantity", "price", "currency", "trade_date", "settlement_date",
    "location", "attributes", "mismatches", "actor", "first_submitted_at",
)


async def copy_ceiling(url: str, run_id: str, lines: int, requests: int) -> dict[str, Any]:
    # A plain connection: asyncpg's own jsonb codec writes COPY's binary format (Kevin's
    # pool decodes jsonb as text, which COPY cannot use); jsonb is then given as text.
    conn = await asyncpg.connect(to_asyncpg_dsn(url))
    seconds = 0.0
    try:
        for index, side in _plan(lines, requests):
            me = w.SELLER if side == "sell" else w.BUYER
            now = datetime.now(UTC)
            trades = [(me, b["trade_id"], 1, True, "unmatched", "submitted",
                       b["counterparty"], side, PRODUCT, Decimal(b["quantity"]),
                       Decimal(b["price"]), "USD", w.TRADE_DATE, w.SETTLEMENT_DATE,
                       "LDN", jsoncodec.dumps_str(b["attributes"]), "[]", me, now)
                      for b in batch_lines(run_id, index, lines, side)]
            feed = [(t[0], t[1], 1) for t in trades]
            began = time.perf_counter()
            async with conn.transaction():
                await conn.copy_records_to_table("trades", records=trades,
                                                 columns=TRADE_COPY_COLUMNS)
                await conn.copy_records_to_table(
                    "feed", records=feed, columns=("participant", "trade_id", "version"))
            seconds += time.perf_counter() - began
    finally:
        await conn.close()
    total = lines * requests
    return {"trades": total, "seconds": round(seconds, 3),
            "trades_per_s": round(total / seconds, 1),
            "what": "COPY of the trades' first versions and their feed rows, "
                    "one transaction per batch, nothing matched"}


# --- the service, driven from the load-generator process --------------------------------


async def drive(config: dict[str, Any]) -> dict[str, Any]:
    """Run in the load generator: post the batches one after another, time each."""
    url, run_id, lines = config["url"], config["run_id"], config["lines"]
    keys = {w.SELLER: config["seller_key"], w.BUYER: config["buyer_key"]}
    bodies = []
    for index, side in _plan(lines, config["requests"]):
        me = w.SELLER if side == "sell" else w.BUYER
        body = b"\n".join(orjson.dumps(line) for line in batch_lines(run_id, index, lines,
                                                                     side))
        bodies.append((me, body))
    latencies: list[float] = []
    results: dict[str, int] = {}
    matched = 0
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for me, body in bodies:
            headers = {"Authorization": f"Bearer {keys[me]}",
                       "Content-Type": "application/x-ndjson"}
            began = time.perf_counter()
            async with session.post(f"{url}/v1/trades/batch", data=body,
                                    headers=headers) as resp:
                payload = await resp.read()
                status = resp.status
            latencies.append(time.perf_counter() - began)
            if status != 200:
                raise RuntimeError(f"batch answered {status}: {payload[:200]!r}")
            for line in orjson.loads(payload)["results"]:
                results[line["result"]] = results.get(line["result"], 0) + 1
                matched += bool(line["trade"] and line["trade"]["status"] == "matched")
    seconds = sum(latencies)
    total = lines * len(bodies)
    return {"trades": total, "seconds": round(seconds, 3),
            "trades_per_s": round(total / seconds, 1), "results": results,
            "matched_lines": matched, "requests": len(bodies),
            "request_ms": w.latency_summary(latencies),
            "what": "POST /v1/trades/batch over HTTP, matching included: sells rest, "
                    "their buys match them"}


async def bench(server_url: str, options: Any, workdir: Path) -> dict[str, Any]:
    from kevin.bench.runner import (
        ServeProcess,
        create_participants,
        run_loadgen,
        scratch_database,
        tree_figures,
    )

    run_id = secrets.token_hex(3)
    lines, requests = options.batch_lines, options.batch_requests
    async with scratch_database(server_url, "copy") as url:
        ceiling = await copy_ceiling(url, run_id, lines, requests)
    async with scratch_database(server_url, "batch") as url:
        keys = await create_participants(url)
        # One request at a time: the largest configuration, as bulk ingest would be served.
        async with ServeProcess(url, secrets.token_urlsafe(16), workdir / "batch.log",
                                max(options.workers)) as server:
            assert server.process is not None
            service = await run_loadgen(
                {"mode": "batch", "url": server.base, "run_id": run_id, "lines": lines,
                 "requests": requests, "seller_key": keys[w.SELLER],
                 "buyer_key": keys[w.BUYER]}, timeout=900)
            service["server"] = tree_figures(server.process.pid)
    ratio = service["trades_per_s"] / ceiling["trades_per_s"]
    return {"ceiling": ceiling, "service": service, "ratio": round(ratio, 3),
            "lines_per_request": lines, "workers": max(options.workers),
            "target_ratio": TARGET_COPY_RATIO}


def text(figures: dict[str, Any]) -> str:
    c, s = figures["ceiling"], figures["service"]
    return "\n".join([
        f"batch: {s['requests']} requests of {figures['lines_per_request']} lines "
        f"(sells, then the buys that match them); kevin serve --workers {figures['workers']}",
        f"  copy ceiling {c['trades_per_s']:>10.1f} trades/s   ({c['what']})",
        f"  service      {s['trades_per_s']:>10.1f} trades/s   request p50 "
        f"{s['request_ms']['p50_ms']:.0f} ms, max {s['request_ms']['max_ms']:.0f} ms; "
        f"{s['matched_lines']} lines matched",
        f"  ratio        {figures['ratio']} x the copy ceiling (target >= {TARGET_COPY_RATIO}: "
        f"{'met' if figures['ratio'] >= TARGET_COPY_RATIO else 'NOT met'})",
    ])

