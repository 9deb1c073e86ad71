"""Cut-offs through HTTP: product rules carry one, and a bad one is 422 naming the field."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kevin.engine.service import TradeService
from tests.conftest import ADMIN, trade_body

CUTOFF: dict[str, Any] = {"business_days": 1, "time": "16:30", "timezone": "Europe/London",
                          "calendar": "GB"}


async def test_product_rules_store_a_cutoff_and_old_bodies_stay(client):
    resp = await client.put("/v1/rules/XAU", json={"cutoff": CUTOFF}, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["cutoff"] == CUTOFF
    got = await (await client.get("/v1/rules/XAU", headers=ADMIN)).json()
    assert got["cutoff"] == CUTOFF and got["version"] == 1
    resp = await client.put("/v1/rules/XAU", json={"price_tolerance": {"abs": "1"}},
                            headers=ADMIN)
    body = await resp.json()
    assert resp.status == 200 and "cutoff" not in body, body


@pytest.mark.parametrize(("change", "field"), [
    ({"time": "24:00"}, "cutoff.time"),
    ({"timezone": "Mars/Olympus"}, "cutoff.timezone"),
    ({"calendar": "QQ"}, "cutoff.calendar"),
    ({"business_days": -1}, "cutoff.business_days"),
])
async def test_bad_cutoff_in_product_rules_is_422_naming_the_field(client, change, field):
    resp = await client.put("/v1/rules/XAU", json={"cutoff": {**CUTOFF, **change}},
                            headers=ADMIN)
    body = await resp.json()
    assert resp.status == 422, body
    assert body["error"] == "validation_failed"
    assert field in [d["field"] for d in body["details"]], body["details"]
    assert (await client.get("/v1/rules/XAU", headers=ADMIN)).status == 404


# --- ageing: a clock-controlled scenario through cut-offs ----------------------------------

XAU_CUTOFF = {"business_days": 1, "time": "17:00", "timezone": "Europe/London",
              "calendar": "GB"}
PROFILE = {"participants": ["BANKA", "BANKB"], "product": "XAU", "cutoff": XAU_CUTOFF}


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 10, 26, 12, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def at(self, text: str) -> None:
        self.now = datetime.fromisoformat(text)


def ours(trade_id: str, trade_date: str, **overrides: Any) -> dict[str, Any]:
    return trade_body(trade_id, trade_date=trade_date, settlement_date=trade_date,
                      **overrides)


def theirs(trade_id: str, trade_date: str, **overrides: Any) -> dict[str, Any]:
    return ours(trade_id, trade_date, counterparty="BANKA", side="buy", **overrides)


async def submit(client: Any, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/v1/trades", json=body, headers=headers)
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def read(client: Any, headers: dict[str, str], trade_id: str,
               as_of: str | None = None) -> dict[str, Any]:
    params = {"as_of": as_of} if as_of else {}
    resp = await client.get(f"/v1/trades/{trade_id}", headers=headers, params=params)
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


async def overdue_ids(client: Any, headers: dict[str, str], path: str,
                      flag: str = "true", limit: int = 1000) -> list[str]:
    """Every trade_id of the filtered list, following next_cursor page by page."""
    found: list[str] = []
    params: dict[str, Any] = {"overdue": flag, "limit": limit}
    while True:
        resp = await client.get(path, headers=headers, params=params)
        assert resp.status == 200, await resp.text()
        page = await resp.json()
        found += [t["trade_id"] for t in page["trades"]]
        if page["next_cursor"] is None:
            return found
        params["cursor"] = page["next_cursor"]


async def test_overdue_through_cutoffs_dst_and_holidays(client, service: TradeService, banks):
    bank_a, bank_b = banks
    clock = Clock()
    service.clock = clock

    # Submitted before any cut-off is in force: as of then, no cut-off.
    late = await submit(client, bank_a, ours("A-LATE", "2026-10-23"))
    assert late["status"] == "unmatched"
    before_profile = datetime.now(UTC).isoformat()
    resp = await client.put("/v1/profiles/a-b-xau", json=PROFILE, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    resp = await client.put("/v1/rules/XAG", json={"cutoff": {
        "business_days": 0, "time": "13:00", "timezone": "America/New_York",
        "calendar": "US"}}, headers=ADMIN)
    assert resp.status == 200, await resp.text()

    # Friday 2026-10-23 + 1 GB business day = Monday 26th, after the clocks went back on
    # Sunday: 17:00 GMT = 17:00 UTC (in BST it would have been 16:00 UTC).
    dst = await submit(client, bank_a, ours("A-DST", "2026-10-23"))
    # Thursday 2026-12-24 + 1: Christmas (Fri) and Boxing Day (substitute, Mon 28th) are
    # GB holidays, so Tuesday 29th 17:00 GMT.
    xmas = await submit(client, bank_a, ours("A-XMAS", "2026-12-24"))
    await submit(client, bank_a, ours("A-EARLY", "2026-10-23", price="1001"))
    await submit(client, bank_b, theirs("B-EARLY", "2026-10-23", price="1001"))
    await submit(client, bank_a, ours("A-MM", "2026-10-23", quantity="7"))
    mismatched = await submit(client, bank_b, theirs("B-MM", "2026-10-23", quantity="8"))
    assert mismatched["status"] == "mismatched"
    # XAG: the product's rules decide (the profile is for XAU only): T+0 13:00 New York
    # on Friday 2026-10-23 is 17:00 UTC (EDT).
    await submit(client, bank_a, ours("A-XAG", "2026-10-23", product="XAG"))
    # XPT: neither a profile nor rules: no cut-off, never overdue.
    await submit(client, bank_a, ours("A-XPT", "2026-10-23", product="XPT"))
    after_profile = datetime.now(UTC).isoformat()

    assert "cutoff_at" not in dst and "overdue" not in dst  # a write returns the version
    assert (await read(client, bank_a, "A-DST"))["cutoff_at"] == "2026-10-26T17:00:00.000000Z"
    assert (await read(client, bank_a, "A-XMAS"))["cutoff_at"] == "2026-12-29T17:00:00.000000Z"
    assert (await read(client, bank_a, "A-XAG"))["cutoff_at"] == "2026-10-23T17:00:00.000000Z"
    xpt = await read(client, bank_a, "A-XPT")
    assert xpt["cutoff_at"] is None and xpt["overdue"] is False
    del xmas

    # Monday 16:30 UTC: past 17:00 BST but before 17:00 GMT, so not overdue yet.
    clock.at("2026-10-26T16:30:00+00:00")
    assert (await read(client, bank_a, "A-DST"))["overdue"] is False
    assert await overdue_ids(client, bank_a, "/v1/trades") == ["A-XAG"]
    # At the cut-off itself: still in time.
    clock.at("2026-10-26T17:00:00+00:00")
    assert (await read(client, bank_a, "A-DST"))["overdue"] is False
    # Just after it: the unmatched and the mismatched are overdue, the matched is not.
    clock.at("2026-10-26T17:00:00.000001+00:00")
    assert (await read(client, bank_a, "A-DST"))["overdue"] is True
    early = await read(client, bank_a, "A-EARLY")
    assert early["status"] == "matched" and early["overdue"] is False
    assert early["cutoff_at"] == "2026-10-26T17:00:00.000000Z"
    assert await overdue_ids(client, bank_a, "/v1/trades") == \
        ["A-DST", "A-LATE", "A-MM", "A-XAG"]
    # Paged one at a time through the computed filter: the same trades, none twice.
    assert await overdue_ids(client, bank_a, "/v1/trades", limit=1) == \
        ["A-DST", "A-LATE", "A-MM", "A-XAG"]
    assert await overdue_ids(client, bank_a, "/v1/trades", "false") == \
        ["A-EARLY", "A-XMAS", "A-XPT"]
    assert await overdue_ids(client, bank_b, "/v1/trades") == ["B-MM"]
    # BANKB sees BANKA's open trades naming it, overdue ones only.
    assert await overdue_ids(client, bank_b, "/v1/alleged") == \
        ["A-DST", "A-LATE", "A-MM", "A-XAG"]
    assert await overdue_ids(client, bank_b, "/v1/alleged", limit=2) == \
        ["A-DST", "A-LATE", "A-MM", "A-XAG"]

    # Matched after the cut-off: no longer overdue (a read now), overdue as it was then.
    matched_late = await submit(client, bank_b, theirs("B-LATE", "2026-10-23"))
    assert matched_late["status"] == "matched"
    now_late = await read(client, bank_a, "A-LATE")
    assert now_late["status"] == "matched" and now_late["overdue"] is False
    then = await read(client, bank_a, "A-LATE", as_of=after_profile)
    assert then["version"] < now_late["version"]
    assert then["status"] in ("unmatched", "mismatched")
    assert then["cutoff_at"] == "2026-10-26T17:00:00.000000Z" and then["overdue"] is True
    # Before the profile was put, nothing gave XAU a cut-off.
    first = await read(client, bank_a, "A-LATE", as_of=before_profile)
    assert first["cutoff_at"] is None and first["overdue"] is False

    # The holiday: Monday 28th December is Boxing Day's substitute, so the cut-off is on
    # Tuesday; not overdue on Monday evening, overdue on Tuesday after 17:00.
    clock.at("2026-12-28T23:00:00+00:00")
    assert (await read(client, bank_a, "A-XMAS"))["overdue"] is False
    clock.at("2026-12-29T17:00:01+00:00")
    assert (await read(client, bank_a, "A-XMAS"))["overdue"] is True
    assert "A-XMAS" in await overdue_ids(client, bank_a, "/v1/trades")


async def test_overdue_flag_must_be_true_or_false(client, banks):
    bank_a, _ = banks
    for path in ("/v1/trades", "/v1/alleged"):
        resp = await client.get(path, headers=bank_a, params={"overdue": "yes"})
        body = await resp.json()
        assert resp.status == 422, body
        assert [d["field"] for d in body["details"]] == ["overdue"]


async def test_overdue_trades_by_product_metric(client, banks):
    """Read at scrape from the database's clock: trade dates long past are overdue, one
    in the future is not, matched trades and products without a cut-off never are."""
    bank_a, bank_b = banks
    resp = await client.put("/v1/profiles/a-b-xau", json=PROFILE, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    await client.put("/v1/rules/XAG", json={"cutoff": XAU_CUTOFF}, headers=ADMIN)
    await submit(client, bank_a, ours("A-1", "2026-10-23"))
    await submit(client, bank_a, ours("A-2", "2026-10-22", quantity="5"))
    await submit(client, bank_a, ours("A-3", "2099-01-05"))
    await submit(client, bank_a, ours("A-4", "2026-10-21", quantity="9"))
    matched = await submit(client, bank_b, theirs("B-4", "2026-10-21", quantity="9"))
    assert matched["status"] == "matched"
    await submit(client, bank_b, theirs("B-G", "2026-10-23", product="XAG"))
    await submit(client, bank_a, ours("A-P", "2026-10-23", product="XPT"))

    def overdue(text: str) -> dict[str, float]:
        return {sample.labels["product"]: sample.value
                for family in text_string_to_metric_families(text)
                if family.name == "kevin_overdue_trades" for sample in family.samples}

    resp = await client.get("/metrics")
    assert resp.status == 200
    assert overdue(await resp.text()) == {"XAU": 2.0, "XAG": 1.0, "XPT": 0.0}
    # Once the overdue XAG trade is matched, its product reads 0, not its last count.
    await submit(client, bank_a, ours("A-G", "2026-10-23", product="XAG"))
    assert overdue(await (await client.get("/metrics")).text()) == \
        {"XAU": 2.0, "XAG": 0.0, "XPT": 0.0}
