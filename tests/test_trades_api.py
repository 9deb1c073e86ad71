"""The trades API, through HTTP, against real PostgreSQL."""

from __future__ import annotations

import asyncio
import io
from datetime import datetime, timedelta

from kevin import jsoncodec
from tests.conftest import ADMIN, as_read, trade_body


async def test_submit_creates_version_one(client, banks):
    a, _ = banks
    resp = await client.post("/v1/trades", json=trade_body(), headers=a)
    assert resp.status == 201
    assert resp.headers["ETag"] == '"1"'
    assert resp.headers["Location"] == "/v1/trades/A-0001"
    body = await resp.json()
    assert body["participant"] == "BANKA"
    assert body["version"] == 1
    assert body["status"] == "unmatched"
    assert body["reason"] == "submitted"
    assert body["match"] is None and body["mismatches"] == []
    assert body["quantity"] == "100" and body["price"] == "1000.25"
    assert body["attributes"] == {"desk": "metals"}
    assert body["recorded_at"].endswith("Z") and len(body["recorded_at"]) == 27


async def test_resubmitting_the_same_body_is_idempotent(client, banks, conn):
    a, _ = banks
    first = await (await client.post("/v1/trades", json=trade_body(), headers=a)).json()
    # 100 and 100.0 are the same quantity: still the same body.
    again = await client.post("/v1/trades", json=trade_body(quantity="100.0"), headers=a)
    assert again.status == 200
    assert (await again.json()) == first
    assert await conn.fetchval("SELECT count(*) FROM trades") == 1


async def test_resubmitting_with_different_fields_names_them(client, banks):
    a, _ = banks
    await client.post("/v1/trades", json=trade_body(), headers=a)
    resp = await client.post(
        "/v1/trades", json=trade_body(price="1000.26", location="NYC"), headers=a)
    assert resp.status == 409
    body = await resp.json()
    assert body["error"] == "exists_with_different_fields"
    assert body["details"] == {"fields": ["price", "location"]}


async def test_decimals_are_exact_end_to_end(client, banks, conn):
    a, _ = banks
    raw = (b'{"trade_id": "D-1", "counterparty": "BANKB", "side": "buy", "product": "EURUSD",'
           b' "quantity": 1000000.000000000000000001, "price": 1.08451, "currency": "USD",'
           b' "trade_date": "2026-11-20", "settlement_date": "2026-11-24",'
           b' "attributes": {"ref": 0.1000000000000000055511151231257827}}')
    resp = await client.post("/v1/trades", data=raw,
                             headers={**a, "Content-Type": "application/json"})
    assert resp.status == 201, await resp.text()
    text = await resp.text()
    assert '"quantity":"1000000.000000000000000001"' in text
    assert '"price":"1.08451"' in text
    assert '"ref":0.1000000000000000055511151231257827' in text
    stored = await conn.fetchval("SELECT quantity::text FROM trades WHERE trade_id = 'D-1'")
    assert stored == "1000000.000000000000000001"


async def test_bad_amounts_are_422_with_field_details(client, banks):
    a, _ = banks
    for field, value in [("quantity", "0"), ("quantity", "-5"), ("price", "NaN"),
                         ("price", "Infinity"), ("price", "abc")]:
        resp = await client.post("/v1/trades", json=trade_body(**{field: value}), headers=a)
        assert resp.status == 422, (field, value)
        body = await resp.json()
        assert body["error"] == "validation_failed"
        assert [d["field"] for d in body["details"]] == [field]
    raw = b'{"trade_id": "N-1", "quantity": NaN}'
    resp = await client.post("/v1/trades", data=raw,
                             headers={**a, "Content-Type": "application/json"})
    assert resp.status == 422
    assert "quantity" in [d["field"] for d in (await resp.json())["details"]]


async def test_invalid_bodies(client, banks, conn):
    a, _ = banks
    resp = await client.post("/v1/trades", data=b"{not json",
                             headers={**a, "Content-Type": "application/json"})
    assert resp.status == 400 and (await resp.json())["error"] == "malformed_json"
    resp = await client.post("/v1/trades", data=b"trade_id=1",
                             headers={**a, "Content-Type": "text/plain"})
    assert resp.status == 415
    resp = await client.post("/v1/trades", json=trade_body(extra="x"), headers=a)
    assert resp.status == 422
    resp = await client.post("/v1/trades", json=trade_body(trade_id="bad id!"), headers=a)
    assert resp.status == 422
    resp = await client.post("/v1/trades", json=trade_body(counterparty="BANKA"), headers=a)
    assert resp.status == 422
    resp = await client.post("/v1/trades", json=[1, 2], headers=a)
    assert resp.status == 422
    big = io.BytesIO(jsoncodec.dumps(trade_body(attributes={"blob": "x" * (1024 * 1024)})))
    resp = await client.post("/v1/trades", data=big,
                             headers={**a, "Content-Type": "application/json"})
    assert resp.status == 413 and (await resp.json())["error"] == "payload_too_large"
    assert await conn.fetchval("SELECT count(*) FROM trades") == 0


