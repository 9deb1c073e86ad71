"""Importing SWIFT MT300 messages against sending the same trades as NDJSON to the batch
route, in the same run, on the same `kevin serve`.

    PYTHONPATH=. python benchmarks/import_mt300.py [--url postgresql://postgres@127.0.0.1:5432/postgres]
        [--records 10000] [--rounds 3]

Creates a scratch database on the server (dropped at the end), starts a real `kevin
serve`, registers BANKA's and BANKB's BICs. Each round, BANKB first sends (untimed) the
buys that two sets of BANKA's sells will match; then BANKA sends one set as NDJSON to
POST /v1/trades/batch and the other as ``records`` MT300 messages in one POST
/v1/trades/import?format=mt300, each timed from the request to the whole answer — so both
pay the same matching, and the difference is the reading of the file. The order of the
two alternates between rounds. Prints each round and the median rate of each, and their
ratio (target: the import at >= 0.5x the batch's rate).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson

from kevin.bench import workload as w
from kevin.bench.runner import ServeProcess, create_participants, scratch_database
from kevin.formats import mt300

BICS = {w.SELLER: "BANKGB2LXXX", w.BUYER: "BANKUS33XXX"}


def sells(prefix: str, records: int) -> list[dict[str, Any]]:
    """BANKA's sells of EUR against USD: unique rates, so each matches only its buy."""
    return [{"trade_id": f"{prefix}{i:05d}", "counterparty": w.BUYER, "side": "sell",
             "product": "EURUSD", "quantity": "1000000", "price": f"1.{i:06d}",
             "currency": "USD", "trade_date": w.TRADE_DATE.isoformat(),
             "settlement_date": w.SETTLEMENT_DATE.isoformat()}
            for i in range(1, records + 1)]


def buys(trades: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**trade, "trade_id": "B" + trade["trade_id"], "counterparty": w.SELLER,
             "side": "buy"} for trade in trades]


def ndjson(trades: list[dict[str, Any]]) -> bytes:
    return b"\n".join(orjson.dumps(trade) for trade in trades)


def mt300_file(trades: list[dict[str, Any]]) -> bytes:
    return "\r\n".join(mt300.render(SimpleNamespace(
        **{**trade, "quantity": Decimal(trade["quantity"]), "price": Decimal(trade["price"]),
           "trade_date": w.TRADE_DATE, "settlement_date": w.SETTLEMENT_DATE},
        status="unmatched", version=1, recorded_at=datetime.now(UTC)),
        BICS[w.SELLER], BICS[w.BUYER]) for trade in trades).encode()


async def post(session: aiohttp.ClientSession, url: str, key: str, body: bytes,
               content_type: str, status: str) -> float:
    """Seconds from sending to the whole answer; every record must be created with this
    status."""
    started = time.perf_counter()
    async with session.post(url, data=body, headers={"Authorization": f"Bearer {key}",
                                                     "Content-Type": content_type}) as resp:
        answer = await resp.read()
    seconds = time.perf_counter() - started
    if resp.status != 200:
        sys.exit(f"{url} answered {resp.status}: {answer[:300]!r}")
    results = orjson.loads(answer)["results"]
    wrong = [r for r in results if r["result"] != "created" or r["trade"]["status"] != status]
    if wrong:
        sys.exit(f"{url}: {len(wrong)} records not created {status}: {wrong[0]}")
    return seconds


async def run(args: argparse.Namespace) -> None:
    run_id = secrets.token_hex(3).upper()
    async with scratch_database(args.url, "import") as url:
        keys = await create_participants(url)
        admin = secrets.token_urlsafe(8)
        with tempfile.TemporaryDirectory() as tmp:
            async with ServeProcess(url, admin, Path(tmp) / "s.log") as serve:
                timeout = aiohttp.ClientTimeout(total=900)
                # A connection per request: building 10,000 messages between two requests
                # can idle a kept-alive one past the server's request-head timeout.
                connector = aiohttp.TCPConnector(force_close=True)
                async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
                    for name, bic in BICS.items():
                        async with session.put(f"{serve.base}/v1/participants/{name}",
                                               json={"bic": bic}, headers={
                                                   "Authorization": f"Bearer {admin}"}) as r:
                            assert r.status == 200, await r.text()
                    rates: dict[str, list[float]] = {"ndjson": [], "mt300": []}
                    for round_ in range(args.rounds):
                        sets = {kind: sells(f"{run_id}{round_}{kind[0].upper()}", args.records)
                                for kind in rates}
                        for trades in sets.values():  # the resting buys, untimed
                            await post(session, f"{serve.base}/v1/trades/batch",
                                       keys[w.BUYER], ndjson(buys(trades)),
                                       "application/x-ndjson", "unmatched")
                        bodies = {"ndjson": ndjson(sets["ndjson"]),
                                  "mt300": mt300_file(sets["mt300"])}
                        order = list(rates) if round_ % 2 == 0 else list(reversed(rates))
                        line = []
                        for kind in order:
                            target, content_type = (
                                ("/v1/trades/batch", "application/x-ndjson") if kind == "ndjson"
                                else ("/v1/trades/import?format=mt300", "text/plain"))
                            seconds = await post(session, serve.base + target, keys[w.SELLER],
                                                 bodies[kind], content_type, "matched")
                            rates[kind].append(args.records / seconds)
                            line.append(f"{kind} {args.records / seconds:7.0f} trades/s "
                                        f"({len(bodies[kind]) / 2**20:.1f} MiB, {seconds:.2f} s)")
                        print(f"round {round_ + 1}: " + "; ".join(line), flush=True)
    batch, imported = (statistics.median(rates[k]) for k in ("ndjson", "mt300"))
    print(f"median of {args.rounds} rounds, {args.records} records per request, each "
          f"matching a resting trade; {os.cpu_count()} CPUs:")
    print(f"  POST /v1/trades/batch (NDJSON):          {batch:7.0f} trades/s")
    print(f"  POST /v1/trades/import?format=mt300:     {imported:7.0f} trades/s")
    print(f"  ratio import/batch: {imported / batch:.2f}x (target >= 0.5x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get(
        "KEVIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
