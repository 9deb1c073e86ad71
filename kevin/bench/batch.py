"""``kevin bench batch``: bulk ingest through ``POST /v1/trades/batch`` against two
COPY-only ceilings, in the same run, on the same PostgreSQL server.

Workload: pairs of requests — BANKA posts a batch of sells, then BANKB the batch of buys
that match them line for line — so half the trades rest and half match. The COPY ceiling
COPYs the same trades' first versions and their feed rows into a scratch database, one
transaction per batch: what PostgreSQL can take in at all, with nothing matched. The
matched copy also writes what matching them must store (both legs' matched versions, the
resting legs' ``latest`` flipped, a feed row per version) with no search for the resting
leg: the least work the workload needs, as ``pgbench_pair.sql`` is for single pairs.

The three sides run in alternating rounds (``--rounds``), each round a slice of the
workload's pairs on every side in turn, as ``kevin bench pairs`` alternates its slices: a
machine whose speed drifts tilts them alike. The ratios are of the sums; each round's is
printed too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator
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
from kevin.store import feed as feed_store

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


Plan = list[tuple[int, str]]


def _plan(requests: int) -> Plan:
    """(batch index, side) in the order they are posted: sells, then their buys."""
    return [(i // 2, "sell" if i % 2 == 0 else "buy") for i in range(requests)]


def round_plans(requests: int, rounds: int) -> list[Plan]:
    """The plan cut into at most ``rounds`` consecutive slices of whole pairs (a sell
    batch and the buys that match it are always in the same slice), as even as can be."""
    plan = _plan(requests)
    pairs = [plan[i:i + 2] for i in range(0, len(plan), 2)]
    count = max(1, min(rounds, len(pairs)))
    return [[step for pair in pairs[len(pairs) * r // count:len(pairs) * (r + 1) // count]
             for step in pair] for r in range(count)]


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


class CopyLoad:
    """A COPY ceiling on its own connection, run a slice of the plan at a time.

    Unmatched (the COPY ceiling): each trade's first version and its feed row. Matched (the
    least work the workload's matching needs, as pgbench_pair.sql is for single pairs): a
    buy batch also flips its sells' ``latest`` (found by key, no search by terms), writes
    both legs' matched versions, and a feed row for each of the three new versions; its
    buys' first versions go in as no longer latest, as the service writes them."""

    def __init__(self, conn: asyncpg.Connection, run_id: str, lines: int,
                 matched: bool) -> None:
        self.conn, self.run_id, self.lines, self.matched = conn, run_id, lines, matched
        self.resting: dict[int, list[tuple[Any, ...]]] = {}
        self.trades = 0
        self.seconds = 0.0
        self.cpu_s: float | None = 0.0

    async def run(self, plan: Plan) -> tuple[int, float]:
        """COPY ``plan``'s batches in, one transaction per batch, timing only the
        transactions; the trades and seconds of this slice."""
        from kevin.bench.runner import backends_cpu, cpu_between

        conn, seconds = self.conn, 0.0
        cpu_before = await backends_cpu(conn, own=True)
        for index, side in plan:
            buying = self.matched and side == "buy"
            trades = _first_versions(self.run_id, index, self.lines, side, latest=not buying)
            versions: list[tuple[Any, ...]] = []
            if side == "sell":
                self.resting[index] = trades
            elif buying:
                versions = _matched_versions(self.resting.pop(index), trades)
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
        cpu_s = cpu_between(cpu_before, await backends_cpu(conn, own=True))
        stored = self.lines * len(plan)
        self.trades += stored
        self.seconds += seconds
        self.cpu_s = None if cpu_s is None or self.cpu_s is None else self.cpu_s + cpu_s
        return stored, seconds

    def figures(self) -> dict[str, Any]:
        what = ("COPY of every version the matching writes (both legs' first and matched "
                "versions), the sells' latest flipped by key, a feed row per version; one "
                "transaction per batch" if self.matched else
                "COPY of the trades' first versions and their feed rows, one transaction "
                "per batch, nothing matched")
        return {"trades": self.trades, "seconds": round(self.seconds, 3),
                "trades_per_s": round(self.trades / self.seconds, 1), "what": what,
                "postgresql_cpu_ms_per_1000": _per_1000(self.cpu_s, self.trades)}


