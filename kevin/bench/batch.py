"""``kevin bench batch``: bulk ingest through ``POST /v1/trades/batch`` against two
COPY-only ceilings, in the same run, on the same PostgreSQL server.

Workload: pairs of requests — BANKA posts a batch of sells, then BANKB the batch of buys
that match them line for line — so half the trades rest and half match. The COPY ceiling
COPYs the same trades' first versions and their feed rows into a scratch database, one
transaction per batch: what PostgreSQL can take in at all, with nothing matched. The
matched copy also writes what matching them must store (both legs' matched versions, the
resting legs' ``latest`` flipped, a feed row per version) with no search for the resting
leg: the least work the workload needs, as ``pgbench_pair.sql`` is for single pairs.
"""

from __future__ import annotations

import os
import secrets
import time
import uuid
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
MATCHED_COPY_COLUMNS = (*TRADE_COPY_COLUMNS, "match_id", "match_counterparty_trade_id",
                        "match_counterparty_version")


def _first_versions(run_id: str, index: int, lines: int, side: str,
                    latest: bool) -> list[tuple[Any, ...]]:
    me = w.SELLER if side == "sell" else w.BUYER
    now = datetime.now(UTC)
    return [(me, b["trade_id"], 1, latest, "unmatched", "submitted", b["counterparty"], side,
             PRODUCT, Decimal(b["quantity"]), Decimal(b["price"]), "USD", w.TRADE_DATE,
             w.SETTLEMENT_DATE, "LDN", jsoncodec.dumps_str(b["attributes"]), "[]", me, now)
            for b in batch_lines(run_id, index, lines, side)]


def _matched_versions(sells: list[tuple[Any, ...]],
                      buys: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Version 2 of both legs of each line, matched with each other, as the buyer did."""
    versions = []
    for sell, buy in zip(sells, buys, strict=True):
        match_id = uuid.uuid4()
        for leg, other in ((sell, buy), (buy, sell)):
            versions.append((*leg[:2], 2, True, "matched", "matched", *leg[6:17], w.BUYER,
                             leg[18], match_id, other[1], 2))
    return versions


async def copy_ceiling(url: str, run_id: str, lines: int, requests: int, *,
                       matched: bool = False) -> dict[str, Any]:
    """COPY the batches in, one transaction per batch, timing only the transactions.

    Unmatched (the COPY ceiling): each trade's first version and its feed row. Matched (the
    least work the workload's matching needs, as pgbench_pair.sql is for single pairs): a
    buy batch also flips its sells' ``latest`` (found by key, no search by terms), writes
    both legs' matched versions, and a feed row for each of the three new versions; its
    buys' first versions go in as no longer latest, as the service writes them."""
    # A plain connection: asyncpg's own jsonb codec writes COPY's binary format (Kevin's
    # pool decodes jsonb as text, which COPY cannot use); jsonb is then given as text.
    from kevin.bench.runner import backends_cpu, cpu_between

    conn = await asyncpg.connect(to_asyncpg_dsn(url))
    seconds = 0.0
    resting: dict[int, list[tuple[Any, ...]]] = {}
    try:
        cpu_before = await backends_cpu(conn, own=True)
        for index, side in _plan(lines, requests):
            buying = matched and side == "buy"
            trades = _first_versions(run_id, index, lines, side, latest=not buying)
            versions: list[tuple[Any, ...]] = []
            if side == "sell":
                resting[index] = trades
            elif buying:
                versions = _matched_versions(resting.pop(index), trades)
            feed = [(t[0], t[1], t[2]) for t in (*trades, *versions)]
            began = time.perf_counter()
            async with conn.transaction():
                await conn.copy_records_to_table("trades", records=trades,
                                                 columns=TRADE_COPY_COLUMNS)
                if buying:
                    await conn.execute(
                        "UPDATE trades SET latest = false WHERE latest AND participant = $1 "
                        "AND trade_id = ANY($2::text[])",
                        w.SELLER, [v[1] for v in versions[0::2]])
                    await conn.copy_records_to_table("trades", records=versions,
                                                     columns=MATCHED_COPY_COLUMNS)
                await conn.copy_records_to_table(
                    "feed", records=feed, columns=("participant", "trade_id", "version"))
            seconds += time.perf_counter() - began
        backend_cpu_s = cpu_between(cpu_before, await backends_cpu(conn, own=True))
    finally:
        await conn.close()
    total = lines * requests
    what = ("COPY of every version the matching writes (both legs' first and matched "
            "versions), the sells' latest flipped by key, a feed row per version; one "
            "transaction per batch" if matched else
            "COPY of the trades' first versions and their feed rows, one transaction per "
            "batch, nothing matched")
    return {"trades": total, "seconds": round(seconds, 3),
            "trades_per_s": round(total / seconds, 1), "what": what,
            "postgresql_cpu_ms_per_1000": _per_1000(backend_cpu_s, total)}


def _per_1000(cpu_s: float | None, trades: int) -> float | None:
    """CPU milliseconds per 1,000 trades (None: not measured)."""
    return None if cpu_s is None else round(1_000_000 * cpu_s / trades, 1)


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
        backends_cpu,
        cpu_between,
        create_participants,
        run_loadgen,
        scratch_database,
        tree_figures,
    )

    run_id = secrets.token_hex(3)
    lines, requests = options.batch_lines, options.batch_requests
    async with scratch_database(server_url, "copy") as url:
        ceiling = await copy_ceiling(url, run_id, lines, requests)
    async with scratch_database(server_url, "copy_matched") as url:
        matched_ceiling = await copy_ceiling(url, run_id, lines, requests, matched=True)
    async with scratch_database(server_url, "batch") as url:
        keys = await create_participants(url)
        # One request at a time: the largest configuration, as bulk ingest would be served.
        async with ServeProcess(url, secrets.token_urlsafe(16), workdir / "batch.log",
                                max(options.workers)) as server:
            assert server.process is not None
            # What the service's CPU says of its rate: every backend of its database
            # (the requests', the feed sequencer's), and its own processes.
            watcher = await asyncpg.connect(to_asyncpg_dsn(url))
            try:
                backends_before = await backends_cpu(watcher)
                server_before = tree_figures(server.process.pid)
                service = await run_loadgen(
                    {"mode": "batch", "url": server.base, "run_id": run_id, "lines": lines,
                     "requests": requests, "seller_key": keys[w.SELLER],
                     "buyer_key": keys[w.BUYER]}, timeout=900)
                service["server"] = server_after = tree_figures(server.process.pid)
                backend_cpu_s = cpu_between(backends_before, await backends_cpu(watcher))
            finally:
                await watcher.close()
    server_cpu_s = (server_after["cpu_s"] - server_before["cpu_s"]
                    if server_before and server_after else None)
    service["server_cpu_ms_per_1000"] = _per_1000(server_cpu_s, service["trades"])
    service["postgresql_cpu_ms_per_1000"] = _per_1000(backend_cpu_s, service["trades"])
    ratio = service["trades_per_s"] / ceiling["trades_per_s"]
    matched_ratio = service["trades_per_s"] / matched_ceiling["trades_per_s"]
    return {"ceiling": ceiling, "matched_ceiling": matched_ceiling, "service": service,
            "ratio": round(ratio, 3), "matched_ratio": round(matched_ratio, 3),
            "lines_per_request": lines, "workers": max(options.workers),
            "target_ratio": TARGET_COPY_RATIO,
            "cpu_bound": cpu_bound(service, ceiling["trades_per_s"], os.cpu_count() or 1)}


