"""Cut-offs through HTTP: product rules carry one, and a bad one is 422 naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ADMIN

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
