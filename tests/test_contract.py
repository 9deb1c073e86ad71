"""The HTTP contract (docs/api.md), rule by rule, through HTTP against real PostgreSQL.

One focused test per statement of the contract, named after it, so a red test points at
the sentence it breaks. The section comments follow the contract's headings.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from kevin.api.app import create_app
from kevin.engine.service import TradeService
from kevin.store import database
from tests.conftest import ADMIN, as_read, bearer, trade_body, wait_for

JSON = {"Content-Type": "application/json"}
UTC_MICROS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
ERROR_KEYS = {"error", "message", "details"}


def mirror(trade_id: str = "B-1", **overrides: Any) -> dict[str, Any]:
    """BANKB's side of trade_body(): buys from BANKA."""
    return trade_body(trade_id, **{"counterparty": "BANKA", "side": "buy", **overrides})


def terms(body: dict[str, Any]) -> dict[str, Any]:
    """A body for PUT: the trade's terms without trade_id."""
    return {k: v for k, v in body.items() if k != "trade_id"}


async def error_of(resp: Any, status: int) -> dict[str, Any]:
    """The response is an error in the contract's shape with this status."""
    assert resp.status == status, (resp.status, await resp.text())
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == ERROR_KEYS, body
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["message"], str) and body["message"]
    return body