async def test_auth(client, banks):
    resp = await client.get("/v1/trades")
    assert resp.status == 401 and (await resp.json())["error"] == "unauthorized"
    resp = await client.get("/v1/trades", headers={"Authorization": "Bearer nope"})
    assert resp.status == 401
    a, _ = banks
    resp = await client.post("/v1/participants", json={"name": "BANKC"}, headers=a)
    assert resp.status == 403
    resp = await client.post("/v1/trades", json=trade_body(), headers=ADMIN)
    assert resp.status == 403


async def test_participants(client):
    resp = await client.post("/v1/participants", json={"name": "BANK_1"}, headers=ADMIN)
    assert resp.status == 201
    body = await resp.json()
    assert body["name"] == "BANK_1" and body["api_key"].startswith("kv_")
    again = await client.post("/v1/participants", json={"name": "BANK_1"}, headers=ADMIN)
    assert again.status == 409
    bad = await client.post("/v1/participants", json={"name": "bank one"}, headers=ADMIN)
    assert bad.status == 422


async def test_keys_are_stored_only_as_hashes(client, conn):
    resp = await client.post("/v1/participants", json={"name": "BANKZ"}, headers=ADMIN)
    key = (await resp.json())["api_key"]
    stored = await conn.fetch("SELECT * FROM api_keys")
    assert len(stored) == 1
    dumped = repr([dict(r) for r in stored])
    assert key not in dumped and key.encode() not in stored[0]["key_hash"]


async def test_amend_with_if_match(client, banks):
    a, _ = banks
    await client.post("/v1/trades", json=trade_body(), headers=a)
    amended = trade_body(price="1001")
    del amended["trade_id"]
    resp = await client.put("/v1/trades/A-0001", json=amended, headers={**a, "If-Match": '"1"'})
    assert resp.status == 200
    assert resp.headers["ETag"] == '"2"'
    body = await resp.json()
    assert body["version"] == 2 and body["price"] == "1001" and body["reason"] == "amended"

    resp = await client.put("/v1/trades/A-0001", json=amended, headers=a)
    assert resp.status == 428
    resp = await client.put("/v1/trades/A-0001", json=amended, headers={**a, "If-Match": '"1"'})
    assert resp.status == 412
    assert (await resp.json())["details"] == {"current_version": 2}
    resp = await client.put("/v1/trades/A-0001", json=trade_body(trade_id="OTHER"),
                            headers={**a, "If-Match": '"2"'})
    assert resp.status == 422
    resp = await client.put("/v1/trades/NOPE", json=amended, headers={**a, "If-Match": '"1"'})
    assert resp.status == 404


async def test_cancel_appends_a_cancelled_version(client, banks, conn):
    a, _ = banks
    await client.post("/v1/trades", json=trade_body(), headers=a)
    resp = await client.delete("/v1/trades/A-0001", headers={**a, "If-Match": '"1"'})
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "cancelled" and body["version"] == 2
    assert body["reason"] == "cancelled"
    resp = await client.delete("/v1/trades/A-0001", headers=a)
    assert resp.status == 428
    amended = trade_body()
    resp = await client.put("/v1/trades/A-0001", json=amended, headers={**a, "If-Match": '"2"'})
    assert resp.status == 409 and (await resp.json())["error"] == "trade_cancelled"
    assert await conn.fetchval("SELECT count(*) FROM trades") == 2


async def test_another_participants_trade_is_404(client, banks):
    a, b = banks
    await client.post("/v1/trades", json=trade_body(), headers=a)
    for method, path in [("GET", "/v1/trades/A-0001"), ("GET", "/v1/trades/A-0001/versions"),
                         ("DELETE", "/v1/trades/A-0001")]:
        resp = await client.request(method, path, headers={**b, "If-Match": '"1"'})
        assert resp.status == 404, (method, path)
    resp = await client.put("/v1/trades/A-0001", json=trade_body(counterparty="BANKA"),
                            headers={**b, "If-Match": '"1"'})
    assert resp.status == 404
    resp = await client.get("/v1/trades/A-0001?participant=BANKA", headers=b)
    assert resp.status == 404
    listed = await (await client.get("/v1/trades", headers=b)).json()
    assert listed["trades"] == []
    # The admin reads anyone's trade by naming the participant.
    resp = await client.get("/v1/trades/A-0001?participant=BANKA", headers=ADMIN)
    assert resp.status == 200
    resp = await client.get("/v1/trades/A-0001", headers=ADMIN)
    assert resp.status == 422


