"""Matching under real concurrency: many submitters at once, in one process and across two
`kevin serve` processes on one database. Exactly one match per pair, never two."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import ADMIN, ADMIN_TOKEN, bearer, trade_body
from tests.matching_checks import check_matching_invariants
from tests.processes import Server, run_cli

pytestmark = pytest.mark.slow

PAIRS = 40


def _bodies() -> list[tuple[str, dict[str, Any]]]:
    """40 sells by BANKA and 40 buys by BANKB, identical terms, shuffled together."""
    sells = [("A", trade_body(f"A-{i:02d}")) for i in range(PAIRS)]
    buys = [("B", trade_body(f"B-{i:02d}", counterparty="BANKA", side="buy"))
            for i in range(PAIRS)]
    bodies = sells + buys
    random.Random(42).shuffle(bodies)
    return bodies


async def _assert_forty_mutual_matches(conn) -> None:
    assert await check_matching_invariants(conn) == PAIRS
    rows = await conn.fetch("SELECT participant, trade_id, status, match_id FROM trades "
                            "WHERE latest ORDER BY participant, trade_id")
    assert len(rows) == 2 * PAIRS and all(r["status"] == "matched" for r in rows)
    # Each trade was matched exactly once in its whole history: no double match that a
    # later version papered over.
    matched_versions = await conn.fetch(
        "SELECT participant, trade_id, count(*) AS n FROM trades WHERE status = 'matched' "
        "GROUP BY participant, trade_id")
    assert len(matched_versions) == 2 * PAIRS and {r["n"] for r in matched_versions} == {1}
    assert await conn.fetchval("SELECT count(DISTINCT match_id) FROM trades") == PAIRS


async def test_forty_pairs_submitted_at_once_match_exactly_once(client, banks, conn):
    a, b = banks
    headers = {"A": a, "B": b}

    async def submit(who: str, body: dict[str, Any]) -> int:
        resp = await client.post("/v1/trades", json=body, headers=headers[who])
        return resp.status

    statuses = await asyncio.gather(*(submit(who, body) for who, body in _bodies()))
    assert statuses == [201] * (2 * PAIRS)
    await _assert_forty_mutual_matches(conn)


async def test_forty_pairs_across_two_server_processes(db_url, conn, tmp_path: Path):
    settings = {"KEVIN_DATABASE_URL": db_url, "KEVIN_ADMIN_TOKEN": ADMIN_TOKEN}
    keys = {}
    for name in ("BANKA", "BANKB"):
        done = run_cli("participant", "add", name, **settings)
        assert done.returncode == 0, done.stderr
        keys[name[-1]] = bearer(done.stdout.strip())
    servers = [Server(tmp_path / f"serve-{i}.log", **settings).start() for i in range(2)]
    try:
        await asyncio.gather(*(s.wait_ready() for s in servers))
        bodies = _bodies()
        async with aiohttp.ClientSession() as session:

            async def submit(n: int, who: str, body: dict[str, Any]) -> int:
                # Alternate servers: most opposite legs meet from different processes.
                url = f"{servers[n % 2].url}/v1/trades"
                async with session.post(url, json=body, headers=keys[who]) as resp:
                    return resp.status

            statuses = await asyncio.gather(
                *(submit(n, who, body) for n, (who, body) in enumerate(bodies)))
            assert statuses == [201] * (2 * PAIRS), [s.log()[-2000:] for s in servers]
            # Both processes see the same, complete outcome.
            for server in servers:
                async with session.get(f"{server.url}/v1/trades",
                                       params={"status": "matched"}, headers=ADMIN) as resp:
                    assert len((await resp.json())["trades"]) == 2 * PAIRS
    finally:
        await asyncio.gather(*(s.stop() for s in servers))
    await _assert_forty_mutual_matches(conn)
    checked = run_cli("check", KEVIN_DATABASE_URL=db_url)
    assert checked.returncode == 0, checked.stdout + checked.stderr


async def test_racing_amends_cancels_and_submissions_keep_the_invariants(client, banks, conn,
                                                                        db_url):
    """Matches, breaks (amend, cancel), re-matches and mismatches all racing in one key."""
    a, b = banks
    rng = random.Random(3)
    prices = ["1000", "1000.5", "1001"]
    for i in range(12):
        await client.post("/v1/trades", json=trade_body(f"A-{i}", price=rng.choice(prices)),
                          headers=a)

    async def churn(i: int) -> None:
        body = trade_body(f"B-{i}", counterparty="BANKA", side="buy", price=rng.choice(prices))
        await client.post("/v1/trades", json=body, headers=b)
        for _ in range(3):
            current = await (await client.get(f"/v1/trades/A-{i}", headers=a)).json()
            if current["status"] == "cancelled":
                return
            headers = {**a, "If-Match": f'"{current["version"]}"'}
            if rng.random() < 0.2:
                await client.delete(f"/v1/trades/A-{i}", headers=headers)
            else:
                await client.put(f"/v1/trades/A-{i}", json=trade_body(
                    f"A-{i}", price=rng.choice(prices)), headers=headers)

    await asyncio.gather(*(churn(i) for i in range(12)))
    await check_matching_invariants(conn)
    reasons = {r["reason"] for r in await conn.fetch("SELECT DISTINCT reason FROM trades")}
    assert {"matched", "amended", "unmatched"} <= reasons  # breaks and re-matches happened
    checked = run_cli("check", KEVIN_DATABASE_URL=db_url)
    assert checked.returncode == 0, checked.stdout + checked.stderr


async def test_amends_crossing_between_two_keys_do_not_deadlock(client, banks, conn):
    """An amend into another product locks both keys (in one global order): trades moving
    XAU→XAG and XAG→XAU at the same time must all succeed, none aborted as a deadlock."""
    a, b = banks
    for i in range(10):
        await client.post("/v1/trades", json=trade_body(f"X-{i}", product="XAU"), headers=a)
        await client.post("/v1/trades", json=trade_body(f"G-{i}", product="XAG"), headers=a)
        await client.post("/v1/trades", json=trade_body(
            f"B-{i}", counterparty="BANKA", side="buy", product="XAG" if i % 2 else "XAU",
            price="999"), headers=b)

    versions = {}
    for trade_id in [f"{p}-{i}" for p in "XG" for i in range(10)]:
        current = await (await client.get(f"/v1/trades/{trade_id}", headers=a)).json()
        assert current["status"] == "mismatched"  # each names a B- trade in its own key
        versions[trade_id] = current["version"]

    async def move(trade_id: str, product: str) -> int:
        resp = await client.put(f"/v1/trades/{trade_id}", json=trade_body(
            trade_id, product=product), headers={**a, "If-Match": f'"{versions[trade_id]}"'})
        return resp.status

    moves = [move(f"X-{i}", "XAG") for i in range(10)] + \
        [move(f"G-{i}", "XAU") for i in range(10)]
    statuses = await asyncio.gather(*moves)
    assert statuses == [200] * 20
    await check_matching_invariants(conn)