async def created(client: Any, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/v1/trades", json=body, headers=headers)
    assert resp.status in (200, 201), await resp.text()
    return await resp.json()


# --- Conventions -------------------------------------------------------------------------


async def test_json_in_json_out(client, banks):
    a, _ = banks
    for resp in (await client.post("/v1/trades", json=trade_body(), headers=a),
                 await client.get("/v1/trades/A-0001", headers=a),
                 await client.get("/v1/trades/NOPE", headers=a)):
        assert resp.content_type == "application/json"
    # A charset parameter on the request's content type is fine.
    resp = await client.post("/v1/trades", data=b'{"trade_id": "X"}',
                             headers={**a, "Content-Type": "application/json; charset=utf-8"})
    assert resp.status == 422


async def test_request_bodies_over_1_mib_are_413(client, banks, conn):
    a, _ = banks
    # Padded with JSON whitespace: a trade itself is at most 64 KiB (test_input_limits).
    text = json.dumps(trade_body()).encode()
    exactly = text + b" " * (1024 * 1024 - len(text))
    assert len(exactly) == 1024 * 1024
    resp = await client.post("/v1/trades", data=io.BytesIO(exactly), headers={**a, **JSON})
    assert resp.status == 201, await resp.text()  # 1 MiB is not over 1 MiB
    over = exactly.replace(b'"A-0001"', b'"A-0002"') + b" "
    assert len(over) == 1024 * 1024 + 1
    body = await error_of(await client.post("/v1/trades", data=io.BytesIO(over),
                                            headers={**a, **JSON}), 413)
    assert body["error"] == "payload_too_large"
    assert await conn.fetchval("SELECT count(*) FROM trades WHERE trade_id = 'A-0002'") == 0


async def test_decimal_fields_are_strings_in_responses(client, banks):
    a, b = banks
    await client.put("/v1/rules/XAU", json={"price_tolerance": {"abs": "0.50"},
                                            "quantity_tolerance": {"abs": "1"}}, headers=ADMIN)
    trade = await created(client, a, trade_body(quantity=100, price=1000.25))
    assert trade["quantity"] == "100" and trade["price"] == "1000.25"
    rules = await (await client.get("/v1/rules/XAU", headers=ADMIN)).json()
    assert rules["price_tolerance"] == {"abs": "0.50"}
    assert rules["quantity_tolerance"] == {"abs": "1"}
    mismatched = await created(client, b, mirror(price="1003.00"))
    assert mismatched["status"] == "mismatched"
    field = mismatched["mismatches"][0]["fields"][0]
    assert field == {"field": "price", "ours": "1003.00", "theirs": "1000.25",
                     "tolerance": "0.50"}
    alleged = await (await client.get("/v1/alleged", headers=a)).json()
    assert alleged["trades"][0]["price"] == "1003.00"
    assert alleged["trades"][0]["quantity"] == "100"


async def test_requests_accept_strings_or_json_numbers_parsed_exactly(client, banks, conn):
    a, b = banks
    # 0.1 + 0.2 is not 0.3 in binary floating point; as decimals it is.
    raw = (b'{"trade_id": "N-1", "counterparty": "BANKB", "side": "sell", "product": "XAU",'
           b' "quantity": 0.3, "price": 12345678901234567890.123456789012345678,'
           b' "currency": "USD", "trade_date": "2026-11-20", "settlement_date": "2026-11-24"}')
    resp = await client.post("/v1/trades", data=raw, headers={**a, **JSON})
    assert resp.status == 201, await resp.text()
    trade = await resp.json()
    assert trade["quantity"] == "0.3"
    assert trade["price"] == "12345678901234567890.123456789012345678"
    stored = await conn.fetchval("SELECT price FROM trades WHERE trade_id = 'N-1'")
    assert stored == Decimal("12345678901234567890.123456789012345678")
    # The other side as strings: the same values, so they match exactly (no tolerance).
    theirs = await created(client, b, mirror(
        "N-2", quantity="0.30", location=None, price="12345678901234567890.123456789012345678"))
    assert theirs["status"] == "matched"
    assert theirs["quantity"] == "0.30"  # the digits as given


@pytest.mark.parametrize("field", ["quantity", "price"])
async def test_non_finite_negative_or_zero_quantity_and_price_are_422(client, banks, field):
    a, _ = banks
    values: list[Any] = ["NaN", "Infinity", "-Infinity", "inf", "-1", "-0.01", "0", "0.000",
                         "-0", 0, -5, "abc", "", None, True, [], {}]
    for n, value in enumerate(values):
        resp = await client.post("/v1/trades", json=trade_body(f"X-{n}", **{field: value}),
                                 headers=a)
        body = await error_of(resp, 422)
        assert [d["field"] for d in body["details"]] == [field], (value, body)
    for n, literal in enumerate([b"NaN", b"Infinity", b"-Infinity", b"-1e3", b"0e0"]):
        raw = json.dumps(trade_body(f"L-{n}", **{field: "@"})).encode()
        resp = await client.post("/v1/trades", data=raw.replace(b'"@"', literal),
                                 headers={**a, **JSON})
        body = await error_of(resp, 422)
        assert [d["field"] for d in body["details"]] == [field], (literal, body)


async def test_timestamps_in_responses_are_utc_with_microseconds(client, banks):
    a, _ = banks
    trade = await created(client, a, trade_body())
    assert UTC_MICROS.match(trade["recorded_at"]), trade["recorded_at"]
    rules = await (await client.put("/v1/rules/XAU", json={}, headers=ADMIN)).json()
    assert UTC_MICROS.match(rules["recorded_at"]), rules["recorded_at"]
    history = await (await client.get("/v1/trades/A-0001/versions", headers=a)).json()
    assert all(UTC_MICROS.match(v["recorded_at"]) for v in history["versions"])
    replay = await (await client.post("/v1/replays", json={"since": "2026-01-01T00:00:00Z"},
                                      headers=ADMIN)).json()
    assert UTC_MICROS.match(replay["since"]), replay["since"]


async def test_rfc3339_timestamps_with_any_zone_are_accepted(client, banks):
    a, _ = banks
    trade = await created(client, a, trade_body())
    at = datetime.fromisoformat(trade["recorded_at"])
    spellings = [
        at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        at.strftime("%Y-%m-%dT%H:%M:%S.%fz"),
        at.astimezone(timezone(timedelta(hours=1))).isoformat(),
        at.astimezone(timezone(timedelta(hours=-5, minutes=-30))).isoformat(),
        at.astimezone(UTC).isoformat(),  # +00:00
        (at + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),  # no fraction
        (at + timedelta(seconds=1)).strftime("%Y-%m-%d %H:%M:%SZ"),  # RFC 3339 allows a space
    ]
    for spelling in spellings:
        resp = await client.get("/v1/trades/A-0001", params={"as_of": spelling}, headers=a)
        assert resp.status == 200, (spelling, await resp.text())
        assert (await resp.json())["version"] == 1
    # Typed into a URL unencoded, the offset's "+" arrives as a space: still understood.
    raw = at.astimezone(timezone(timedelta(hours=2))).isoformat()
    resp = await client.get(f"/v1/trades/A-0001?as_of={raw}", headers=a)
    assert resp.status == 200, await resp.text()


async def test_a_replay_since_beyond_the_calendar_is_422(client):
    resp = await client.post("/v1/replays", json={"since": "0001-01-01T00:00:00+01:00"},
                             headers=ADMIN)
    body = await error_of(resp, 422)
    assert body["details"][0]["field"] == "since"


async def test_timestamps_without_a_zone_or_not_rfc3339_are_422(client, banks):
    a, _ = banks
    await created(client, a, trade_body())
    for bad in ["2026-11-21T10:00:00", "2026-11-21", "yesterday", "", "2026-13-01T00:00:00Z",
                "2026-11-21T25:00:00Z"]:
        resp = await client.get("/v1/trades/A-0001", params={"as_of": bad}, headers=a)
        body = await error_of(resp, 422)
        assert body["details"][0]["field"] == "as_of", bad


async def test_dates_are_yyyy_mm_dd(client, banks):
    a, _ = banks
    trade = await created(client, a, trade_body())
    assert trade["trade_date"] == "2026-11-20" and trade["settlement_date"] == "2026-11-24"
    for n, bad in enumerate(["2026/11/20", "20-11-2026", "2026-11-31", "2026-1-5", "tomorrow"]):
        resp = await client.post("/v1/trades", json=trade_body(f"D-{n}", trade_date=bad),
                                 headers=a)
        body = await error_of(resp, 422)
        assert [d["field"] for d in body["details"]] == ["trade_date"], bad


async def test_every_error_has_the_contract_shape_and_status(client, banks):
    a, b = banks
    await created(client, a, trade_body())
    cases = [
        (400, client.post("/v1/trades", data=b"{", headers={**a, **JSON})),
        (401, client.get("/v1/trades")),
        (403, client.post("/v1/participants", json={"name": "X"}, headers=a)),
        (404, client.get("/v1/trades/NOPE", headers=a)),
        (409, client.post("/v1/trades", json=trade_body(price="1"), headers=a)),
        (412, client.put("/v1/trades/A-0001", json=terms(trade_body()),
                         headers={**a, "If-Match": '"9"'})),
        (415, client.post("/v1/trades", data=b"{}", headers={**a, "Content-Type": "text/plain"})),
        (422, client.post("/v1/trades", json=trade_body(side="long"), headers=a)),
        (428, client.put("/v1/trades/A-0001", json=terms(trade_body()), headers=a)),
    ]
    for status, request in cases:
        await error_of(await request, status)


async def test_malformed_json_is_400(client, banks):
    a, _ = banks
    for raw in [b"{", b"{'a': 1}", b'{"a": 1,}', b"\xff\xfe", b'{"a":1}{"b":2}', b"[1,", b""]:
        body = await error_of(await client.post("/v1/trades", data=raw, headers={**a, **JSON}),
                              400)
        assert body["error"] == "malformed_json", raw


async def test_no_or_bad_key_is_401(client, banks):
    a, _ = banks
    for headers in [{}, {"Authorization": "Bearer"}, {"Authorization": "Bearer nope"},
                    {"Authorization": "Basic dXNlcjpwYXNz"},
                    {"Authorization": a["Authorization"].replace("Bearer ", "Token ")},
                    {"Authorization": a["Authorization"] + "x"}]:
        body = await error_of(await client.get("/v1/trades", headers=headers), 401)
        assert body["error"] == "unauthorized"
    # The scheme is case-insensitive (RFC 9110).
    resp = await client.get("/v1/trades", headers={
        "Authorization": a["Authorization"].replace("Bearer", "bearer")})
    assert resp.status == 200


async def test_401_says_how_to_authenticate(client):
    resp = await client.get("/v1/trades")
    await error_of(resp, 401)
    assert resp.headers.get("WWW-Authenticate", "").startswith("Bearer")


async def test_wrong_content_type_is_415(client, banks):
    a, _ = banks
    raw = json.dumps(trade_body()).encode()
    for content_type in ["text/plain", "application/x-www-form-urlencoded", "application/xml",
                         "application/x-ndjson"]:
        resp = await client.post("/v1/trades", data=raw,
                                 headers={**a, "Content-Type": content_type})
        body = await error_of(resp, 415)
        assert body["error"] == "unsupported_media_type"
    resp = await client.put("/v1/trades/A-0001", data=raw,
                            headers={**a, "Content-Type": "text/plain", "If-Match": '"1"'})
    await error_of(resp, 415)
    resp = await client.post("/v1/participants", data=b'{"name": "BANKC"}', headers=ADMIN)
    await error_of(resp, 415)


async def test_validation_is_422_with_a_per_field_details_list(client, banks):
    a, _ = banks
    body = trade_body(side="long", currency="usd", quantity="-1")
    del body["product"]
    error = await error_of(await client.post("/v1/trades", json=body, headers=a), 422)
    assert error["error"] == "validation_failed"
    assert isinstance(error["details"], list)
    assert all(isinstance(d["field"], str) and isinstance(d["message"], str)
               for d in error["details"])
    assert {d["field"] for d in error["details"]} == {"side", "currency", "quantity", "product"}


async def test_if_match_missing_is_428(client, banks):
    a, _ = banks
    await created(client, a, trade_body())
    body = await error_of(await client.put("/v1/trades/A-0001", json=terms(trade_body()),
                                           headers=a), 428)
    assert body["error"] == "if_match_required"
    await error_of(await client.delete("/v1/trades/A-0001", headers=a), 428)


async def test_stale_if_match_is_412_with_the_current_version_in_details(client, banks):
    a, _ = banks
    await created(client, a, trade_body())
    await client.put("/v1/trades/A-0001", json=terms(trade_body(price="2")),
                     headers={**a, "If-Match": '"1"'})
    for stale in ['"1"', '"3"', '"0"']:
        for resp in (await client.put("/v1/trades/A-0001", json=terms(trade_body()),
                                      headers={**a, "If-Match": stale}),
                     await client.delete("/v1/trades/A-0001", headers={**a, "If-Match": stale})):
            body = await error_of(resp, 412)
            assert body["error"] == "version_conflict"
            assert body["details"] == {"current_version": 2}


async def test_an_if_match_that_names_no_version_is_412_never_500(client, banks):
    a, _ = banks
    await created(client, a, trade_body())
    for bad in ["garbage", '"abc"', '""', '"-1"', '"²"', '"99999999999999999999999"', 'W/"x"']:
        resp = await client.delete("/v1/trades/A-0001", headers={**a, "If-Match": bad})
        body = await error_of(resp, 412)
        assert body["details"] == {"current_version": 1}, bad
        assert "-1" not in body["message"]


async def test_503_when_the_database_is_unavailable(aiohttp_client):
    # A pool that connects lazily to a port nobody listens on.
    pool = await database.create_pool("postgresql://postgres@127.0.0.1:9/kevin", min_size=0)
    try:
        client = await aiohttp_client(create_app(TradeService(pool), "t"))
        resp = await client.post("/v1/participants", json={"name": "BANKA"},
                                 headers=bearer("t"))
        body = await error_of(resp, 503)
        assert body["error"] == "database_unavailable"
        await error_of(await client.get("/v1/trades", headers=bearer("some-key")), 503)
        ready = await client.get("/readyz")
        assert ready.status == 503
    finally:
        await pool.close()


async def test_etag_is_the_current_version(client, banks):
    a, _ = banks
    resp = await client.post("/v1/trades", json=trade_body(), headers=a)
    assert resp.status == 201 and resp.headers["ETag"] == '"1"'
    resp = await client.post("/v1/trades", json=trade_body(), headers=a)
    assert resp.status == 200 and resp.headers["ETag"] == '"1"'
    resp = await client.put("/v1/trades/A-0001", json=terms(trade_body(price="7")),
                            headers={**a, "If-Match": '"1"'})
    assert resp.headers["ETag"] == '"2"' and (await resp.json())["version"] == 2
    resp = await client.get("/v1/trades/A-0001", headers=a)
    assert resp.headers["ETag"] == '"2"'
    resp = await client.delete("/v1/trades/A-0001", headers={**a, "If-Match": '"2"'})
    assert resp.headers["ETag"] == '"3"'


async def test_if_match_takes_the_etag_as_given(client, banks):
    a, _ = banks
    first = await client.post("/v1/trades", json=trade_body(), headers=a)
    resp = await client.put("/v1/trades/A-0001", json=terms(trade_body(price="3")),
                            headers={**a, "If-Match": first.headers["ETag"]})
    assert resp.status == 200
    # A weak tag and the bare number name the same version; "*" is whatever is current
    # (RFC 9110): the trade exists, so the condition holds.
    resp = await client.put("/v1/trades/A-0001", json=terms(trade_body(price="4")),
                            headers={**a, "If-Match": 'W/"2"'})
    assert resp.status == 200
    resp = await client.put("/v1/trades/A-0001", json=terms(trade_body(price="5")),
                            headers={**a, "If-Match": "*"})
    assert resp.status == 200 and resp.headers["ETag"] == '"4"'
    resp = await client.delete("/v1/trades/A-0001", headers={**a, "If-Match": "*"})
    assert resp.status == 200 and (await resp.json())["status"] == "cancelled"
    await error_of(await client.delete("/v1/trades/NOPE", headers={**a, "If-Match": "*"}), 404)


# --- Auth --------------------------------------------------------------------------------


async def test_post_participants_returns_name_and_a_key_shown_once(client, conn):
    resp = await client.post("/v1/participants", json={"name": "BANKA"}, headers=ADMIN)
    assert resp.status == 201 and resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"name", "api_key"} and body["name"] == "BANKA"
    key = body["api_key"]
    assert isinstance(key, str) and len(key) >= 20
    ok = await client.get("/v1/trades", headers=bearer(key))
    assert ok.status == 200
    stored = repr([dict(r) for r in await conn.fetch("SELECT * FROM api_keys")])
    assert key not in stored
    body = await error_of(await client.post("/v1/participants", json={"name": "BANKA"},
                                            headers=ADMIN), 409)
    assert "api_key" not in str(body["details"])


