"""POST /v1/trades/batch: NDJSON lines that each stand alone, matched like single
submissions, with per-line results in order; and its limits."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from kevin.store import batch_book, bulk
from tests.conftest import ADMIN, as_read, trade_body, wait_for
from tests.matching_checks import check_matching_invariants
from tests.support import book_state

NDJSON = {"Content-Type": "application/x-ndjson"}


def ndjson(*lines: Any) -> bytes:
    """Dicts become JSON lines; bytes and str are sent as they are."""
    out = []
    for line in lines:
        if isinstance(line, dict):
            out.append(json.dumps(line).encode())
        else:
            out.append(line if isinstance(line, bytes) else line.encode())
    return b"\n".join(out) + b"\n"


async def batch(client, headers, *lines: Any, status: int = 200) -> Any:
    resp = await client.post("/v1/trades/batch", data=io.BytesIO(ndjson(*lines)),
                             headers={**headers, **NDJSON})
    assert resp.status == status, await resp.text()
    return await resp.json()


def buy(trade_id: str, **overrides: Any) -> dict[str, Any]:
    return trade_body(trade_id, **{"counterparty": "BANKA", "side": "buy", "attributes": {},
                                   **overrides})


async def test_mixed_good_and_bad_lines_each_stand_alone(client, banks):
    a, _ = banks
    body = await batch(
        client, a,
        trade_body("A-1"),
        "{not json",
        trade_body("A-2", price="-1"),
        "",  # blank lines are skipped, not counted
        trade_body("A-3", counterparty="BANKA"),
        "[1, 2]",
        trade_body("A-4", quantity=250),  # a JSON number, parsed exactly
    )
    results = body["results"]
    assert [r["line"] for r in results] == [1, 2, 3, 5, 6, 7]
    assert [r["result"] for r in results] == [
        "created", "invalid", "invalid", "invalid", "invalid", "created"]
    assert results[0]["trade"]["trade_id"] == "A-1" and results[0]["error"] is None
    assert results[1]["error"]["error"] == "malformed_json" and results[1]["trade"] is None
    assert results[2]["error"]["error"] == "validation_failed"
    assert any(d["field"] == "price" for d in results[2]["error"]["details"])
    assert results[3]["error"]["details"][0]["field"] == "counterparty"
    assert results[4]["error"]["error"] == "validation_failed"
    assert results[5]["trade"]["quantity"] == "250"
    for trade_id, status in (("A-1", 200), ("A-2", 404), ("A-3", 404), ("A-4", 200)):
        resp = await client.get(f"/v1/trades/{trade_id}", headers=a)
        assert resp.status == status


async def test_values_are_stored_exactly_as_sent(client, banks, conn):
    """A batch travels to PostgreSQL as JSON (kevin.store.bulk_queries): digits, scale,
    dates and attributes come back exactly as sent, resting or matched, and as a
    single submission would have stored them."""
    a, b = banks
    odd = {"price": "1000.2500", "quantity": "0.000001", "settlement_date": "2026-12-31",
           "location": "Zürich \"X\"",
           "attributes": {"fee": 1.10, "big": 123456789012345678901234567890,
                          "tiny": "1E-30", "nested": [{"é": None, "ok": True}]}}
    rest = await batch(client, a, '{"trade_id": "A-odd", "counterparty": "BANKB", '
                       '"side": "sell", "product": "XAU", "quantity": 0.000001, '
                       '"price": 1000.2500, "currency": "USD", "trade_date": "2026-11-20", '
                       '"settlement_date": "2026-12-31", "location": "Zürich \\"X\\"", '
                       '"attributes": {"fee": 1.10, "big": 123456789012345678901234567890, '
                       '"tiny": "1E-30", "nested": [{"é": null, "ok": true}]}}')
    matched = await batch(client, b, buy("B-odd", **odd))
    for result, headers, trade_id in ((rest, a, "A-odd"), (matched, b, "B-odd")):
        trade = result["results"][0]["trade"]
        assert (trade["price"], trade["quantity"]) == ("1000.2500", "0.000001")
        assert trade["settlement_date"] == "2026-12-31"
        assert trade["location"] == 'Zürich "X"'
        # A-odd's answer was its version 1; B-odd's match gave it a version 2 since.
        version = trade["version"]
        stored = await (await client.get(f"/v1/trades/{trade_id}/versions",
                                         headers=headers)).json()
        assert stored["versions"][version - 1] == trade
        assert trade["attributes"] == {"fee": 1.10, "nested": [{"é": None, "ok": True}],
                                        "big": 123456789012345678901234567890,
                                        "tiny": "1E-30"}
    assert matched["results"][0]["trade"]["status"] == "matched"
    raw = await conn.fetchrow(
        "SELECT price::text, quantity::text, attributes::text FROM trades "
        "WHERE trade_id = 'A-odd' AND latest")
    assert (raw["price"], raw["quantity"]) == ("1000.2500", "0.000001")
    assert '"fee": 1.10' in raw["attributes"]
    assert "123456789012345678901234567890" in raw["attributes"]


async def test_idempotent_lines_and_conflicts(client, banks, conn):
    a, _ = banks
    first = await batch(client, a, trade_body("A-1"), trade_body("A-2"), trade_body("A-1"),
                        trade_body("A-2", price="999"))
    assert [r["result"] for r in first["results"]] == [
        "created", "created", "exists", "exists_with_different_fields"]
    assert first["results"][2]["trade"]["version"] == 1
    conflict = first["results"][3]
    assert conflict["trade"] is None
    assert conflict["error"]["error"] == "exists_with_different_fields"
    assert conflict["error"]["details"] == {"fields": ["price"]}
    # The same batch again: nothing new is written; the conflict is still one.
    again = await batch(client, a, trade_body("A-1"), trade_body("A-2"), trade_body("A-1"),
                        trade_body("A-2", price="999"))
    assert [r["result"] for r in again["results"]] == [
        "exists", "exists", "exists", "exists_with_different_fields"]
    assert await conn.fetchval("SELECT count(*) FROM trades") == 2
    assert await conn.fetchval("SELECT count(*) FROM feed") == 2
    # A trade submitted singly is recognised by a batch, and the other way round.
    resp = await client.post("/v1/trades", json=trade_body("A-3"), headers=a)
    assert resp.status == 201
    mixed = await batch(client, a, trade_body("A-3"), trade_body("A-3", location="NYC"))
    assert [r["result"] for r in mixed["results"]] == ["exists", "exists_with_different_fields"]
    resp = await client.post("/v1/trades", json=trade_body("A-1"), headers=a)
    assert resp.status == 200


async def _answered_from_the_other_writer_s_a1(client, a, conn, result) -> None:
    """A batch of A-0, A-1, A-2 (A-2 matching B-2) where another writer created A-1 (an
    XAG trade) meanwhile: that line is answered from it, the others as usual."""
    assert [r["result"] for r in result["results"]] == ["created",
                                                        "exists_with_different_fields",
                                                        "created"]
    assert result["results"][0]["trade"]["status"] == "unmatched"
    assert result["results"][2]["trade"]["status"] == "matched"
    stored = await (await client.get("/v1/trades/A-1", headers=a)).json()
    assert stored["version"] == 1 and stored["product"] == "XAG"
    assert await conn.fetchval("SELECT count(*) FROM trades WHERE trade_id = 'A-1'") == 1


@pytest.mark.parametrize("part", [None, 1], ids=["one-part", "a-part-a-line"])
async def test_a_trade_id_another_writer_created_meanwhile_is_as_if_stored(
        client, banks, conn, monkeypatch, part):
    """Between the batch's read of its trade_ids and its insert, another writer creates
    one of them — under another match key, since the batch holds its own keys' locks
    (here: the read is made to miss a trade posted singly before): the line is answered
    from that trade, and the rest of the batch is matched as usual. Also with the first
    versions written a line at a time (batch_book.FIRST_VERSIONS), the skipped trade_id
    in a part of its own between two others."""
    if part is not None:
        monkeypatch.setattr(batch_book, "FIRST_VERSIONS", part)
        first_submissions = bulk.first_submissions
        parts = []

        async def spy(conn, news):
            parts.append([new.trade_id for new in news])
            return await first_submissions(conn, news)

        monkeypatch.setattr(bulk, "first_submissions", spy)
    a, b = banks
    resp = await client.post("/v1/trades", json=trade_body("A-1", product="XAG"),
                             headers=a)
    assert resp.status == 201
    resp = await client.post("/v1/trades", json=buy("B-2", price="1001.5"), headers=b)
    assert resp.status == 201
    latest_many = bulk.latest_many
    calls = []

    async def first_read_misses(conn, participant, trade_ids):
        calls.append(list(trade_ids))
        return {} if len(calls) == 1 else await latest_many(conn, participant, trade_ids)

    monkeypatch.setattr(bulk, "latest_many", first_read_misses)
    result = await batch(client, a, trade_body("A-0", price="999.5"),
                         trade_body("A-1", price="1000.5"), trade_body("A-2", price="1001.5"))
    assert calls == [["A-0", "A-1", "A-2"], ["A-1"]]
    await _answered_from_the_other_writer_s_a1(client, a, conn, result)
    if part is not None:
        assert parts == [["A-0"], ["A-1"], ["A-2"]]
    await check_matching_invariants(conn)


async def test_a_trade_id_another_writer_creates_before_the_write_is_as_if_stored(
        client, banks, conn, monkeypatch):
    """A batch writes its new trades' version 1 after matching them: another writer
    creating one of their trade_ids after the batch found it free (here: a single POST
    under another match key, committed while the batch asks its first submissions) makes
    the batch's write fail on the trade's key, and the batch is done again — the line is
    answered from that trade, the rest matched as usual, nothing written twice."""
    a, b = banks
    resp = await client.post("/v1/trades", json=buy("B-2", price="1001.5"), headers=b)
    assert resp.status == 201
    first_submissions = bulk.first_submissions
    asked = []

    async def another_writer_meanwhile(conn_, news):
        found = await first_submissions(conn_, news)
        asked.append(sorted(trade_id for _, trade_id in found))
        if len(asked) == 1:
            resp = await client.post("/v1/trades", json=trade_body("A-1", product="XAG"),
                                     headers=a)
            assert resp.status == 201
        return found

    monkeypatch.setattr(bulk, "first_submissions", another_writer_meanwhile)
    result = await batch(client, a, trade_body("A-0", price="999.5"),
                         trade_body("A-1", price="1000.5"), trade_body("A-2", price="1001.5"))
    assert asked == [["A-0", "A-1", "A-2"], ["A-0", "A-2"]]
    await _answered_from_the_other_writer_s_a1(client, a, conn, result)
    assert await conn.fetchval("SELECT count(*) FROM trades") == \
        await conn.fetchval("SELECT count(*) FROM feed") == 9  # A-0 mismatched B-2 first
    await check_matching_invariants(conn)


# (WRITE_BEHIND, YIELD_EVERY, FIRST_VERSIONS): as served, and a write every few versions
# and the first versions a few lines at a time, with the event loop let in after every
# line — the writes made while matching goes on must leave the same rows, feed and
# answers as one write at the end.
WRITE_BEHIND = [pytest.param(None, id="as-served"),
                pytest.param((2, 1, 3), id="write-behind")]


@pytest.fixture(params=WRITE_BEHIND)
def write_behind(request, monkeypatch):
    writes = []
    parts = []
    if request.param is not None:
        monkeypatch.setattr(batch_book, "WRITE_BEHIND", request.param[0])
        monkeypatch.setattr(batch_book, "YIELD_EVERY", request.param[1])
        monkeypatch.setattr(batch_book, "FIRST_VERSIONS", request.param[2])
        write_versions = bulk.write_versions
        first_submissions = bulk.first_submissions

        async def spy(conn, versions, stored):
            writes.append(len(versions))
            return await write_versions(conn, versions, stored)

        async def first_spy(conn, news):
            parts.append(len(news))
            return await first_submissions(conn, news)

        monkeypatch.setattr(bulk, "write_versions", spy)
        monkeypatch.setattr(bulk, "first_submissions", first_spy)
    yield
    if request.param is not None:  # the buys' versions went in several writes
        assert len(writes) >= 2, writes
        assert len(parts) >= 4 and max(parts) == request.param[2], parts


async def test_batches_match_each_other_and_single_submissions(client, banks, conn,
                                                               write_behind):
    a, b = banks
    sells = [trade_body(f"A-{i}", price=f"{1000 + i}.5") for i in range(20)]
    rest = await batch(client, a, *sells)
    assert {r["trade"]["status"] for r in rest["results"]} == {"unmatched"}
    # A single buy matches a batch's sell; a batch's buys match the rest.
    resp = await client.post("/v1/trades", json=buy("B-0", price="1000.5"), headers=b)
    assert (await resp.json())["status"] == "matched"
    buys = [buy(f"B-{i}", price=f"{1000 + i}.5") for i in range(1, 20)]
    matched = await batch(client, b, *buys)
    for i, result in enumerate(matched["results"], 1):
        trade = result["trade"]
        assert result["result"] == "created"
        assert trade["status"] == "matched" and trade["version"] == 2
        assert trade["match"]["counterparty_trade_id"] == f"A-{i}"
        assert trade["match"]["counterparty_version"] == 2
        theirs = await (await client.get(f"/v1/trades/A-{i}", headers=a)).json()
        assert theirs["status"] == "matched"
        assert theirs["match"]["match_id"] == trade["match"]["match_id"]
        assert theirs["match"]["counterparty_trade_id"] == f"B-{i}"
        # The answer is built from what was written, not read back: it must be the
        # stored trade to the microsecond.
        stored = await (await client.get(f"/v1/trades/B-{i}", headers=b)).json()
        assert as_read(trade) == stored
    assert await check_matching_invariants(conn) == 20
    # Version 1 (written superseded) and version 2 of a batch-matched trade come to the
    # sequencer in version order, and keep the trade's first submission.
    rows = await conn.fetch(
        "SELECT f.trade_id, f.version, t.first_submitted_at, t.recorded_at FROM feed f "
        "JOIN trades t USING (participant, trade_id, version) "
        "WHERE f.participant = 'BANKB' ORDER BY f.written_at, f.id")
    for i in range(1, 20):
        own = [r for r in rows if r["trade_id"] == f"B-{i}"]
        assert [r["version"] for r in own] == [1, 2]
        assert own[0]["first_submitted_at"] == own[1]["first_submitted_at"]
        assert own[0]["recorded_at"] < own[1]["recorded_at"]
    # Invariant 5: one feed row per version.
    assert await conn.fetchval("SELECT count(*) FROM trades") == \
        await conn.fetchval("SELECT count(*) FROM feed") == 80


async def test_a_batch_matches_exactly_as_single_submissions_do(client, api, conn,
                                                               write_behind):
    """The same trades, submitted one by one by two banks and in batches by two others,
    end in the same states, version for version: mismatches (the one-at-a-time path
    inside a batch), two lines after one resting trade (a contended candidate),
    tolerances, another trade date."""
    heads = {name: await api.participant(name) for name in ("BANKA", "BANKB", "BANKC",
                                                             "BANKD")}
    resp = await client.put("/v1/rules/XAU", json={"price_tolerance": {"abs": "0.50"}},
                            headers=ADMIN)
    assert resp.status == 200

    def sells(me: str, cp: str) -> list[dict[str, Any]]:
        return [trade_body("S-1", counterparty=cp, price="1000.00"),
                trade_body("S-2", counterparty=cp, price="1003.00"),
                trade_body("S-3", counterparty=cp, price="1010.00"),
                trade_body("S-4", counterparty=cp, price="1020.00", trade_date="2026-11-19")]

    def buys(me: str, cp: str) -> list[dict[str, Any]]:
        return [buy("B-1", counterparty=cp, price="1000.40"),   # within tolerance of S-1
                buy("B-2", counterparty=cp, price="1000.30"),   # S-1 taken: mismatches
                buy("B-3", counterparty=cp, price="1010.00"),   # exact
                buy("B-4", counterparty=cp, price="1003.60"),   # 0.60 off S-2: mismatch
                buy("B-5", counterparty=cp, price="1020.00")]   # S-4 is another day

    for body in sells("BANKA", "BANKB"):
        resp = await client.post("/v1/trades", json=body, headers=heads["BANKA"])
        assert resp.status == 201
    for body in buys("BANKB", "BANKA"):
        resp = await client.post("/v1/trades", json=body, headers=heads["BANKB"])
        assert resp.status == 201
    await batch(client, heads["BANKC"], *sells("BANKC", "BANKD"))
    result = await batch(client, heads["BANKD"], *buys("BANKD", "BANKC"))
    assert [r["result"] for r in result["results"]] == ["created"] * 5

    assert await book_state(conn, "BANKC") == await book_state(conn, "BANKA")
    assert await book_state(conn, "BANKD") == await book_state(conn, "BANKB")
    statuses = {k: v[1] for k, v in (await book_state(conn, "BANKD")).items()}
    assert statuses == {"B-1": "matched", "B-2": "mismatched", "B-3": "matched",
                        "B-4": "mismatched", "B-5": "mismatched"}
    # What the batch answered is each trade's latest version.
    answered = {r["trade"]["trade_id"]: r["trade"]["version"] for r in result["results"]}
    assert answered == {k: v[0] for k, v in (await book_state(conn, "BANKD")).items()}
    await check_matching_invariants(conn)


async def test_the_batch_endpoint_is_documented_and_answers_its_schema(client, banks):
    from kevin.api.openapi_batch import BatchResult

    a, _ = banks
    body = await batch(client, a, trade_body("A-1"), "nope", trade_body("A-1", price="1"))
    BatchResult.model_validate(body)  # the served shape is the documented one
    spec = await (await client.get("/openapi.json")).json()
    operation = spec["paths"]["/v1/trades/batch"]["post"]
    assert "application/x-ndjson" in operation["requestBody"]["content"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/BatchResult"}
    assert "BatchResult" in spec["components"]["schemas"]


async def test_participants_are_isolated(client, banks):
    a, b = banks
    await batch(client, a, trade_body("X-1"))
    # The same trade_id is BANKB's own, new trade: not BANKA's, not a conflict.
    other = await batch(client, b, buy("X-1", price="5"))
    assert other["results"][0]["result"] == "created"
    assert other["results"][0]["trade"]["participant"] == "BANKB"
    mine = await (await client.get("/v1/trades/X-1", headers=a)).json()
    assert mine["price"] == "1000.25" and mine["participant"] == "BANKA"


async def test_auth_content_type_and_limits(client, banks):
    a, _ = banks
    line = ndjson(trade_body("A-1"))
    resp = await client.post("/v1/trades/batch", data=line, headers=NDJSON)
    assert resp.status == 401
    resp = await client.post("/v1/trades/batch", data=line, headers={**ADMIN, **NDJSON})
    assert resp.status == 403
    resp = await client.post("/v1/trades/batch", data=line,
                             headers={**a, "Content-Type": "application/json"})
    assert resp.status == 415
    assert (await resp.json())["error"] == "unsupported_media_type"
    too_many = b"\n".join(json.dumps(trade_body(f"T-{i}")).encode() for i in range(10_001))
    resp = await client.post("/v1/trades/batch", data=io.BytesIO(too_many),
                             headers={**a, **NDJSON})
    assert resp.status == 413
    body = await resp.json()
    assert body["error"] == "payload_too_large" and body["details"]["lines"] == 10_001
    huge = b'{"pad": "' + b"x" * (16 * 1024 * 1024) + b'"}\n'
    resp = await client.post("/v1/trades/batch", data=io.BytesIO(huge), headers={**a, **NDJSON})
    assert resp.status == 413
    resp = await client.get("/v1/trades/A-1", headers=a)
    assert resp.status == 404  # nothing of a refused batch is written


@pytest.mark.slow
async def test_ten_thousand_lines_over_one_mebibyte(client, banks, conn):
    a, b = banks
    lines = [trade_body(f"A-{i}", price=f"{1000 + i}", attributes={"note": "n" * 100})
             for i in range(10_000)]
    body = ndjson(*lines)
    assert len(body) > 1024 * 1024  # past the 1 MiB of every other route
    result = await batch(client, a, *lines)
    assert len(result["results"]) == 10_000
    assert {r["result"] for r in result["results"]} == {"created"}
    matched = await batch(client, b, *(buy(f"B-{i}", price=f"{1000 + i}")
                                       for i in range(0, 10_000, 2)))
    assert {r["trade"]["status"] for r in matched["results"]} == {"matched"}
    assert await check_matching_invariants(conn) == 5_000


async def test_a_batch_hands_its_freed_heap_back_once_answered(client, banks, monkeypatch):
    from kevin import heap

    assert heap._TRIM is not None, "glibc's malloc_trim should be found on Linux"
    trimmed: list[float] = []
    monkeypatch.setattr(heap, "trim", lambda: trimmed.append(1.0))
    answer = await batch(client, banks[0], trade_body("A-1"))
    assert answer["results"][0]["result"] == "created"

    async def called() -> bool:
        return bool(trimmed)

    await wait_for(called, timeout=5)
