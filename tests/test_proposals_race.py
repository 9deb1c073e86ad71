"""Deciding a proposal under real concurrency, across two `kevin serve` processes: two
accepts by the counterparty and a withdraw by the proposer at the same instant — exactly
one wins, and the trades show the winner's outcome and nothing else."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from kevin.store.invariants import find_violations
from tests.conftest import ADMIN_TOKEN, bearer, trade_body
from tests.processes import Server, run_cli

pytestmark = pytest.mark.slow

ROUNDS = 12


async def test_two_accepts_and_a_withdraw_at_once_exactly_one_wins(db_url, conn,
                                                                     tmp_path: Path):
    settings = {"KEVIN_DATABASE_URL": db_url, "KEVIN_ADMIN_TOKEN": ADMIN_TOKEN}
    keys = {}
    for name in ("BANKA", "BANKB"):
        done = run_cli("participant", "add", name, **settings)
        assert done.returncode == 0, done.stderr
        keys[name] = bearer(done.stdout.strip())
    servers = [Server(tmp_path / f"serve-{i}.log", **settings).start() for i in range(2)]
    try:
        await asyncio.gather(*(s.wait_ready() for s in servers))
        first, second = (s.url for s in servers)
        async with aiohttp.ClientSession() as session:

            async def call(url: str, who: str, body: dict | None = None) -> tuple[int, dict]:
                async with session.post(url, json=body, headers=keys[who]) as resp:
                    return resp.status, await resp.json()

            outcomes = []
            for n in range(ROUNDS):
                assert (await call(f"{first}/v1/trades", "BANKA",
                                   trade_body(f"A-{n}", price="1000.25")))[0] == 201
                assert (await call(f"{second}/v1/trades", "BANKB",
                                   trade_body(f"B-{n}", counterparty="BANKA", side="buy",
                                              price="1001.00")))[0] == 201
                status, proposal = await call(f"{first}/v1/proposals", "BANKA", {
                    "trade_id": f"A-{n}", "kind": "match",
                    "counterparty_trade_id": f"B-{n}"})
                assert status == 201, proposal
                path = f"/v1/proposals/{proposal['proposal_id']}"
                # Alternate which process gets which call, round by round.
                urls = (first, second) if n % 2 == 0 else (second, first)
                results = await asyncio.gather(
                    call(f"{urls[0]}{path}/accept", "BANKB"),
                    call(f"{urls[1]}{path}/accept", "BANKB"),
                    call(f"{urls[n % 2]}{path}/withdraw", "BANKA"))
                statuses = [status for status, _ in results]
                assert sorted(statuses) == [200, 409, 409], results
                for status, body in results:
                    if status == 409:
                        assert body["error"] == "proposal_not_open"
                winner = next(body for status, body in results if status == 200)
                outcomes.append(winner["state"])
                trade_status = await conn.fetchval(
                    "SELECT status FROM trades WHERE latest AND participant = 'BANKA' "
                    "AND trade_id = $1", f"A-{n}")
                versions = await conn.fetchval(
                    "SELECT count(*) FROM proposals WHERE proposal_id = $1",
                    winner["proposal_id"])
                assert versions == 2  # open, then exactly one decision
                if winner["state"] == "accepted":
                    assert trade_status == "matched"
                else:
                    assert winner["state"] == "withdrawn" and trade_status == "mismatched"
            assert set(outcomes) <= {"accepted", "withdrawn"}
    finally:
        await asyncio.gather(*(s.stop() for s in servers))
    assert await find_violations(conn) == []