async def test_participant_names_are_upper_alnum_underscore_1_to_32(client):
    for good in ["A", "BANK_1", "Z" * 32, "0"]:
        resp = await client.post("/v1/participants", json={"name": good}, headers=ADMIN)
        assert resp.status == 201, good
    for bad in ["", "bank", "BANK-1", "BANK 1", "Z" * 33, "BÄNK", 5, None]:
        resp = await client.post("/v1/participants", json={"name": bad}, headers=ADMIN)
        body = await error_of(resp, 422)
        assert body["details"][0]["field"] == "name", bad
    await error_of(await client.post("/v1/participants", json={}, headers=ADMIN), 422)
    await error_of(await client.post("/v1/participants", json={"name": "OK", "x": 1},
                                     headers=ADMIN), 422)


async def test_only_the_admin_creates_participants(client, banks):
    a, _ = banks
    await error_of(await client.post("/v1/participants", json={"name": "C"}, headers=a), 403)
    await error_of(await client.post("/v1/participants", json={"name": "C"}), 401)


async def test_without_an_admin_token_admin_endpoints_refuse_everyone(service, aiohttp_client):
    client = await aiohttp_client(create_app(service, None))
    for token in ["", "None", "null", "test-admin-token"]:
        resp = await client.post("/v1/participants", json={"name": "BANKA"},
                                 headers=bearer(token))
        assert resp.status == 401, token
    key = (await service.create_participant("BANKA")).api_key
    for method, path in [("POST", "/v1/participants"), ("PUT", "/v1/rules/XAU"),
                         ("GET", "/v1/rules/XAU"), ("POST", "/v1/admin/matches")]:
        resp = await client.request(method, path, json={}, headers=bearer(key))
        await error_of(resp, 403)


async def test_another_participants_trade_reads_404_on_every_route(client, banks):
    a, b = banks
    theirs = await created(client, a, trade_body("SECRET-1"))
    at = theirs["recorded_at"]

    async def answers(headers: dict[str, str], trade_id: str) -> list[tuple[int, str]]:
        out = []
        for method, path, kw in [
            ("GET", f"/v1/trades/{trade_id}", {}),
            ("GET", f"/v1/trades/{trade_id}", {"params": {"as_of": at}}),
            ("GET", f"/v1/trades/{trade_id}/versions", {}),
            ("GET", f"/v1/trades/{trade_id}", {"params": {"participant": "BANKA"}}),
            ("PUT", f"/v1/trades/{trade_id}", {"json": terms(mirror())}),
            ("DELETE", f"/v1/trades/{trade_id}", {}),
        ]:
            for if_match in ({}, {"If-Match": '"1"'}):
                resp = await client.request(method, path, headers={**headers, **if_match}, **kw)
                body = await error_of(resp, 404)
                out.append((resp.status, body["error"]))
        return out

    # Exactly what a trade that does not exist at all answers: existence is not leaked.
    assert await answers(b, "SECRET-1") == await answers(b, "NEVER-1")
    listed = await (await client.get("/v1/trades", headers=b)).json()
    assert "SECRET-1" not in str(listed)


