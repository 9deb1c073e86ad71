"""Standard formats over HTTP: BIC registration, POST /v1/trades/import (each record like a
batch line: results shape, limits, matching) and GET /v1/trades/{id}/confirmation."""

from __future__ import annotations

import codecs
import csv
import io
import itertools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from tests.conftest import ADMIN, trade_body
from tests.matching_checks import check_matching_invariants
from tests.test_formats import body_of, fx_trades
from tests.test_metrics import scrape, value

DATA = Path(__file__).parent / "data" / "formats"
CSV = {"Content-Type": "text/csv"}
FIN = {"Content-Type": "text/plain"}
XML = {"Content-Type": "application/xml"}
HEADER = ("trade_id,counterparty,side,product,quantity,price,currency,trade_date,"
          "settlement_date,location,attributes.desk\n")


async def register(client: Any, name: str, bic: str | None, status: int = 200) -> Any:
    resp = await client.put(f"/v1/participants/{name}", json={"bic": bic}, headers=ADMIN)
    assert resp.status == status, await resp.text()
    return await resp.json()


@pytest.fixture
async def bics(client, banks):
    """BANKA is BANKGB2L, BANKB is BANKUS33 (the sample messages' parties)."""
    await register(client, "BANKA", "BANKGB2L")
    await register(client, "BANKB", "BANKUS33")
    return banks


async def import_file(client: Any, headers: dict[str, str], kind: str, data: bytes,
                      content: dict[str, str], status: int = 200) -> Any:
    resp = await client.post(f"/v1/trades/import?format={kind}", data=io.BytesIO(data),
                             headers={**headers, **content})
    assert resp.status == status, await resp.text()
    return await resp.json()


def sample(name: str) -> bytes:
    return (DATA / name).read_bytes()


# --- BIC registration ----------------------------------------------------------------------


async def test_bic_registration_is_admin_only_unique_and_normalised(client, banks):
    a, _ = banks
    assert await register(client, "BANKA", "BANKGB2L") == {"name": "BANKA",
                                                           "bic": "BANKGB2LXXX"}
    resp = await client.put("/v1/participants/BANKA", json={"bic": "BANKGB2L"}, headers=a)
    assert resp.status == 403
    taken = await register(client, "BANKB", "BANKGB2LXXX", status=409)
    assert taken["error"] == "conflict"
    bad = await register(client, "BANKB", "bankgb2l", status=422)
    assert bad["details"][0]["field"] == "bic"
    assert (await register(client, "NOBODY", "BANKUS33", status=404))["error"] == "not_found"
    assert await register(client, "BANKA", None) == {"name": "BANKA", "bic": None}
    assert await register(client, "BANKB", "BANKGB2L") == {"name": "BANKB",
                                                           "bic": "BANKGB2LXXX"}


# --- MT300 ---------------------------------------------------------------------------------


async def test_mt300_import_creates_and_matches_like_a_batch(client, bics, conn):
    a, b = bics
    # BANKB's side, as JSON: it sells EUR 1,000,000 to BANKA at 1.0845.
    resp = await client.post("/v1/trades", headers=b, json=trade_body(
        "US-1", counterparty="BANKA", side="sell", product="EURUSD", quantity="1000000",
        price="1.0845", currency="USD", settlement_date="2026-11-24", location=None,
        attributes={}))
    assert resp.status == 201
    body = await import_file(client, a, "mt300", sample("mt300_newt.fin"), FIN)
    [result] = body["results"]
    assert result["line"] == 1 and result["result"] == "created" and result["error"] is None
    trade = result["trade"]
    assert trade["trade_id"] == "FX-20261120-001" and trade["status"] == "matched"
    assert (trade["side"], trade["product"], trade["quantity"], trade["price"]) == (
        "buy", "EURUSD", "1000000.00", "1.0845")
    assert trade["match"]["counterparty_trade_id"] == "US-1"
    again = await import_file(client, a, "mt300", sample("mt300_newt.fin"), FIN)
    assert again["results"][0]["result"] == "exists"
    await check_matching_invariants(conn)
    # Counted as a batch's lines are: the JSON side and the record, then the restatement.
    metrics = await scrape(client)
    assert value(metrics, "kevin_submissions_total", result="created") == 2
    assert value(metrics, "kevin_submissions_total", result="exists") == 1
    assert value(metrics, "kevin_matches_total", kind="auto") == 1


