"""The exceptions list as CSV (``/ui/exceptions.csv``): what the page shows under the same
tab and filters, every trade of it, amounts exact, notes counted on the book's own trades
only, and nothing a spreadsheet would run as a formula."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from decimal import Decimal

from kevin.ui.exports import COLUMNS
from tests.conftest import ADMIN, ADMIN_TOKEN, trade_body
from tests.test_ui import mismatched_pair, submit
from tests.ui_helpers import Browser


def _rows(text: str) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text))
    assert tuple(reader.fieldnames or ()) == COLUMNS
    return list(reader)


async def test_a_tab_downloads_as_csv_under_the_pages_filters(client, banks):
    a, b = banks
    await mismatched_pair(client, a, b, "1")
    await mismatched_pair(client, a, b, "2", product="XAG")
    resp = await client.post("/v1/trades/A-1/notes", json={"text": "Called them."}, headers=a)
    assert resp.status == 201
    bank_a = await Browser.login(client, a["Authorization"].split()[1])
    page = await bank_a.page("/ui/exceptions?tab=mismatched&product=XAU")
    assert 'href="/ui/exceptions.csv?tab=mismatched&amp;product=XAU' in page

    resp = await bank_a.get("/ui/exceptions.csv?tab=mismatched&product=XAU")
    assert resp.status == 200 and resp.content_type == "text/csv"
    assert resp.headers["Content-Disposition"].startswith(
        'attachment; filename="kevin-mismatched-BANKA-')
    [row] = _rows(await resp.text())
    assert (row["participant"], row["trade_id"], row["status"]) == ("BANKA", "A-1", "mismatched")
    assert Decimal(row["price"]) == Decimal("1000.25") and row["quantity"] == "100"
    assert row["differences"] == "B-1: price" and row["overdue"] == "false"
    assert row["notes"] == "1" and row["last_note_by"].startswith("key ")
    assert datetime.fromisoformat(row["last_note_at"]).tzinfo is not None
    assert datetime.fromisoformat(row["first_submitted_at"]).tzinfo is not None
    # Every product: both trades, oldest first as on the page.
    resp = await bank_a.get("/ui/exceptions.csv?tab=mismatched")
    assert [r["trade_id"] for r in _rows(await resp.text())] == ["A-1", "A-2"]


async def test_notes_are_counted_on_the_books_own_trades_only(client, banks):
    a, b = banks
    await mismatched_pair(client, a, b, "1")
    assert (await client.post("/v1/trades/A-1/notes", json={"text": "ours"},
                              headers=a)).status == 201
    bank_b = await Browser.login(client, b["Authorization"].split()[1])
    resp = await bank_b.get("/ui/exceptions.csv?tab=alleged")
    [row] = _rows(await resp.text())
    assert row["trade_id"] == "A-1" and row["notes"] == "0" and row["last_note_by"] == ""
    admin = await Browser.login(client, ADMIN_TOKEN)
    resp = await admin.get("/ui/exceptions.csv?tab=mismatched")
    counted = {r["trade_id"]: r["notes"] for r in _rows(await resp.text())}
    assert counted == {"A-1": "1", "B-1": "0"}


async def test_text_a_spreadsheet_would_run_is_written_as_text(client, banks):
    a, _ = banks
    await submit(client, a, trade_body("A-1", location="=HYPERLINK(\"http://x\",\"y\")"))
    resp = await client.post("/v1/participants/BANKA/keys", json={"label": "@mallory"},
                             headers=ADMIN)
    mallory = {"Authorization": f"Bearer {(await resp.json())['api_key']}"}
    assert (await client.post("/v1/trades/A-1/notes", json={"text": "x"},
                              headers=mallory)).status == 201
    bank_a = await Browser.login(client, a["Authorization"].split()[1])
    [row] = _rows(await (await bank_a.get("/ui/exceptions.csv?tab=unmatched")).text())
    assert row["location"] == "'=HYPERLINK(\"http://x\",\"y\")"
    assert row["last_note_by"] == "'@mallory"


async def test_the_csv_needs_a_session_and_a_tab_of_trades(client, banks):
    a, _ = banks
    resp = await client.get("/ui/exceptions.csv", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"].startswith("/ui/login")
    bank_a = await Browser.login(client, a["Authorization"].split()[1])
    assert (await bank_a.get("/ui/exceptions.csv?tab=proposals")).status == 422
    assert (await bank_a.get("/ui/exceptions.csv?tab=nope")).status == 422
    # Another participant's book is not the caller's to download.
    assert (await bank_a.get("/ui/exceptions.csv?participant=BANKB")).status == 404