async def test_match_details_show_only_the_counterpartys_trade_id_and_version(client, banks):
    a, b = banks
    await created(client, a, trade_body("A-1", attributes={"desk": "secret-desk-a"}))
    theirs = await created(client, b, mirror("B-1", attributes={"book": "secret-book-b"}))
    ours = await (await client.get("/v1/trades/A-1", headers=a)).json()
    assert ours["status"] == "matched"
    assert set(ours["match"]) == {"match_id", "counterparty_trade_id", "counterparty_version",
                                  "rules"}
    assert ours["match"]["rules"] == {"kind": "exact", "name": "XAU", "version": None}
    assert ours["match"]["counterparty_trade_id"] == "B-1"
    assert ours["match"]["counterparty_version"] == theirs["version"]
    assert "secret-book-b" not in str(ours) and "secret-desk-a" not in str(theirs)
    history = await (await client.get("/v1/trades/A-1/versions", headers=a)).json()
    assert "secret-book-b" not in str(history)


async def test_the_admin_reads_any_trade_with_participant_query(client, banks):
    a, _ = banks
    await created(client, a, trade_body())
    for path in ["/v1/trades/A-0001", "/v1/trades/A-0001/versions", "/v1/trades"]:
        resp = await client.get(path, params={"participant": "BANKA"}, headers=ADMIN)
        assert resp.status == 200, path
        assert "A-0001" in await resp.text()
    resp = await client.get("/v1/trades/A-0001", params={"participant": "BANKB"}, headers=ADMIN)
    await error_of(resp, 404)
    resp = await client.get("/v1/alleged", params={"participant": "BANKB"}, headers=ADMIN)
    assert [t["trade_id"] for t in (await resp.json())["trades"]] == ["A-0001"]


# --- Trades ------------------------------------------------------------------------------


async def test_trade_id_pattern(client, banks):
    a, _ = banks
    good = "aZ09._:-" + "x" * 56
    assert len(good) == 64
    resp = await client.post("/v1/trades", json=trade_body(good), headers=a)
    assert resp.status == 201 and resp.headers["Location"] == f"/v1/trades/{good}"
    assert (await client.get(f"/v1/trades/{good}", headers=a)).status == 200
    for bad in ["", "x" * 65, "Ä-1", "a b", "a/b", "日本", "a\u0000b", "ok\n", "a#b", 7, None]:
        resp = await client.post("/v1/trades", json=trade_body(bad), headers=a)
        body = await error_of(resp, 422)
        assert [d["field"] for d in body["details"]] == ["trade_id"], bad


async def test_a_trade_id_that_cannot_exist_reads_404(client, banks):
    a, _ = banks
    for path in ["/v1/trades/%C3%84-1", "/v1/trades/%00", "/v1/trades/" + "x" * 65,
                 "/v1/trades/%00/versions", "/v1/trades/a%20b"]:
        await error_of(await client.get(path, headers=a), 404)
        await error_of(await client.delete(path.removesuffix("/versions"),
                                           headers={**a, "If-Match": '"1"'}), 404)


async def test_trade_ids_are_unique_per_participant_only(client, banks):
    a, b = banks
    ours = await client.post("/v1/trades", json=trade_body("SAME-1"), headers=a)
    theirs = await client.post("/v1/trades", json=mirror("SAME-1", price="1"), headers=b)
    assert ours.status == theirs.status == 201
    assert (await (await client.get("/v1/trades/SAME-1", headers=a)).json())["price"] == "1000.25"
    assert (await (await client.get("/v1/trades/SAME-1", headers=b)).json())["price"] == "1"


async def test_the_participant_comes_from_the_key_never_the_body(client, banks):
    a, _ = banks
    resp = await client.post("/v1/trades", json=trade_body(participant="BANKB"), headers=a)
    assert resp.status in (201, 422)
    if resp.status == 201:
        assert (await resp.json())["participant"] == "BANKA"
    trade = await created(client, a, trade_body("A-2"))
    assert trade["participant"] == "BANKA"


async def test_location_and_attributes_are_optional_and_attributes_never_matched(client, banks):
    a, b = banks
    body = trade_body("A-1")
    del body["location"], body["attributes"]
    trade = await created(client, a, body)
    assert trade["location"] is None and trade["attributes"] == {}
    theirs = await created(client, b, mirror("B-1", location=None,
                                             attributes={"anything": [1, {"x": "y"}]}))
    assert theirs["status"] == "matched"
    assert theirs["attributes"] == {"anything": [1, {"x": "y"}]}


async def test_new_trade_is_201_with_the_trade_location_and_etag(client, banks):
    a, _ = banks
    resp = await client.post("/v1/trades", json=trade_body(), headers=a)
    assert resp.status == 201
    assert resp.headers["Location"] == "/v1/trades/A-0001"
    assert resp.headers["ETag"] == '"1"'
    trade = await resp.json()
    followed = await client.get(resp.headers["Location"], headers=a)
    assert await followed.json() == as_read(trade)


async def test_the_same_body_again_is_200_with_no_new_version(client, banks, conn):
    a, _ = banks
    first = await client.post("/v1/trades", json=trade_body(), headers=a)
    stored = await first.json()
    # The same values spelled differently (numbers for strings, keys reordered).
    again = dict(reversed(list(trade_body(quantity=100, price=Decimal("1000.250")).items())))
    raw = json.dumps(again, default=str).replace('"1000.250"', "1000.250")
    resp = await client.post("/v1/trades", data=raw.encode(), headers={**a, **JSON})
    assert resp.status == 200
    assert await resp.json() == stored
    assert resp.headers["ETag"] == '"1"'
    assert await conn.fetchval("SELECT count(*) FROM trades") == 1
    assert await conn.fetchval("SELECT count(*) FROM feed") == 1


async def test_same_trade_id_different_body_is_409_naming_the_fields(client, banks, conn):
    a, _ = banks
    await created(client, a, trade_body())
    resp = await client.post("/v1/trades", json=trade_body(price="1000.26", side="buy",
                                                           attributes={}), headers=a)
    body = await error_of(resp, 409)
    assert body["error"] == "exists_with_different_fields"
    assert set(body["details"]["fields"]) == {"price", "side", "attributes"}
    assert await conn.fetchval("SELECT count(*) FROM trades") == 1


async def test_the_trade_body_has_every_contract_field(client, banks):
    a, b = banks
    await created(client, a, trade_body())
    trade = await created(client, b, mirror())
    expected = {"trade_id", "participant", "version", "status", "counterparty", "side",
                "product", "quantity", "price", "currency", "trade_date", "settlement_date",
                "location", "attributes", "match", "mismatches", "reason", "recorded_at"}
    assert expected <= set(trade)
    assert trade["status"] in {"unmatched", "matched", "mismatched", "cancelled"}
    assert isinstance(trade["version"], int) and isinstance(trade["mismatches"], list)


async def test_match_is_null_unless_matched(client, banks):
    a, b = banks
    lone = await created(client, a, trade_body("A-1"))
    assert lone["status"] == "unmatched" and lone["match"] is None
    off = await created(client, b, mirror("B-1", price="999"))
    assert off["status"] == "mismatched" and off["match"] is None
    cancelled = await (await client.delete("/v1/trades/A-1",
                                           headers={**a, "If-Match": '"2"'})).json()
    assert cancelled["status"] == "cancelled" and cancelled["match"] is None