async def test_mt300_new_amend_cancel_in_order(client, bics):
    a, _ = bics
    body = await import_file(client, a, "mt300", sample("mt300_sequence.fin"), FIN)
    assert [(r["line"], r["result"]) for r in body["results"]] == [
        (1, "created"), (17, "amended"), (34, "cancelled")]
    assert body["results"][1]["trade"]["price"] == "150.153"
    resp = await client.get("/v1/trades/FX-002/versions", headers=a)
    assert [(v["reason"], v["status"]) for v in (await resp.json())["versions"]] == [
        ("submitted", "unmatched"), ("amended", "unmatched"), ("cancelled", "cancelled")]
    # The same file again writes nothing: the NEWT no longer states the stored terms (as
    # a POST of the first body would be refused), the trade cannot be amended once
    # cancelled, and the CANC restates what is stored.
    again = await import_file(client, a, "mt300", sample("mt300_sequence.fin"), FIN)
    assert [r["result"] for r in again["results"]] == [
        "exists_with_different_fields", "invalid", "exists"]
    assert again["results"][1]["error"]["error"] == "trade_cancelled"


@pytest.mark.parametrize(("name", "field"), [
    ("mt300_missing_30v.fin", ":30V:"), ("mt300_bad_date.fin", ":30T:"),
    ("mt300_two_decimal_marks.fin", ":32B:"), ("mt300_unknown_bic.fin", ":87A:"),
    ("mt300_truncated.fin", "{4:"),
])
async def test_mt300_malformed_message_is_invalid_and_spoils_no_other(client, bics, name,
                                                                      field):
    a, _ = bics
    data = sample(name) + sample("mt300_sequence.fin")
    body = await import_file(client, a, "mt300", data, FIN)
    results = body["results"]
    assert [r["result"] for r in results] == ["invalid", "created", "amended", "cancelled"]
    assert results[0]["error"]["error"] == "malformed_record"
    assert results[0]["error"]["details"][0]["field"] == field


async def test_mt300_trade_validation_names_the_tag(client, bics):
    a, _ = bics
    # Valid SWIFT, but a reference Kevin's trade_id pattern refuses (a space).
    data = sample("mt300_newt.fin").replace(b":20:FX-20261120-001", b":20:FX 1")
    [result] = (await import_file(client, a, "mt300", data, FIN))["results"]
    assert result["result"] == "invalid" and result["error"]["error"] == "validation_failed"
    assert result["error"]["details"][0]["field"] == "trade_id"
    assert result["error"]["details"][0]["source"] == ":20:"


async def test_mt300_needs_the_importers_bic(client, banks):
    a, _ = banks
    body = await import_file(client, a, "mt300", sample("mt300_newt.fin"), FIN, status=409)
    assert "PUT /v1/participants/BANKA" in body["message"]


# --- FpML ----------------------------------------------------------------------------------


async def test_fpml_import_each_party_its_own_view_and_they_match(client, bics):
    a, b = bics
    document = sample("fpml_request_confirmation.xml")
    [ours] = (await import_file(client, a, "fpml", document, XML))["results"]
    assert ours["result"] == "created" and ours["trade"]["side"] == "buy"
    [theirs] = (await import_file(client, b, "fpml", document, XML))["results"]
    assert theirs["result"] == "created" and theirs["trade"]["trade_id"] == "US-77"
    assert theirs["trade"]["status"] == "matched"
    assert theirs["trade"]["match"]["counterparty_trade_id"] == "FPML-0001"


@pytest.mark.parametrize("name", ["fpml_xxe.xml", "fpml_billion_laughs.xml"])
async def test_fpml_entities_refused_with_422(client, bics, name):
    a, _ = bics
    body = await import_file(client, a, "fpml", sample(name), XML, status=422)
    assert body["error"] == "unreadable_file"


async def test_fpml_missing_element_is_invalid(client, bics):
    a, _ = bics
    [result] = (await import_file(client, a, "fpml", sample("fpml_missing_rate.xml"),
                                  XML))["results"]
    assert result["result"] == "invalid"
    assert result["error"]["details"][0]["field"] == "exchangeRate/rate"


