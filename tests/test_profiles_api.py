"""Matching profiles through HTTP: versioned, append-only, one live claim per (pair,
product), bad input named per field."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from tests.conftest import ADMIN, Api

PROFILE: dict[str, Any] = {
    "participants": ["BANKB", "BANKA"], "product": "XAU",
    "fields": {"price": {"pct": "0.10", "max_abs": "1.00"},
               "quantity": {"range": {"below": "0", "above": "5"}},
               "settlement_date": {"business_days": 1, "calendar": "GB"},
               "location": {"equivalent": [["LDN", "LONDON"]]}},
    "matched_cancel": "by_agreement",
    "cutoff": {"business_days": 0, "time": "17:00", "timezone": "Europe/London",
               "calendar": "GB"},
}


async def put(client: Any, name: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    resp = await client.put(f"/v1/profiles/{name}", json=body, headers=ADMIN)
    return resp.status, await resp.json()


async def test_put_get_versions_as_of_and_retire(client, banks):
    status, v1 = await put(client, "a-b-gold", PROFILE)
    assert status == 200, v1
    assert v1["name"] == "a-b-gold" and v1["version"] == 1 and v1["retired"] is False
    assert v1["participants"] == ["BANKA", "BANKB"]  # one spelling per pair
    assert v1["fields"] == PROFILE["fields"] and v1["cutoff"] == PROFILE["cutoff"]
    assert v1["matched_cancel"] == "by_agreement"

    status, v2 = await put(client, "a-b-gold", {**PROFILE, "fields": {"price": {"abs": "2"}}})
    assert status == 200 and v2["version"] == 2
    assert v2["fields"] == {"price": {"abs": "2"}, "quantity": "exact",
                            "settlement_date": {"days": 0}, "location": "exact"}

    resp = await client.get("/v1/profiles/a-b-gold", headers=ADMIN)
    assert resp.status == 200 and resp.headers["ETag"] == '"2"'
    assert (await resp.json())["version"] == 2
    resp = await client.get("/v1/profiles/a-b-gold", params={"as_of": v1["recorded_at"]},
                            headers=ADMIN)
    assert (await resp.json())["fields"] == PROFILE["fields"]
    resp = await client.get("/v1/profiles/a-b-gold",
                            params={"as_of": "2000-01-01T00:00:00Z"}, headers=ADMIN)
    assert resp.status == 404

    resp = await client.get("/v1/profiles", headers=ADMIN)
    listed = await resp.json()
    assert [p["name"] for p in listed["profiles"]] == ["a-b-gold"]
    assert listed["next_cursor"] is None

    resp = await client.delete("/v1/profiles/a-b-gold", headers=ADMIN)
    retired = await resp.json()
    assert resp.status == 200 and retired["version"] == 3 and retired["retired"] is True
    resp = await client.get("/v1/profiles/a-b-gold", headers=ADMIN)
    assert resp.status == 404 and (await resp.json())["details"]["retired_version"] == 3
    resp = await client.get("/v1/profiles/a-b-gold", params={"as_of": v2["recorded_at"]},
                            headers=ADMIN)
    assert (await resp.json())["version"] == 2  # history stays
    assert (await (await client.get("/v1/profiles", headers=ADMIN)).json())["profiles"] == []
    resp = await client.get("/v1/profiles", params={"as_of": v2["recorded_at"]},
                            headers=ADMIN)
    assert [p["version"] for p in (await resp.json())["profiles"]] == [2]
    resp = await client.delete("/v1/profiles/a-b-gold", headers=ADMIN)
    assert resp.status == 404
    # Put again after retirement: the profile lives on as version 4.
    status, v4 = await put(client, "a-b-gold", PROFILE)
    assert status == 200 and v4["version"] == 4


async def test_a_second_profile_for_the_same_pair_and_product_is_409(client, banks):
    assert (await put(client, "first", PROFILE))[0] == 200
    status, body = await put(client, "second", {**PROFILE, "participants": ["BANKA", "BANKB"]})
    assert status == 409 and body["error"] == "profile_claimed"
    assert body["details"] == {"participants": ["BANKA", "BANKB"], "product": "XAU",
                               "claimed_by": "first"}
    # Another product, or every product ("*"), is another claim.
    assert (await put(client, "silver", {**PROFILE, "product": "XAG"}))[0] == 200
    assert (await put(client, "all", {**PROFILE, "product": "*"}))[0] == 200
    assert (await put(client, "all-2", {**PROFILE, "product": "*"}))[0] == 409
    # Once the holder retires (or moves to another product), the claim is free.
    await client.delete("/v1/profiles/first", headers=ADMIN)
    assert (await put(client, "second", PROFILE))[0] == 200


async def test_concurrent_claims_of_one_pair_and_product_leave_exactly_one(client, banks):
    results = await asyncio.gather(*(put(client, f"racer-{i}", PROFILE) for i in range(8)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] + [409] * 7, results
    listed = await (await client.get("/v1/profiles", headers=ADMIN)).json()
    assert len(listed["profiles"]) == 1


@pytest.mark.parametrize(("change", "field"), [
    ({"participants": ["BANKA", "NOBODY"]}, "participants.1"),
    ({"participants": ["BANKA", "BANKA"]}, "participants"),
    ({"participants": ["BANKA"]}, "participants.1"),
    ({"product": "no spaces"}, "product"),
    ({"fields": {"price": {"abs": "-1"}}}, "fields.price"),
    ({"fields": {"price": {"pct": "1", "abs": "1"}}}, "fields.price"),
    ({"fields": {"quantity": {"range": {"below": "1"}}}}, "fields.quantity"),
    ({"fields": {"settlement_date": {"business_days": 1, "calendar": "QQ"}}},
     "fields.settlement_date.calendar"),
    ({"fields": {"location": {"equivalent": [["LDN"]]}}}, "fields.location"),
    ({"fields": {"currency": "ignore"}}, "fields.currency"),
    ({"matched_cancel": "sometimes"}, "matched_cancel"),
    ({"cutoff": {**PROFILE["cutoff"], "timezone": "Mars/Olympus"}}, "cutoff.timezone"),
    ({"cutoff": {**PROFILE["cutoff"], "time": "25:00"}}, "cutoff.time"),
])
async def test_bad_profiles_are_422_naming_the_field(client, banks, change, field):
    status, body = await put(client, "bad", {**PROFILE, **change})
    assert status == 422, body
    assert body["error"] == "validation_failed"
    assert field in [d["field"] for d in body["details"]], body["details"]
    assert (await client.get("/v1/profiles/bad", headers=ADMIN)).status == 404


async def test_bad_names_and_who_may_touch_profiles(client, api: Api, banks):
    bank_a, _ = banks
    assert (await put(client, "no spaces here", PROFILE))[0] == 422
    assert (await client.get("/v1/profiles/nothing", headers=ADMIN)).status == 404
    for method, path in [("put", "/v1/profiles/x"), ("get", "/v1/profiles/x"),
                         ("delete", "/v1/profiles/x"), ("get", "/v1/profiles")]:
        resp = await getattr(client, method)(path, json=PROFILE, headers=bank_a)
        assert resp.status == 403, (method, path)
        resp = await getattr(client, method)(path, json=PROFILE)
        assert resp.status == 401


async def test_the_listing_pages_by_name(client, api: Api, banks):
    await api.participant("BANKC")
    for name, product in [("p1", "XAU"), ("p2", "XAG"), ("p3", "XPT")]:
        assert (await put(client, name, {**PROFILE, "product": product}))[0] == 200
    resp = await client.get("/v1/profiles", params={"limit": "2"}, headers=ADMIN)
    first = await resp.json()
    assert [p["name"] for p in first["profiles"]] == ["p1", "p2"]
    resp = await client.get("/v1/profiles", params={"limit": "2",
                                                    "cursor": first["next_cursor"]},
                            headers=ADMIN)
    second = await resp.json()
    assert [p["name"] for p in second["profiles"]] == ["p3"] and second["next_cursor"] is None
    resp = await client.get("/v1/profiles", params={"cursor": "!!"}, headers=ADMIN)
    assert resp.status == 422


async def test_profiles_are_append_only_in_the_database(client, banks, db_url):
    assert (await put(client, "kept", PROFILE))[0] == 200
    conn = await asyncpg.connect(db_url)
    try:
        with pytest.raises(asyncpg.RestrictViolationError):
            await conn.execute("UPDATE profiles SET product = 'XAG'")
        with pytest.raises(asyncpg.RestrictViolationError):
            await conn.execute("DELETE FROM profiles")
        with pytest.raises(asyncpg.RestrictViolationError):
            await conn.execute("TRUNCATE profiles")
    finally:
        await conn.close()


async def test_the_profile_endpoints_are_in_the_openapi_document(client):
    spec = await (await client.get("/openapi.json")).json()
    assert set(spec["paths"]["/v1/profiles/{name}"]) >= {"put", "get", "delete"}
    assert "get" in spec["paths"]["/v1/profiles"]
    price = spec["components"]["schemas"]["AmountTolerance"]
    assert {"enum": ["exact", "ignore"]} in price["oneOf"]