async def test_mismatches_are_the_nearest_three_closest_first(client, banks):
    a, b = banks
    await client.put("/v1/rules/XAU", json={"price_tolerance": {"abs": "0.50"}}, headers=ADMIN)
    for n, price in enumerate(["1010", "1001", "1005", "1002", "999.4"]):
        await created(client, a, trade_body(f"A-{n}", price=price))
    # Not a candidate at all: another trade date.
    await created(client, a, trade_body("A-X", price="1000.60", trade_date="2026-11-19"))
    ours = await created(client, b, mirror("B-1", price="1000"))
    assert ours["status"] == "mismatched" and ours["reason"] == "mismatched"
    near = ours["mismatches"]
    assert [m["counterparty_trade_id"] for m in near] == ["A-4", "A-1", "A-3"]
    assert near[0] == {"counterparty_trade_id": "A-4", "fields": [
        {"field": "price", "ours": "1000", "theirs": "999.4", "tolerance": "0.50"}],
        "rules": {"kind": "product", "name": "XAU", "version": 1}}


async def test_reason_says_why_each_version_exists(client, banks):
    a, b = banks
    submitted = await created(client, a, trade_body("A-1"))
    assert submitted["reason"] == "submitted"
    amended = await (await client.put("/v1/trades/A-1", json=terms(trade_body(price="5")),
                                      headers={**a, "If-Match": '"1"'})).json()
    assert amended["reason"] == "amended"
    matched = await created(client, b, mirror("B-1", price="5"))
    assert matched["reason"] == "matched"
    mine = await (await client.get("/v1/trades/A-1", headers=a)).json()
    assert mine["reason"] == "matched" and mine["status"] == "matched"
    cancelled = await (await client.delete("/v1/trades/B-1", headers={
        **b, "If-Match": f'"{matched["version"]}"'})).json()
    assert cancelled["reason"] == "cancelled"
    left = await (await client.get("/v1/trades/A-1", headers=a)).json()
    assert left["status"] == "unmatched" and left["reason"] == "unmatched"


async def test_put_amends_with_the_full_body_version_plus_one(client, banks):
    a, _ = banks
    await created(client, a, trade_body())
    new_terms = terms(trade_body(price="1100", attributes={"desk": "fx"}))
    resp = await client.put("/v1/trades/A-0001", json=new_terms,
                            headers={**a, "If-Match": '"1"'})
    assert resp.status == 200
    trade = await resp.json()
    assert trade["version"] == 2 and trade["price"] == "1100"
    assert trade["attributes"] == {"desk": "fx"} and trade["reason"] == "amended"
    # The same trade_id in the body is allowed; another one is not.
    resp = await client.put("/v1/trades/A-0001", json=trade_body(price="1200"),
                            headers={**a, "If-Match": '"2"'})
    assert resp.status == 200
    resp = await client.put("/v1/trades/A-0001", json=trade_body("A-9"),
                            headers={**a, "If-Match": '"3"'})
    await error_of(resp, 422)
    # Full body: a missing field is a validation error, not "keep the old value".
    partial = {"price": "1300"}
    await error_of(await client.put("/v1/trades/A-0001", json=partial,
                                    headers={**a, "If-Match": '"3"'}), 422)


async def test_amending_a_cancelled_trade_is_409(client, banks):
    a, _ = banks
    await created(client, a, trade_body())
    await client.delete("/v1/trades/A-0001", headers={**a, "If-Match": '"1"'})
    resp = await client.put("/v1/trades/A-0001", json=terms(trade_body()),
                            headers={**a, "If-Match": '"2"'})
    body = await error_of(resp, 409)
    assert body["error"] == "trade_cancelled"


async def test_delete_cancels_by_appending_a_version_nothing_is_deleted(client, banks, conn):
    a, _ = banks
    await created(client, a, trade_body())
    resp = await client.delete("/v1/trades/A-0001", headers={**a, "If-Match": '"1"'})
    assert resp.status == 200
    trade = await resp.json()
    assert trade["status"] == "cancelled" and trade["version"] == 2
    assert trade["price"] == "1000.25"  # the terms are kept
    history = await (await client.get("/v1/trades/A-0001/versions", headers=a)).json()
    assert [(v["version"], v["status"]) for v in history["versions"]] == [
        (1, "unmatched"), (2, "cancelled")]
    assert await conn.fetchval("SELECT count(*) FROM trades") == 2


async def test_get_as_of_is_inclusive_and_404_before_the_trade_existed(client, banks):
    a, _ = banks
    v1 = await created(client, a, trade_body())
    v2 = await (await client.put("/v1/trades/A-0001", json=terms(trade_body(price="2")),
                                 headers={**a, "If-Match": '"1"'})).json()
    t1 = datetime.fromisoformat(v1["recorded_at"])
    t2 = datetime.fromisoformat(v2["recorded_at"])

    async def at(instant: datetime) -> Any:
        return await client.get("/v1/trades/A-0001", headers=a,
                                params={"as_of": instant.isoformat()})

    assert (await (await at(t1)).json())["version"] == 1
    assert (await (await at(t2)).json())["version"] == 2
    assert (await (await at(t2 - timedelta(microseconds=1))).json())["version"] == 1
    resp = await at(t1 - timedelta(microseconds=1))
    await error_of(resp, 404)
    # The same trade id of another participant changes nothing for BANKA's as-of.
    resp = await at(datetime(2000, 1, 1, tzinfo=UTC))
    await error_of(resp, 404)
    resp = await at(datetime(9999, 12, 31, tzinfo=UTC))
    assert (await resp.json())["version"] == 2


async def test_versions_lists_every_version_ascending(client, banks):
    a, _ = banks
    await created(client, a, trade_body())
    for n in range(1, 4):
        await client.put("/v1/trades/A-0001", json=terms(trade_body(price=str(n))),
                         headers={**a, "If-Match": f'"{n}"'})
    resp = await client.get("/v1/trades/A-0001/versions", headers=a)
    body = await resp.json()
    assert set(body) == {"versions"}
    assert [v["version"] for v in body["versions"]] == [1, 2, 3, 4]
    assert [v["price"] for v in body["versions"]] == ["1000.25", "1", "2", "3"]
    times = [v["recorded_at"] for v in body["versions"]]
    assert times == sorted(times)
    await error_of(await client.get("/v1/trades/NOPE/versions", headers=a), 404)


