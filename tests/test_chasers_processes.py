"""Chasers with two real `kevin serve` processes on one database, stopped and started
again: every trade past its cut-off while open gets exactly one `overdue` notice — one
update on its participant's feed and one on its counterparty's — and a restart sends
none again. The servers read the real clock, so the trades' dates say which cut-offs
have passed: ten days ago (passed), in five days (ahead)."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kevin.store.invariants import find_violations
from tests.conftest import ADMIN_TOKEN, bearer, trade_body, wait_for
from tests.processes import Server, run_cli

pytestmark = pytest.mark.slow

PROFILE = {"participants": ["BANKA", "BANKB"], "product": "XAU",
           "cutoff": {"business_days": 1, "time": "17:00", "timezone": "Europe/London",
                      "calendar": "GB"}}
PAIRS = 12


async def feed_overdue(session: aiohttp.ClientSession, url: str,
                       headers: dict[str, str]) -> list[dict[str, Any]]:
    """Every overdue update on a feed, read page by page."""
    found, after = [], 0
    while True:
        async with session.get(f"{url}/v1/feed", params={"after": after, "limit": 1000},
                               headers={**headers, "Accept": "application/json"}) as resp:
            assert resp.status == 200, await resp.text()
            page = await resp.json()
        if not page["updates"]:
            return found
        found += [u for u in page["updates"] if u["event"] == "overdue"]
        after = page["last_seq"]


async def test_two_servers_and_a_restart_send_each_notice_once(db_url, conn, tmp_path: Path):
    settings = {"KEVIN_DATABASE_URL": db_url, "KEVIN_ADMIN_TOKEN": ADMIN_TOKEN}
    keys = {}
    for name in ("BANKA", "BANKB"):
        done = run_cli("participant", "add", name, **settings)
        assert done.returncode == 0, done.stderr
        keys[name] = bearer(done.stdout.strip())
    admin = bearer(ADMIN_TOKEN)
    today = datetime.now(UTC).date()
    old, ahead = (today - timedelta(days=10)).isoformat(), (today + timedelta(days=5)).isoformat()

    def servers() -> list[Server]:
        return [Server(tmp_path / f"serve-{i}.log", **settings).start() for i in range(2)]

    async def notices() -> list[tuple[str, str]]:
        rows = await conn.fetch("SELECT participant, trade_id FROM overdue_notices")
        return sorted((r["participant"], r["trade_id"]) for r in rows)

    expected = []
    running = servers()
    try:
        await asyncio.gather(*(s.wait_ready() for s in running))
        urls = [s.url for s in running]
        async with aiohttp.ClientSession() as session:

            async def call(method: str, url: str, headers: dict[str, str],
                           body: dict[str, Any]) -> dict[str, Any]:
                async with session.request(method, url, json=body, headers=headers) as r:
                    assert r.status in (200, 201), await r.text()
                    return dict(await r.json())

            await call("PUT", f"{urls[0]}/v1/profiles/a-b-xau", admin, PROFILE)
            for n in range(PAIRS):
                url = urls[n % 2]  # each process takes half the writes
                # Past its cut-off and open: chased (on BANKA's feed and BANKB's).
                await call("POST", f"{url}/v1/trades", keys["BANKA"],
                           trade_body(f"A-{n}", trade_date=old, settlement_date=old,
                                      quantity=str(10 + n)))
                expected.append(("BANKA", f"A-{n}"))
                if n % 3 == 0:  # the other side differs on quantity: both mismatched
                    await call("POST", f"{urls[(n + 1) % 2]}/v1/trades", keys["BANKB"],
                               trade_body(f"B-{n}", trade_date=old, settlement_date=old,
                                          counterparty="BANKA", side="buy",
                                          quantity=str(10 + n) + ".5"))
                    expected.append(("BANKB", f"B-{n}"))
                # Its cut-off ahead: never chased, matched or not.
                await call("POST", f"{url}/v1/trades", keys["BANKA"],
                           trade_body(f"F-{n}", trade_date=ahead, settlement_date=ahead,
                                      quantity=str(100 + n)))
            expected.sort()

            await wait_for(lambda: _equal(notices(), expected), timeout=60)
            await wait_for(lambda: _all_sequenced(conn), timeout=60)
            # Each notice once on each feed, read through either process.
            for who in ("BANKA", "BANKB"):
                for url in urls:
                    events = await feed_overdue(session, url, keys[who])
                    chased = Counter((e["trade_participant"], e["trade_id"]) for e in events)
                    assert sorted(chased) == expected and set(chased.values()) == {1}, who
                    assert {e["participant"] for e in events} == {who}
                    for e in events:  # its own trade, or one alleged against it
                        assert who in (e["trade_participant"], e["counterparty"])
                        assert e["cutoff_at"] is not None and e["trade_date"] == old
            seqs = await conn.fetchval("SELECT array_agg(seq) FROM feed WHERE notice_id "
                                       "IS NOT NULL")
            assert len(seqs) == len(set(seqs)) == 2 * len(expected)
    finally:
        await asyncio.gather(*(s.stop() for s in running))

    # Both stopped, both started again: the new leader walks every open trade and finds
    # nothing left to say; a trade submitted now past its cut-off is chased, once.
    running = servers()
    try:
        await asyncio.gather(*(s.wait_ready() for s in running))
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{running[1].url}/v1/trades", headers=keys["BANKA"],
                                    json=trade_body("A-LATE", trade_date=old,
                                                    settlement_date=old,
                                                    quantity="999")) as resp:
                assert resp.status == 201, await resp.text()
            after_restart = sorted([*expected, ("BANKA", "A-LATE")])
            await wait_for(lambda: _equal(notices(), after_restart), timeout=60)
            await wait_for(lambda: _all_sequenced(conn), timeout=60)
            for who in ("BANKA", "BANKB"):
                events = await feed_overdue(session, running[0].url, keys[who])
                chased = Counter((e["trade_participant"], e["trade_id"]) for e in events)
                assert sorted(chased) == after_restart and set(chased.values()) == {1}
    finally:
        await asyncio.gather(*(s.stop() for s in running))
    assert await find_violations(conn) == []


async def _equal(found: Any, expected: list[tuple[str, str]]) -> bool:
    return await found == expected


async def _all_sequenced(conn: Any) -> bool:
    return await conn.fetchval("SELECT count(*) FROM feed WHERE seq IS NULL") == 0
