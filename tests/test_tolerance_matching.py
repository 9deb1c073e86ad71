"""Every tolerance form through HTTP, matched by the PostgreSQL book's candidate
statement: product rules in the ``fields`` spelling, on single submissions and batches."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ADMIN
from tests.test_batch_api import batch
from tests.test_matching_api import buy, get, post, sell


async def put_fields(client, fields: dict[str, Any], product: str = "XAU") -> dict[str, Any]:
    resp = await client.put(f"/v1/rules/{product}", json={"fields": fields}, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def status_of(client, headers, trade_id: str) -> str:
    return (await get(client, headers, trade_id))["status"]


@pytest.mark.parametrize(("fields", "theirs", "expected"), [
    ({"price": {"pct": "0.10", "max_abs": "1.00"}}, {"price": "1001.25"}, "matched"),
    ({"price": {"pct": "0.10", "max_abs": "1.00"}}, {"price": "1001.26"}, "mismatched"),
    ({"price": {"pct": "1", "max_abs": "0.50"}}, {"price": "1000.76"}, "mismatched"),
    ({"price": {"bps": "10"}}, {"price": "999.25"}, "matched"),
    ({"price": "ignore"}, {"price": "1"}, "matched"),
    ({"price": "exact"}, {"price": "1000.26"}, "mismatched"),
    ({"quantity": {"pct": "5"}}, {"quantity": "105"}, "matched"),
    ({"quantity": {"abs": "4"}}, {"quantity": "105"}, "mismatched"),
    # Christmas 2026: Friday 24th → the next GB business day is Tuesday 29th.
    ({"settlement_date": {"business_days": 1, "calendar": "GB"}},
     {"settlement_date": "2026-12-29"}, "matched"),
    ({"settlement_date": {"business_days": 1, "calendar": "US"}},
     {"settlement_date": "2026-12-29"}, "mismatched"),
    ({"settlement_date": {"days": 5}}, {"settlement_date": "2026-12-29"}, "matched"),
    ({"location": {"equivalent": [["LDN", "LONDON"]]}}, {"location": "LONDON"}, "matched"),
    ({"location": {"equivalent": [["LDN", "LONDON"]]}}, {"location": "ZRH"}, "mismatched"),
    ({"location": "ignore"}, {"location": "ZRH"}, "matched"),
])
async def test_each_form_decides_a_single_submission(client, banks, fields, theirs,
                                                      expected):
    a, b = banks
    await put_fields(client, fields)
    base = {"price": "1000.25", "settlement_date": "2026-12-24"}
    await post(client, a, sell("A-1", **base))
    await post(client, b, buy("B-1", **{**base, **theirs}))
    assert await status_of(client, b, "B-1") == expected


async def test_a_range_is_seen_from_the_resting_trade(client, banks):
    """Quantity up to 5 over the resting trade's and none under: which side rests decides."""
    a, b = banks
    await put_fields(client, {"quantity": {"range": {"below": "0", "above": "5"}}})
    await post(client, a, sell("A-1", quantity="100"))  # rests first
    await post(client, b, buy("B-1", quantity="105"))
    assert await status_of(client, b, "B-1") == "matched"
    await post(client, b, buy("B-2", quantity="100"))  # rests first this time
    await post(client, a, sell("A-2", quantity="105"))
    assert await status_of(client, a, "A-2") == "matched"
    await post(client, a, sell("A-3", quantity="105", price="7"))  # rests first
    await post(client, b, buy("B-3", quantity="100", price="7"))  # 5 under: outside
    found = await get(client, b, "B-3")
    assert found["status"] == "mismatched"
    assert found["mismatches"][0]["fields"] == [
        {"field": "quantity", "ours": "100", "theirs": "105", "tolerance": "-0/+5"}]


async def test_fields_rules_are_stored_and_read_back_in_their_spelling(client, banks):
    stored = await put_fields(client, {"price": {"pct": "0.10", "max_abs": "1.00"}})
    assert stored["fields"]["price"] == {"pct": "0.10", "max_abs": "1.00"}
    assert "price_tolerance" not in stored
    resp = await client.get("/v1/rules/XAU", headers=ADMIN)
    assert (await resp.json())["fields"] == stored["fields"]
    resp = await client.put("/v1/rules/XAU", json={"fields": {}, "location": "ignore"},
                            headers=ADMIN)
    assert resp.status == 422
    resp = await client.put("/v1/rules/XAU", json={
        "fields": {"settlement_date": {"business_days": 1, "calendar": "NOPE"}}},
        headers=ADMIN)
    body = await resp.json()
    assert resp.status == 422
    assert "fields.settlement_date.calendar" in [d["field"] for d in body["details"]]
    # Today's spelling keeps working, and reads back as before.
    resp = await client.put("/v1/rules/XAU", json={"price_tolerance": {"bps": "5"}},
                            headers=ADMIN)
    assert (await resp.json())["price_tolerance"] == {"bps": "5"}
    assert (await resp.json())["quantity_tolerance"] == {"abs": "0"}


async def test_a_batch_decides_each_form_as_single_submissions_do(client, banks):
    a, b = banks
    await put_fields(client, {"price": {"pct": "0.10", "max_abs": "1.00"},
                              "location": {"equivalent": [["LDN", "LONDON"]]},
                              "settlement_date": {"business_days": 1, "calendar": "GB"}})
    await post(client, a, sell("A-1", settlement_date="2026-12-24"))
    await post(client, a, sell("A-2", settlement_date="2026-12-24", quantity="200"))
    results = await batch(client, b,
                          buy("B-1", price="1001.25", location="LONDON",
                              settlement_date="2026-12-29"),
                          buy("B-2", price="1001.26", quantity="200",
                              settlement_date="2026-12-24"))
    assert [r["result"] for r in results["results"]] == ["created", "created"]
    assert await status_of(client, b, "B-1") == "matched"
    assert await status_of(client, b, "B-2") == "mismatched"