async def test_list_filters_by_status_product_as_of_and_pages_with_a_cursor(client, banks):
    a, b = banks
    for n in range(5):
        await created(client, a, trade_body(f"T-{n}"))
    await created(client, a, trade_body("G-1", product="XAG"))
    cut = (await created(client, a, trade_body("Z-1", product="XPT")))["recorded_at"]
    await client.delete("/v1/trades/T-2", headers={**a, "If-Match": '"1"'})

    async def page(**params: Any) -> dict[str, Any]:
        resp = await client.get("/v1/trades", params=params, headers=a)
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert set(body) == {"trades", "next_cursor"}
        return body

    everything = await page()
    assert len(everything["trades"]) == 7 and everything["next_cursor"] is None
    assert {t["trade_id"] for t in (await page(status="cancelled"))["trades"]} == {"T-2"}
    assert {t["trade_id"] for t in (await page(product="XAG"))["trades"]} == {"G-1"}
    then = await page(as_of=cut)
    assert {t["status"] for t in then["trades"]} == {"unmatched"}
    assert len(then["trades"]) == 7
    assert (await page(status="cancelled", as_of=cut))["trades"] == []
    seen, cursor = [], None
    while True:
        body = await page(limit=2, **({"cursor": cursor} if cursor else {}))
        assert len(body["trades"]) <= 2
        seen += [t["trade_id"] for t in body["trades"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(t["trade_id"] for t in everything["trades"])
    assert len(seen) == len(set(seen))
    # Only the caller's own trades.
    assert (await (await client.get("/v1/trades", headers=b)).json())["trades"] == []


async def test_unknown_query_values_are_422(client, banks):
    a, _ = banks
    for params in [{"status": "bogus"}, {"status": "MATCHED"}, {"limit": "0"},
                   {"limit": "-1"}, {"limit": "x"}, {"limit": "1.5"}, {"limit": "²"},
                   {"limit": "100000000000000000000000"}, {"cursor": "garbage"},
                   {"cursor": "W10"}, {"as_of": "now"}]:
        resp = await client.get("/v1/trades", params=params, headers=a)
        body = await error_of(resp, 422)
        assert body["details"][0]["field"] == next(iter(params)), params


async def test_alleged_shows_their_side_their_trade_id_and_participant(client, banks):
    a, b = banks
    await created(client, a, trade_body("A-1", attributes={"private": "x"}))
    await created(client, a, trade_body("A-2", product="XAG"))
    await created(client, a, trade_body("A-3", counterparty="OTHER"))
    resp = await client.get("/v1/alleged", headers=b)
    assert resp.status == 200
    body = await resp.json()
    alleged = {t["trade_id"]: t for t in body["trades"]}
    assert set(alleged) == {"A-1", "A-2"}
    one = alleged["A-1"]
    assert one["participant"] == "BANKA" and one["counterparty"] == "BANKB"
    assert one["side"] == "sell" and one["quantity"] == "100" and one["price"] == "1000.25"
    # Their economic terms, trade_id and participant: nothing else of theirs.
    assert set(one) == {"trade_id", "participant", "counterparty", "side", "product",
                        "quantity", "price", "currency", "trade_date", "settlement_date",
                        "location", "cutoff_at", "overdue"}
    assert "private" not in str(body)
    # Matched trades are no longer alleged; BANKA sees nothing alleged against it.
    await created(client, b, mirror("B-1"))
    after = await (await client.get("/v1/alleged", headers=b)).json()
    assert [t["trade_id"] for t in after["trades"]] == ["A-2"]
    assert (await (await client.get("/v1/alleged", headers=a)).json())["trades"] == []


# --- Matching rules (admin) --------------------------------------------------------------


async def test_rules_put_is_versioned_and_get_answers_as_of(client):
    first = await client.put("/v1/rules/XAU", json={
        "price_tolerance": {"abs": "0.50"}, "quantity_tolerance": {"abs": "0"},
        "settlement_date_window_days": 0, "location": "exact"}, headers=ADMIN)
    assert first.status in (200, 201)
    v1 = await first.json()
    assert v1["version"] == 1 and v1["product"] == "XAU"
    v2 = await (await client.put("/v1/rules/XAU", json={
        "price_tolerance": {"bps": "5"}, "settlement_date_window_days": 2,
        "location": "ignore"}, headers=ADMIN)).json()
    assert v2["version"] == 2
    assert v2["price_tolerance"] == {"bps": "5"} and v2["location"] == "ignore"
    latest = await (await client.get("/v1/rules/XAU", headers=ADMIN)).json()
    assert latest == v2
    then = await client.get("/v1/rules/XAU", params={"as_of": v1["recorded_at"]},
                            headers=ADMIN)
    assert (await then.json()) == v1
    before = datetime.fromisoformat(v1["recorded_at"]) - timedelta(microseconds=1)
    await error_of(await client.get("/v1/rules/XAU", params={"as_of": before.isoformat()},
                                    headers=ADMIN), 404)


async def test_rules_are_admin_only(client, banks):
    a, _ = banks
    await error_of(await client.put("/v1/rules/XAU", json={}, headers=a), 403)
    await error_of(await client.get("/v1/rules/XAU", headers=a), 403)
    await error_of(await client.get("/v1/rules/XAU"), 401)


async def test_rules_are_validated(client):
    for bad in [{"price_tolerance": {"abs": "0.5", "bps": "1"}},
                {"price_tolerance": {}},
                {"price_tolerance": {"pct": "1"}},
                {"price_tolerance": {"abs": "-1"}},
                {"price_tolerance": {"abs": "NaN"}},
                {"quantity_tolerance": {"bps": "1"}},
                {"settlement_date_window_days": -1},
                {"settlement_date_window_days": 1.5},
                {"settlement_date_window_days": True},
                {"location": "fuzzy"},
                {"unknown": 1}]:
        resp = await client.put("/v1/rules/XAU", json=bad, headers=ADMIN)
        body = await error_of(resp, 422)
        assert isinstance(body["details"], list) and body["details"], bad
    await error_of(await client.put("/v1/rules/XAU", json=[], headers=ADMIN), 422)


async def test_a_product_with_no_rules_matches_exactly_on_every_field(client, banks):
    a, b = banks
    await created(client, a, trade_body("A-1", price="1000.25"))
    off = await created(client, b, mirror("B-1", price="1000.250000001"))
    assert off["status"] == "mismatched"
    assert off["mismatches"][0]["fields"][0]["field"] == "price"
    exact = await created(client, b, mirror("B-2", price="1000.2500"))
    assert exact["status"] == "matched"


async def test_bps_price_tolerance_is_relative_to_the_resting_trade(client, banks):
    a, b = banks
    await client.put("/v1/rules/XAU", json={"price_tolerance": {"bps": "10"}}, headers=ADMIN)
    await created(client, a, trade_body("A-1", price="1000"))  # rests: 10 bps = 1.00
    assert (await created(client, b, mirror("B-1", price="1001.01")))["status"] == "mismatched"
    assert (await created(client, b, mirror("B-2", price="1001.00")))["status"] == "matched"


# --- Exceptions (admin) ------------------------------------------------------------------


async def test_admin_force_match_is_201_and_both_get_reason_forced(client, banks):
    a, b = banks
    await created(client, a, trade_body("A-1", price="1000"))
    await created(client, b, mirror("B-7", price="1200"))
    resp = await client.post("/v1/admin/matches", headers=ADMIN, json={
        "legs": [{"participant": "BANKA", "trade_id": "A-1"},
                 {"participant": "BANKB", "trade_id": "B-7"}], "comment": "confirmed by phone"})
    assert resp.status == 201, await resp.text()
    ours = await (await client.get("/v1/trades/A-1", headers=a)).json()
    theirs = await (await client.get("/v1/trades/B-7", headers=b)).json()
    for trade in (ours, theirs):
        assert trade["status"] == "matched" and trade["reason"] == "forced"
        assert trade["comment"] == "confirmed by phone"
    assert ours["match"]["match_id"] == theirs["match"]["match_id"]
    assert ours["match"]["counterparty_trade_id"] == "B-7"
    assert ours["match"]["counterparty_version"] == theirs["version"]
    # Only the admin; and only live trades (a matched one cannot be forced again).
    legs = {"legs": [{"participant": "BANKA", "trade_id": "A-1"},
                     {"participant": "BANKB", "trade_id": "B-7"}]}
    await error_of(await client.post("/v1/admin/matches", json=legs, headers=a), 403)
    await error_of(await client.post("/v1/admin/matches", json=legs, headers=ADMIN), 409)
    legs["legs"][1]["trade_id"] = "NOPE"
    await error_of(await client.post("/v1/admin/matches", json=legs, headers=ADMIN), 404)


async def test_admin_break_match_is_200_both_broken_and_never_auto_matched_again(client, banks):
    a, b = banks
    await created(client, a, trade_body("A-1"))
    matched = await created(client, b, mirror("B-1"))
    match_id = matched["match"]["match_id"]
    resp = await client.delete(f"/v1/admin/matches/{match_id}", json={"comment": "wrong desk"},
                               headers=ADMIN)
    assert resp.status == 200, await resp.text()
    for headers, trade_id in ((a, "A-1"), (b, "B-1")):
        history = await (await client.get(f"/v1/trades/{trade_id}/versions",
                                          headers=headers)).json()
        broken = [v for v in history["versions"] if v["reason"] == "broken"]
        assert len(broken) == 1
        assert broken[0]["status"] == "unmatched" and broken[0]["comment"] == "wrong desk"
        latest = history["versions"][-1]
        assert latest["status"] != "matched"
    # The pair never matches again on its own, even when one side is amended back.
    current = await (await client.get("/v1/trades/B-1", headers=b)).json()
    resp = await client.put("/v1/trades/B-1", json=terms(mirror("B-1")),
                            headers={**b, "If-Match": f'"{current["version"]}"'})
    assert (await resp.json())["status"] != "matched"
    await error_of(await client.delete(f"/v1/admin/matches/{match_id}", headers=ADMIN), 404)
    await error_of(await client.delete("/v1/admin/matches/not-a-uuid", headers=ADMIN), 404)
    await error_of(await client.delete(f"/v1/admin/matches/{match_id}", headers=a), 403)


# --- Match feed --------------------------------------------------------------------------


FEED_WAIT = 45.0


async def _feed(client: Any, headers: dict[str, str], n: int, **params: Any) -> list[dict]:
    """The JSON feed once it holds at least n updates (seq is assigned after commit)."""
    async def page() -> list[dict] | None:
        resp = await client.get("/v1/feed", params=params,
                                headers={**headers, "Accept": "application/json"})
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert set(body) == {"updates", "last_seq"}
        return body["updates"] if len(body["updates"]) >= n else None

    # Generous: seq waits for the cluster-wide xmin horizon, which another database's
    # long transaction on a shared test server can hold back for a while.
    return await wait_for(page, timeout=FEED_WAIT)


async def _sse_events(resp: Any, n: int) -> list[dict[str, str]]:
    events: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    while len(events) < n:
        line = (await resp.content.readline()).decode().rstrip("\n")
        if not line:
            if "data" in fields:
                events.append(fields)
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
    return events


async def test_every_new_version_is_one_update_on_its_participants_feed(client, banks):
    a, b = banks
    await created(client, a, trade_body("A-1"))
    await created(client, b, mirror("B-1"))
    mine = await _feed(client, a, 2)
    assert [(u["trade_id"], u["version"]) for u in mine] == [("A-1", 1), ("A-1", 2)]
    assert {u["participant"] for u in mine} == {"BANKA"}
    theirs = await _feed(client, b, 2)
    assert [(u["trade_id"], u["version"]) for u in theirs] == [("B-1", 1), ("B-1", 2)]
    # The admin feed carries everyone's, each seq global and strictly increasing.
    everything = await _feed(client, ADMIN, 4)
    seqs = [u["seq"] for u in everything]
    assert seqs == sorted(set(seqs)) and len(everything) == 4
    assert {u["seq"] for u in mine} | {u["seq"] for u in theirs} == set(seqs)


async def test_feed_updates_carry_the_contract_fields(client, banks):
    a, b = banks
    await created(client, a, trade_body("A-1"))
    matched = await created(client, b, mirror("B-1"))
    [_, update] = await _feed(client, b, 2)
    assert {"seq", "event", "trade_id", "participant", "version", "status", "match", "trade",
            "recorded_at"} <= set(update)
    assert update["event"] == "matched" and update["status"] == "matched"
    assert update["trade"] == matched and update["match"] == matched["match"]
    assert UTC_MICROS.match(update["recorded_at"])


async def test_feed_sse_events_and_resuming_with_last_event_id_or_after(client, banks):
    a, _ = banks
    for n in range(3):
        await created(client, a, trade_body(f"A-{n}"))
    updates = await _feed(client, a, 3)
    resp = await client.get("/v1/feed", headers={**a, "Accept": "text/event-stream"})
    assert resp.status == 200 and resp.content_type == "text/event-stream"
    events = await asyncio.wait_for(_sse_events(resp, 3), FEED_WAIT)
    for event, update in zip(events, updates, strict=True):
        data = json.loads(event["data"])
        assert int(event["id"]) == data["seq"] == update["seq"]
        assert event["event"] == data["event"] == "submitted"
    resp.close()
    first = str(updates[0]["seq"])
    for how in ({"headers": {"Last-Event-ID": first}}, {"params": {"after": first}}):
        resp = await client.get("/v1/feed", params=how.get("params"),
                                headers={**a, "Accept": "text/event-stream",
                                         **how.get("headers", {})})
        [event] = await asyncio.wait_for(_sse_events(resp, 1), FEED_WAIT)
        assert int(event["id"]) == updates[1]["seq"], how
        resp.close()
    page = await _feed(client, a, 1, after=first, limit=1)
    assert [u["seq"] for u in page] == [updates[1]["seq"]]


# --- Replay (admin) ----------------------------------------------------------------------


async def test_replay_dry_run_shows_changes_and_apply_writes_replayed_versions(client, banks):
    a, b = banks
    since = (await created(client, a, trade_body("A-1", price="1000")))["recorded_at"]
    assert (await created(client, b, mirror("B-1", price="1000.40")))["status"] == "mismatched"
    body = {"since": since, "rules": {"XAU": {"price_tolerance": {"abs": "0.50"}}},
            "apply": False}
    await error_of(await client.post("/v1/replays", json=body, headers=a), 403)
    resp = await client.post("/v1/replays", json=body, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    dry = await resp.json()
    assert isinstance(dry["replay_id"], str)
    changed = {(c["participant"], c["trade_id"]): c for c in dry["changes"]}
    assert set(changed) == {("BANKA", "A-1"), ("BANKB", "B-1")}
    assert {"participant", "trade_id", "before", "after"} <= set(changed["BANKA", "A-1"])
    assert changed["BANKA", "A-1"]["after"]["status"] == "matched"
    assert (await (await client.get("/v1/trades/A-1", headers=a)).json())["status"] != "matched"
    applied = await (await client.post("/v1/replays", json={**body, "apply": True},
                                       headers=ADMIN)).json()
    assert {(c["participant"], c["trade_id"]) for c in applied["changes"]} == set(changed)
    now = await (await client.get("/v1/trades/A-1", headers=a)).json()
    assert now["status"] == "matched" and now["reason"] == "replayed"
    history = await (await client.get("/v1/trades/A-1/versions", headers=a)).json()
    assert [v["version"] for v in history["versions"]] == list(
        range(1, len(history["versions"]) + 1))  # appended, never rewritten


# --- Command line and configuration ---------------------------------------------------


@pytest.mark.slow  # a dozen CLI subprocesses
def test_bad_arguments_fail_with_a_one_line_reason_and_no_traceback():
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", ".")}
    for args in (["serve", "--port", "abc"], ["bogus"], ["participant", "add"],
                 ["participant", "add", "lower"], ["archive", "--before", "yesterday"],
                 ["replay", "--since", "2026-11-21T10:00:00"]):
        done = subprocess.run([sys.executable, "-m", "kevin.cli", *args], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode != 0, args
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr, (args, done.stderr)


# --- Operations --------------------------------------------------------------------------


async def test_healthz_readyz_metrics_openapi(client):
    resp = await client.get("/healthz")
    assert resp.status == 200
    resp = await client.get("/readyz")
    assert resp.status == 200
    resp = await client.get("/metrics")
    assert resp.status == 200 and resp.content_type == "text/plain"
    assert "# TYPE" in await resp.text()
    resp = await client.get("/openapi.json")
    assert resp.status == 200 and resp.content_type == "application/json"
    assert (await resp.json())["openapi"].startswith("3.")


async def test_openapi_documents_every_route_the_service_answers(client):
    spec = await (await client.get("/openapi.json")).json()
    served = set()
    for route in client.server.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter") or info.get("prefix", "")
        path = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", path)
        # /ui/ is the HTML workbench for browsers (docs/api.md "Web workbench"), not
        # part of the JSON API the document describes.
        if route.method in ("HEAD", "OPTIONS") or path == "/openapi.json" or \
                path.startswith("/ui"):
            continue
        served.add((path, route.method.lower()))
    documented = {(path, method) for path, item in spec["paths"].items()
                  for method in item if method != "parameters"}
    assert served - documented == set()


async def test_openapi_documents_the_etag_location_and_www_authenticate_headers(client):
    spec = await (await client.get("/openapi.json")).json()
    created = spec["paths"]["/v1/trades"]["post"]["responses"]["201"]["headers"]
    assert {"ETag", "Location"} <= set(created)
    for method in ("get", "put", "delete"):
        ok = spec["paths"]["/v1/trades/{trade_id}"][method]["responses"]["200"]
        assert "ETag" in ok["headers"], method
    assert "WWW-Authenticate" in spec["paths"]["/v1/trades"]["get"]["responses"]["401"][
        "headers"]
    if_match = next(p for p in spec["paths"]["/v1/trades/{trade_id}"]["put"]["parameters"]
                    if p["name"] == "If-Match")
    assert '"*"' in if_match["description"]


async def test_unknown_routes_and_wrong_methods_answer_in_the_error_shape(client, banks):
    a, _ = banks
    await error_of(await client.get("/v1/nothing", headers=a), 404)
    await error_of(await client.get("/", headers=a), 404)
    resp = await client.patch("/v1/trades/A-1", json={}, headers=a)
    body = await error_of(resp, 405)
    assert body["error"] == "method_not_allowed"
    assert "PUT" in resp.headers["Allow"]
    await error_of(await client.post("/healthz"), 405)


async def test_bodies_that_are_json_but_not_objects_are_422(client, banks):
    a, _ = banks
    for raw in [b"[]", b'"trade"', b"1", b"null", b"true"]:
        body = await error_of(await client.post("/v1/trades", data=raw,
                                                headers={**a, **JSON}), 422)
        assert isinstance(body["details"], list)
    await error_of(await client.post("/v1/participants", data=b"[]",
                                     headers={**ADMIN, **JSON}), 422)


async def test_empty_bodies_are_400(client, banks):
    a, _ = banks
    await created(client, a, trade_body())
    await error_of(await client.post("/v1/trades", data=b"", headers={**a, **JSON}), 400)
    await error_of(await client.put("/v1/trades/A-0001", data=b"",
                                    headers={**a, **JSON, "If-Match": '"1"'}), 400)


async def test_huge_numbers_are_422_never_400_or_500(client, banks):
    a, _ = banks
    for n, literal in enumerate([b"1" + b"0" * 5000, b"1e999999999", b"1e-999999999",
                                 b"0." + b"0" * 5000 + b"1", b"123456789012345678901234567890"
                                 b"123456789.0"]):
        raw = json.dumps(trade_body(f"H-{n}", quantity="@")).encode()
        resp = await client.post("/v1/trades", data=raw.replace(b'"@"', literal),
                                 headers={**a, **JSON})
        body = await error_of(resp, 422)
        assert [d["field"] for d in body["details"]] == ["quantity"], literal[:20]


async def test_text_postgresql_cannot_store_is_422_never_500(client, banks):
    a, _ = banks
    for field, body in [("location", trade_body("U-1", location="a\u0000b")),
                        ("attributes", trade_body("U-2", attributes={"k": ["\u0000"]})),
                        ("attributes", trade_body("U-3", attributes={"\u0000": 1}))]:
        error = await error_of(await client.post("/v1/trades", json=body, headers=a), 422)
        assert [d["field"] for d in error["details"]] == [field]


async def test_a_batch_line_with_unstorable_text_spoils_no_other_line(client, banks):
    a, _ = banks
    lines = [trade_body("K-1"), trade_body("K-2", location="a\u0000b"),
             trade_body("K-3", attributes={"x": {"y": "\u0000"}})]
    resp = await client.post("/v1/trades/batch", data=b"\n".join(
        json.dumps(line).encode() for line in lines),
        headers={**a, "Content-Type": "application/x-ndjson"})
    assert resp.status == 200, await resp.text()
    results = (await resp.json())["results"]
    assert [r["result"] for r in results] == ["created", "invalid", "invalid"]
    assert results[1]["error"]["error"] == "validation_failed"


async def test_a_lone_surrogate_escape_is_malformed_json_400(client, banks, conn):
    # Valid JSON syntax, but no Unicode text: the body cannot be UTF-8, so it is malformed.
    a, _ = banks
    raw = json.dumps(trade_body("U-4", attributes={"k": "@"})).encode()
    for escape in [b'"\\ud800"', b'"x\\udfffy"', b'"\\ude00\\ud83d"']:
        resp = await client.post("/v1/trades", data=raw.replace(b'"@"', escape),
                                 headers={**a, **JSON})
        body = await error_of(resp, 400)
        assert body["error"] == "malformed_json"
    # A proper pair is one character, stored and returned as sent.
    resp = await client.post("/v1/trades", data=raw.replace(b'"@"', b'"\\ud83d\\ude00"'),
                             headers={**a, **JSON})
    assert resp.status == 201 and (await resp.json())["attributes"] == {"k": "\U0001f600"}


async def test_instants_beyond_the_calendar_are_422_never_500(client, banks):
    a, _ = banks
    await created(client, a, trade_body())
    for instant in ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"]:
        for path in ["/v1/trades/A-0001", "/v1/trades"]:
            resp = await client.get(path, params={"as_of": instant}, headers=a)
            body = await error_of(resp, 422)
            assert body["details"][0]["field"] == "as_of"