async def test_history_and_as_of(client, banks):
    a, _ = banks
    v1 = await (await client.post("/v1/trades", json=trade_body(), headers=a)).json()
    body = trade_body(price="1002")
    v2 = await (await client.put("/v1/trades/A-0001", json=body,
                                 headers={**a, "If-Match": '"1"'})).json()
    v3 = await (await client.delete("/v1/trades/A-0001", headers={**a, "If-Match": '"2"'})).json()

    history = await (await client.get("/v1/trades/A-0001/versions", headers=a)).json()
    assert [v["version"] for v in history["versions"]] == [1, 2, 3]
    assert history["versions"] == [v1, v2, v3]

    async def as_of(instant: str) -> tuple[int, dict]:
        resp = await client.get("/v1/trades/A-0001", params={"as_of": instant}, headers=a)
        return resp.status, await resp.json()

    # Inclusive: exactly at a version's recorded_at, that version is the answer.
    for version in (v1, v2, v3):
        status, found = await as_of(version["recorded_at"])
        assert status == 200 and found == as_read(version)
    before = datetime.fromisoformat(v1["recorded_at"]) - timedelta(microseconds=1)
    status, _ = await as_of(before.isoformat())
    assert status == 404
    between = datetime.fromisoformat(v2["recorded_at"]) - timedelta(microseconds=1)
    assert (await as_of(between.isoformat()))[1]["version"] == 1
    # Another zone names the same instant.
    other_zone = datetime.fromisoformat(v2["recorded_at"]).astimezone(
        __import__("datetime").timezone(timedelta(hours=5, minutes=30)))
    assert (await as_of(other_zone.isoformat()))[1]["version"] == 2
    status, body = await as_of("2026-11-21T10:00:00")
    assert status == 422 and body["details"][0]["field"] == "as_of"


async def test_list_paginates_filters_and_answers_as_of(client, banks):
    a, _ = banks
    for i in range(7):
        await client.post("/v1/trades", json=trade_body(f"T-{i}"), headers=a)
    last = await client.post("/v1/trades", json=trade_body("G-1", product="XAG"), headers=a)
    # The database's own clock: the last submission's instant precedes the cancel's.
    before_cancel = datetime.fromisoformat((await last.json())["recorded_at"])
    await client.delete("/v1/trades/T-3", headers={**a, "If-Match": '"1"'})

    seen, cursor = [], None
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        page = await (await client.get("/v1/trades", params=params, headers=a)).json()
        seen += [t["trade_id"] for t in page["trades"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["G-1"] + [f"T-{i}" for i in range(7)]

    async def ids(**params: str) -> list[str]:
        page = await (await client.get("/v1/trades", params=params, headers=a)).json()
        return [t["trade_id"] for t in page["trades"]]

    assert await ids(status="cancelled") == ["T-3"]
    assert await ids(product="XAG") == ["G-1"]
    assert await ids(status="cancelled", as_of=before_cancel.isoformat()) == []
    assert "T-3" in await ids(status="unmatched", as_of=before_cancel.isoformat())
    resp = await client.get("/v1/trades", params={"status": "bogus"}, headers=a)
    assert resp.status == 422
    resp = await client.get("/v1/trades", params={"cursor": "!!"}, headers=a)
    assert resp.status == 422
    admin_all = await (await client.get("/v1/trades", headers=ADMIN)).json()
    assert len(admin_all["trades"]) == 8


async def test_twenty_concurrent_amends_exactly_one_wins(client, banks, conn):
    a, _ = banks
    await client.post("/v1/trades", json=trade_body(), headers=a)

    async def amend(i: int) -> int:
        body = trade_body(price=f"{1000 + i}")
        resp = await client.put("/v1/trades/A-0001", json=body, headers={**a, "If-Match": '"1"'})
        return resp.status

    statuses = await asyncio.gather(*(amend(i) for i in range(20)))
    assert sorted(statuses) == [200] + [412] * 19
    rows = await conn.fetch("SELECT version, latest FROM trades ORDER BY version")
    assert [(r["version"], r["latest"]) for r in rows] == [(1, False), (2, True)]
    feed = await conn.fetch("SELECT version FROM feed ORDER BY version")
    assert [r["version"] for r in feed] == [1, 2]


async def test_ops_endpoints(client):
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200 and (await ready.json())["status"] == "ready"
    spec = await (await client.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.")
    assert {"/v1/trades", "/v1/trades/{trade_id}", "/v1/participants"} <= set(spec["paths"])
    assert "Trade" in spec["components"]["schemas"]
    resp = await client.get("/no/such/path")
    assert resp.status == 404 and (await resp.json())["error"] == "not_found"