@contextlib.asynccontextmanager
async def copy_load(url: str, run_id: str, lines: int, *,
                    matched: bool = False) -> AsyncIterator[CopyLoad]:
    # A plain connection: asyncpg's own jsonb codec writes COPY's binary format (Kevin's
    # pool decodes jsonb as text, which COPY cannot use); jsonb is then given as text.
    conn = await asyncpg.connect(to_asyncpg_dsn(url))
    try:
        yield CopyLoad(conn, run_id, lines, matched)
    finally:
        await conn.close()


async def copy_ceiling(url: str, run_id: str, lines: int, requests: int, *,
                       matched: bool = False) -> dict[str, Any]:
    """The whole plan COPYed in at once (CopyLoad)."""
    async with copy_load(url, run_id, lines, matched=matched) as load:
        await load.run(_plan(requests))
        return load.figures()


def _per_1000(cpu_s: float | None, trades: int) -> float | None:
    """CPU milliseconds per 1,000 trades (None: not measured)."""
    return None if cpu_s is None else round(1_000_000 * cpu_s / trades, 1)


# --- the service, driven from the load-generator process --------------------------------


async def drive(config: dict[str, Any]) -> dict[str, Any]:
    """Run in the load generator: post the plan's batches one after another, time each."""
    url, run_id, lines = config["url"], config["run_id"], config["lines"]
    keys = {w.SELLER: config["seller_key"], w.BUYER: config["buyer_key"]}
    bodies = []
    for index, side in config["plan"]:
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
    return {"trades": lines * len(bodies), "latencies_s": latencies, "results": results,
            "matched_lines": matched}


def _service_figures(slices: list[dict[str, Any]]) -> dict[str, Any]:
    """The service's slices as one figure: trades over the summed request times."""
    latencies = [s for slice_ in slices for s in slice_["latencies_s"]]
    trades, seconds = sum(s["trades"] for s in slices), sum(latencies)
    results: dict[str, int] = {}
    for slice_ in slices:
        for result, count in slice_["results"].items():
            results[result] = results.get(result, 0) + count
    return {"trades": trades, "seconds": round(seconds, 3),
            "trades_per_s": round(trades / seconds, 1), "results": results,
            "matched_lines": sum(s["matched_lines"] for s in slices),
            "requests": len(latencies), "request_ms": w.latency_summary(latencies),
            "what": "POST /v1/trades/batch over HTTP, matching included: sells rest, "
                    "their buys match them"}