# --- CSV -----------------------------------------------------------------------------------


async def test_csv_rows_like_batch_lines(client, banks, conn):
    a, b = banks
    text = (HEADER
            + "A-1,BANKB,sell,XAU,100,1000.25,USD,2026-11-20,2026-11-24,LDN,metals\n"
            + "A-2,BANKB,sell,XAU,-1,1000.25,USD,2026-11-20,2026-11-24,LDN,\n"
            + "A-3,BANKA,sell,XAU,1,1,USD,2026-11-20,2026-11-24,,\n"
            + "A-1,BANKB,sell,XAU,100,1000.25,USD,2026-11-20,2026-11-24,LDN,metals\n"
            + "A-1,BANKB,sell,XAU,101,1000.25,USD,2026-11-20,2026-11-24,LDN,metals\n")
    await client.post("/v1/trades", headers=b, json=trade_body(
        "B-1", counterparty="BANKA", side="buy", attributes={}))
    body = await import_file(client, a, "csv", codecs.BOM_UTF8 + text.encode(), CSV)
    results = body["results"]
    assert [(r["line"], r["result"]) for r in results] == [
        (2, "created"), (3, "invalid"), (4, "invalid"), (5, "exists"),
        (6, "exists_with_different_fields")]
    assert results[0]["trade"]["status"] == "matched"
    assert results[0]["trade"]["attributes"] == {"desk": "metals"}
    assert results[1]["error"]["details"][0]["field"] == "quantity"
    assert results[2]["error"]["details"][0]["field"] == "counterparty"
    assert results[4]["error"]["details"] == {"fields": ["quantity"]}
    await check_matching_invariants(conn)


async def test_csv_not_utf8_is_422_and_other_charsets_415(client, banks):
    a, _ = banks
    latin = (HEADER + "A-1,BANKB,sell,XAU,1,1,USD,2026-11-20,2026-11-24,Z\xfcrich,\n"
             ).encode("latin-1")
    body = await import_file(client, a, "csv", latin, CSV, status=422)
    assert body["error"] == "unreadable_file" and body["details"][0]["line"] == 2
    await import_file(client, a, "csv", latin, {"Content-Type": "text/csv; charset=latin-1"},
                      status=415)


async def test_import_refusals_of_the_whole_request(client, banks):
    a, _ = banks
    await import_file(client, a, "csv", HEADER.encode(), {"Content-Type": "application/json"},
                      status=415)
    body = await import_file(client, a, "xlsx", b"", CSV, status=422)
    assert body["details"][0]["field"] == "format"
    body = await import_file(client, a, "csv", b"trade_id,colour\n", CSV, status=422)
    assert {d["field"] for d in body["details"]} >= {"colour", "price"}
    resp = await client.post("/v1/trades/import?format=csv", data=HEADER, headers={**ADMIN,
                                                                                   **CSV})
    assert resp.status == 403


async def test_import_limits_are_the_batch_limits(client, banks):
    a, _ = banks
    row = "A-{},BANKB,sell,XAU,1,1,USD,2026-11-20,2026-11-24,,\n"
    data = (HEADER + "".join(row.format(i) for i in range(10_001))).encode()
    body = await import_file(client, a, "csv", data, CSV, status=413)
    assert body["details"] == {"max_records": 10_000, "records": 10_001}
    big = HEADER.encode() + b"x" * (16 * 1024 * 1024)
    await import_file(client, a, "csv", big, CSV, status=413)
    resp = await client.get("/v1/trades?limit=1", headers=a)
    assert (await resp.json())["trades"] == []


# --- confirmations out -----------------------------------------------------------------------


async def fx_trade(client: Any, headers: dict[str, str], trade_id: str = "A-FX") -> None:
    resp = await client.post("/v1/trades", headers=headers, json=trade_body(
        trade_id, side="buy", product="EURUSD", quantity="2500000", price="1.0845",
        currency="USD", location=None, attributes={}))
    assert resp.status == 201, await resp.text()


