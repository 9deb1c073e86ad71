"""Helpers the HTTP tests share: the two sides of a trade, the trade routes called
with the status each must answer, and a book's state as stored."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import ADMIN, trade_body


def sell(trade_id: str = "A-1", **overrides: Any) -> dict[str, Any]:
    """BANKA sells to BANKB."""
    return trade_body(trade_id, **overrides)


def buy(trade_id: str = "B-1", **overrides: Any) -> dict[str, Any]:
    """BANKB buys from BANKA: the mirror of `sell()`."""
    return trade_body(trade_id, **{"counterparty": "BANKA", "side": "buy",
                                   "attributes": {}, **overrides})


async def post(client, headers, body) -> dict[str, Any]:
    resp = await client.post("/v1/trades", json=body, headers=headers)
    assert resp.status in (200, 201), await resp.text()
    return await resp.json()


async def get(client, headers, trade_id) -> dict[str, Any]:
    resp = await client.get(f"/v1/trades/{trade_id}", headers=headers)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def versions(client, headers, trade_id) -> list[dict[str, Any]]:
    resp = await client.get(f"/v1/trades/{trade_id}/versions", headers=headers)
    assert resp.status == 200, await resp.text()
    return (await resp.json())["versions"]


async def amend(client, headers, body) -> dict[str, Any]:
    """Amend against whatever version is current."""
    current = await get(client, headers, body["trade_id"])
    resp = await client.put(f"/v1/trades/{body['trade_id']}", json=body,
                            headers={**headers, "If-Match": f'"{current["version"]}"'})
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def cancel(client, headers, trade_id) -> dict[str, Any]:
    """Cancel whatever version is current."""
    current = await get(client, headers, trade_id)
    resp = await client.delete(f"/v1/trades/{trade_id}",
                               headers={**headers, "If-Match": f'"{current["version"]}"'})
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def put_rules(client, product: str = "XAU", **body: Any) -> dict[str, Any]:
    resp = await client.put(f"/v1/rules/{product}", json=body, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    return await resp.json()


def assert_matched(ours: dict, theirs: dict) -> None:
    """Both sides matched to each other: one match_id, each naming the other's version."""
    assert ours["status"] == theirs["status"] == "matched"
    assert ours["match"]["match_id"] == theirs["match"]["match_id"]
    assert ours["match"]["counterparty_trade_id"] == theirs["trade_id"]
    assert ours["match"]["counterparty_version"] == theirs["version"]
    assert theirs["match"]["counterparty_trade_id"] == ours["trade_id"]
    assert theirs["match"]["counterparty_version"] == ours["version"]


async def book_state(conn, participant: str) -> dict[str, tuple]:
    """A participant's trades as stored, by trade_id: the latest version's number, status,
    matched counterparty trade and mismatches (to compare two books traded alike)."""
    rows = await conn.fetch(
        "SELECT trade_id, version, status, match_counterparty_trade_id, mismatches "
        "FROM trades WHERE latest AND participant = $1", participant)
    return {r["trade_id"]: (r["version"], r["status"], r["match_counterparty_trade_id"],
                            json.loads(r["mismatches"]) if isinstance(r["mismatches"], str)
                            else r["mismatches"]) for r in rows}
