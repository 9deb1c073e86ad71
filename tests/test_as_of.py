"""As-of reads at exact boundaries: an instant equal to a version's recorded_at sees that
version (inclusive); one microsecond earlier sees the one before. Archived or hot alike."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from kevin.engine.archive import archive
from tests.conftest import ADMIN, as_read, trade_body

US = timedelta(microseconds=1)


async def _history(client: Any, a: dict[str, str]) -> list[dict[str, Any]]:
    await client.post("/v1/trades", json=trade_body("B-1"), headers=a)
    await client.put("/v1/trades/B-1", json=trade_body("B-1", price="1001"),
                     headers={**a, "If-Match": '"1"'})
    await client.delete("/v1/trades/B-1", headers={**a, "If-Match": '"2"'})
    await client.post("/v1/trades", json=trade_body("B-2", product="XAG"), headers=a)
    resp = await client.get("/v1/trades/B-1/versions", headers=a)
    return (await resp.json())["versions"]


@pytest.mark.parametrize("archived", [False, True], ids=["hot", "archived"])
async def test_list_as_of_is_inclusive_at_each_version(client, banks, pool, conn, archived):
    a, _ = banks
    v1, v2, v3 = await _history(client, a)
    b2 = (await (await client.get("/v1/trades/B-2", headers=a)).json())
    if archived:
        report = await archive(pool, await conn.fetchval("SELECT clock_timestamp()"))
        assert report.moved == 2

    async def listed(instant: datetime, **params: str) -> list[tuple[str, int, str]]:
        query = {"as_of": instant.isoformat(), **params}
        page = await (await client.get("/v1/trades", params=query, headers=a)).json()
        return [(t["trade_id"], t["version"], t["status"]) for t in page["trades"]]

    at = [datetime.fromisoformat(v["recorded_at"]) for v in (v1, v2, v3)]
    b2_at = datetime.fromisoformat(b2["recorded_at"])
    assert await listed(at[0] - US) == []
    assert await listed(at[0]) == [("B-1", 1, "unmatched")]
    assert await listed(at[1] - US) == [("B-1", 1, "unmatched")]
    assert await listed(at[1]) == [("B-1", 2, "unmatched")]
    assert await listed(at[2] - US, status="cancelled") == []
    assert await listed(at[2], status="cancelled") == [("B-1", 3, "cancelled")]
    assert await listed(at[2], status="unmatched") == []
    assert await listed(b2_at - US) == [("B-1", 3, "cancelled")]
    assert await listed(b2_at) == [("B-1", 3, "cancelled"), ("B-2", 1, "unmatched")]
    assert await listed(b2_at, product="XAG") == [("B-2", 1, "unmatched")]
    # The full body at a boundary is the stored version itself.
    page = await client.get("/v1/trades", params={"as_of": v2["recorded_at"]}, headers=a)
    assert (await page.json())["trades"] == [as_read(v2)]
    # Pagination as of an instant walks the same answer.
    first = await (await client.get("/v1/trades", params={
        "as_of": b2["recorded_at"], "limit": "1"}, headers=a)).json()
    assert [t["trade_id"] for t in first["trades"]] == ["B-1"]
    second = await (await client.get("/v1/trades", params={
        "as_of": b2["recorded_at"], "limit": "1", "cursor": first["next_cursor"]},
        headers=a)).json()
    assert [t["trade_id"] for t in second["trades"]] == ["B-2"]
    assert second["next_cursor"] is None


@pytest.mark.parametrize("archived", [False, True], ids=["hot", "archived"])
async def test_trade_as_of_is_inclusive_and_404_before_it_existed(
        client, banks, pool, conn, archived):
    a, b = banks
    versions = await _history(client, a)
    if archived:
        await archive(pool, await conn.fetchval("SELECT clock_timestamp()"))
        assert await conn.fetchval("SELECT count(*) FROM trades_archive") == 2
    for version in versions:
        at = datetime.fromisoformat(version["recorded_at"])
        resp = await client.get("/v1/trades/B-1", params={"as_of": at.isoformat()}, headers=a)
        assert resp.status == 200 and await resp.json() == as_read(version)
        assert resp.headers["ETag"] == f'"{version["version"]}"'
        earlier = await client.get("/v1/trades/B-1", params={"as_of": (at - US).isoformat()},
                                   headers=a)
        if version["version"] == 1:
            assert earlier.status == 404
            assert (await earlier.json())["error"] == "not_found"
        else:
            assert (await earlier.json())["version"] == version["version"] - 1
    # The admin reads the same, naming the participant; the counterparty sees nothing.
    admin = await client.get("/v1/trades/B-1", params={
        "as_of": versions[1]["recorded_at"], "participant": "BANKA"}, headers=ADMIN)
    assert await admin.json() == as_read(versions[1])
    other = await client.get("/v1/trades/B-1", params={"as_of": versions[1]["recorded_at"]},
                             headers=b)
    assert other.status == 404
    history = await (await client.get("/v1/trades/B-1/versions", headers=a)).json()
    assert history["versions"] == versions


async def test_rules_as_of_is_inclusive_at_each_version(client):
    async def put(**body: Any) -> dict[str, Any]:
        resp = await client.put("/v1/rules/XAU", json=body, headers=ADMIN)
        assert resp.status == 200, await resp.text()
        return await resp.json()

    async def as_of(instant: datetime) -> tuple[int, dict[str, Any]]:
        resp = await client.get("/v1/rules/XAU", params={"as_of": instant.isoformat()},
                                headers=ADMIN)
        return resp.status, await resp.json()

    v1 = await put(price_tolerance={"abs": "0.50"})
    v2 = await put(price_tolerance={"bps": "2"}, location="ignore")
    at1, at2 = (datetime.fromisoformat(v["recorded_at"]) for v in (v1, v2))
    status, body = await as_of(at1 - US)
    assert status == 404 and body["error"] == "not_found"
    assert await as_of(at1) == (200, v1)
    assert await as_of(at2 - US) == (200, v1)
    assert await as_of(at2) == (200, v2)
    resp = await client.get("/v1/rules/XAU", params={"as_of": "2026-11-21T10:00:00"},
                            headers=ADMIN)
    assert resp.status == 422