def cpu_bound(service: dict[str, Any], ceiling_trades_per_s: float,
              cores: int) -> dict[str, Any] | None:
    """The most trades/s the service's CPU a trade (its processes' and PostgreSQL's)
    allows on ``cores`` cores, every core busy all the time, and that as a ratio to the
    COPY ceiling: a rate the target cannot be met beyond however the work overlaps."""
    server, backends = (service.get("server_cpu_ms_per_1000"),
                        service.get("postgresql_cpu_ms_per_1000"))
    if server is None or backends is None or server + backends <= 0:
        return None
    trades_per_s = cores * 1_000_000 / (server + backends)
    return {"cores": cores, "trades_per_s": round(trades_per_s, 1),
            "ratio": round(trades_per_s / ceiling_trades_per_s, 3)}


def text(figures: dict[str, Any]) -> str:
    c, m, s = figures["ceiling"], figures["matched_ceiling"], figures["service"]
    return "\n".join([
        f"batch: {s['requests']} requests of {figures['lines_per_request']} lines "
        f"(sells, then the buys that match them); kevin serve --workers {figures['workers']}",
        f"  copy ceiling {c['trades_per_s']:>10.1f} trades/s   ({c['what']})",
        f"  matched copy {m['trades_per_s']:>10.1f} trades/s   ({m['what']})",
        f"  service      {s['trades_per_s']:>10.1f} trades/s   request p50 "
        f"{s['request_ms']['p50_ms']:.0f} ms, max {s['request_ms']['max_ms']:.0f} ms; "
        f"{s['matched_lines']} lines matched",
        f"  ratio        {figures['ratio']} x the copy ceiling (target >= {TARGET_COPY_RATIO}: "
        f"{'met' if figures['ratio'] >= TARGET_COPY_RATIO else 'NOT met'}); "
        f"{figures['matched_ratio']} x the matched copy",
        *_cpu_lines(figures),
    ])


def _cpu_lines(figures: dict[str, Any]) -> list[str]:
    """What each side's CPU a trade was, and the rate the service's allows."""
    c, m, s = figures["ceiling"], figures["matched_ceiling"], figures["service"]
    bound = figures.get("cpu_bound")
    if bound is None or c["postgresql_cpu_ms_per_1000"] is None:
        return ["  cpu          not measured (PostgreSQL is not on this machine, or its "
                "processes are not readable)"]
    return [
        f"  cpu          service {s['server_cpu_ms_per_1000']} ms in kevin serve + "
        f"{s['postgresql_cpu_ms_per_1000']} ms in PostgreSQL a 1,000 trades (copy ceiling "
        f"{c['postgresql_cpu_ms_per_1000']} ms, matched copy "
        f"{m['postgresql_cpu_ms_per_1000']} ms in PostgreSQL)",
        f"  cpu bound    {bound['trades_per_s']:.1f} trades/s = {bound['ratio']} x the copy "
        f"ceiling: the service's CPU a trade on {bound['cores']} cores, every core busy",
    ]