async def _drained(conn: asyncpg.Connection, timeout: float = 120.0) -> None:
    """Until the service's sequencer has numbered every update committed so far: its
    work for a slice is the service's CPU, and must not run into the next side's slice."""
    from kevin.bench.runner import BenchFailed

    deadline = time.monotonic() + timeout
    while await feed_store.any_unsequenced(conn):
        if time.monotonic() > deadline:
            raise BenchFailed(f"the service's feed was not sequenced within {timeout:.0f}s")
        await asyncio.sleep(0.02)


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
    lines = options.batch_lines
    plans = round_plans(options.batch_requests, options.rounds)
    async with contextlib.AsyncExitStack() as stack:
        copy_url = await stack.enter_async_context(scratch_database(server_url, "copy"))
        matched_url = await stack.enter_async_context(
            scratch_database(server_url, "copy_matched"))
        url = await stack.enter_async_context(scratch_database(server_url, "batch"))
        ceiling = await stack.enter_async_context(copy_load(copy_url, run_id, lines))
        matched_ceiling = await stack.enter_async_context(
            copy_load(matched_url, run_id, lines, matched=True))
        keys = await create_participants(url)
        # One request at a time: the largest configuration, as bulk ingest would be served.
        server = await stack.enter_async_context(ServeProcess(
            url, secrets.token_urlsafe(16), workdir / "batch.log", max(options.workers)))
        assert server.process is not None
        # What the service's CPU says of its rate: every backend of its database (the
        # requests', the feed sequencer's), and its own processes, over its slices.
        watcher = await asyncpg.connect(to_asyncpg_dsn(url))
        stack.push_async_callback(watcher.close)
        slices, rounds = [], []
        server_cpu_s: float | None = 0.0
        backend_cpu_s: float | None = 0.0
        for plan in plans:
            ceiling_round = await ceiling.run(plan)
            matched_round = await matched_ceiling.run(plan)
            backends_before = await backends_cpu(watcher)
            server_before = tree_figures(server.process.pid)
            slice_ = await run_loadgen(
                {"mode": "batch", "url": server.base, "run_id": run_id, "lines": lines,
                 "plan": plan, "seller_key": keys[w.SELLER], "buyer_key": keys[w.BUYER]},
                timeout=900)
            await _drained(watcher)
            server_after = tree_figures(server.process.pid)
            spent = cpu_between(backends_before, await backends_cpu(watcher))
            backend_cpu_s = None if spent is None or backend_cpu_s is None \
                else backend_cpu_s + spent
            server_cpu_s = None if not (server_before and server_after) \
                or server_cpu_s is None \
                else server_cpu_s + server_after["cpu_s"] - server_before["cpu_s"]
            slices.append(slice_)
            service_rate = slice_["trades"] / sum(slice_["latencies_s"])
            rounds.append({
                "ceiling_trades_per_s": round(ceiling_round[0] / ceiling_round[1], 1),
                "matched_trades_per_s": round(matched_round[0] / matched_round[1], 1),
                "service_trades_per_s": round(service_rate, 1),
                "ratio": round(service_rate * ceiling_round[1] / ceiling_round[0], 3),
                "matched_ratio": round(service_rate * matched_round[1] / matched_round[0], 3)})
        service = _service_figures(slices)
        service["server"] = server_after
        copy_figures, matched_figures = ceiling.figures(), matched_ceiling.figures()
    service["server_cpu_ms_per_1000"] = _per_1000(server_cpu_s, service["trades"])
    service["postgresql_cpu_ms_per_1000"] = _per_1000(backend_cpu_s, service["trades"])
    ratio = service["trades_per_s"] / copy_figures["trades_per_s"]
    matched_ratio = service["trades_per_s"] / matched_figures["trades_per_s"]
    return {"ceiling": copy_figures, "matched_ceiling": matched_figures, "service": service,
            "ratio": round(ratio, 3), "matched_ratio": round(matched_ratio, 3),
            "rounds": rounds, "lines_per_request": lines, "workers": max(options.workers),
            "target_ratio": TARGET_COPY_RATIO,
            "cpu_bound": cpu_bound(service, copy_figures["trades_per_s"],
                                   os.cpu_count() or 1)}


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
        f"(sells, then the buys that match them); kevin serve --workers {figures['workers']}; "
        f"{len(figures['rounds'])} rounds of the copy ceiling, the matched copy, then the "
        f"service, each a slice of the pairs",
        f"  copy ceiling {c['trades_per_s']:>10.1f} trades/s   ({c['what']})",
        f"  matched copy {m['trades_per_s']:>10.1f} trades/s   ({m['what']})",
        f"  service      {s['trades_per_s']:>10.1f} trades/s   request p50 "
        f"{s['request_ms']['p50_ms']:.0f} ms, max {s['request_ms']['max_ms']:.0f} ms; "
        f"{s['matched_lines']} lines matched",
        f"  ratio        {figures['ratio']} x the copy ceiling (target >= {TARGET_COPY_RATIO}: "
        f"{'met' if figures['ratio'] >= TARGET_COPY_RATIO else 'NOT met'}); "
        f"{figures['matched_ratio']} x the matched copy",
        "               by round " + ", ".join(f"{r['ratio']}" for r in figures["rounds"])
        + " x the copy ceiling",
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