@pytest.mark.parametrize(("kind", "content"), [("mt300", FIN), ("fpml", XML)])
async def test_confirmation_renders_the_latest_version_and_imports_back(client, bics, kind,
                                                                         content):
    a, _ = bics
    await fx_trade(client, a)
    resp = await client.get(f"/v1/trades/A-FX/confirmation?format={kind}", headers=a)
    assert resp.status == 200 and resp.headers["ETag"] == '"1"'
    assert resp.content_type == content["Content-Type"]
    rendered = await resp.read()
    if kind == "mt300":
        assert b":22C:BANK2L0845BANK33" in rendered and b":32B:EUR2500000," in rendered
    # The very same trade: importing its confirmation is an idempotent resubmission.
    [result] = (await import_file(client, a, kind, rendered, content))["results"]
    assert result["result"] == "exists", result
    assert result["trade"]["version"] == 1


async def test_confirmation_of_a_cancelled_trade_is_a_canc(client, bics):
    a, _ = bics
    await fx_trade(client, a)
    resp = await client.delete("/v1/trades/A-FX", headers={**a, "If-Match": '"1"'})
    assert resp.status == 200
    resp = await client.get("/v1/trades/A-FX/confirmation?format=mt300", headers=a)
    text = await resp.text()
    assert ":22A:CANC" in text and ":21:A-FX" in text
    resp = await client.get("/v1/trades/A-FX/confirmation?format=fpml", headers=a)
    assert resp.status == 422 and (await resp.json())["error"] == "not_representable"


async def test_confirmation_refusals(client, banks):
    a, b = banks
    await fx_trade(client, a)
    resp = await client.get("/v1/trades/A-FX/confirmation?format=mt300", headers=a)
    assert resp.status == 409 and (await resp.json())["details"] == {
        "participants": ["BANKA", "BANKB"]}
    await register(client, "BANKA", "BANKGB2L")
    await register(client, "BANKB", "BANKUS33")
    resp = await client.get("/v1/trades/A-FX/confirmation?format=pdf", headers=a)
    assert resp.status == 422
    resp = await client.get("/v1/trades/A-FX/confirmation?format=mt300", headers=b)
    assert resp.status == 404
    resp = await client.get("/v1/trades/A-FX/confirmation?format=mt300&participant=BANKA",
                            headers=ADMIN)
    assert resp.status == 200
    resp = await client.post("/v1/trades", headers=a, json=trade_body("A-XAU"))
    resp = await client.get("/v1/trades/A-XAU/confirmation?format=mt300", headers=a)
    assert resp.status == 422
    assert (await resp.json())["details"][0]["field"] == "product"


# --- round trips through the service ---------------------------------------------------------

_ids = itertools.count()


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
@given(trade=fx_trades())
async def test_round_trip_through_the_service(client, bics, trade):
    """A trade submitted as JSON, rendered as MT300 and as FpML, each imported back: the
    very same trade (an idempotent resubmission, version 1); and written as a CSV row by
    the csv module, imported as a new trade with the same fields."""
    a, _ = bics
    trade_id = f"H{next(_ids)}{trade.trade_id}"[:16]
    body = {**body_of(trade), "trade_id": trade_id, "counterparty": "BANKB"}
    resp = await client.post("/v1/trades", headers=a, json=body)
    assert resp.status == 201, await resp.text()
    stored = await resp.json()
    for kind, content in (("mt300", FIN), ("fpml", XML)):
        resp = await client.get(f"/v1/trades/{trade_id}/confirmation?format={kind}", headers=a)
        assert resp.status == 200, await resp.text()
        [result] = (await import_file(client, a, kind, await resp.read(), content))["results"]
        assert (result["result"], result["trade"]) == ("exists", stored)
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(body)
    writer.writerow({**body, "trade_id": trade_id + "c"}.values())
    [result] = (await import_file(client, a, "csv", out.getvalue().encode(), CSV))["results"]
    assert result["result"] == "created"
    assert {k: result["trade"][k] for k in body} == {**stored_terms(stored),
                                                      "trade_id": trade_id + "c"}


def stored_terms(trade: dict[str, Any]) -> dict[str, Any]:
    return {k: trade[k] for k in ("trade_id", "counterparty", "side", "product", "quantity",
                                  "price", "currency", "trade_date", "settlement_date")}
