"""Notes on a trade: what the people working a participant's exceptions write down about
one of its trades, kept with the trade's version and who wrote it — the label of the key
that wrote it — and never shown to the counterparty or changed."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from kevin.domain.keys import hash_key, key_id
from tests.conftest import ADMIN, ADMIN_TOKEN, bearer, trade_body
from tests.processes import run_cli
from tests.ui_helpers import Browser


async def _labelled_key(client: TestClient, name: str, label: str) -> dict[str, str]:
    resp = await client.post(f"/v1/participants/{name}/keys", json={"label": label},
                             headers=ADMIN)
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    assert created["label"] == label
    return bearer(created["api_key"])


async def _note(client: TestClient, trade_id: str, text: str, headers: dict[str, str],
                query: str = "") -> dict[str, object]:
    resp = await client.post(f"/v1/trades/{trade_id}/notes{query}", json={"text": text},
                             headers=headers)
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def _notes(client: TestClient, trade_id: str, headers: dict[str, str],
                 query: str = "") -> list[dict[str, object]]:
    resp = await client.get(f"/v1/trades/{trade_id}/notes{query}", headers=headers)
    assert resp.status == 200, await resp.text()
    return (await resp.json())["notes"]


async def test_notes_are_kept_with_the_version_and_who_wrote_them(client, banks):
    a, _ = banks
    alice = await _labelled_key(client, "BANKA", "alice")
    assert (await client.post("/v1/trades", json=trade_body("A-1"), headers=a)).status == 201
    assert await _notes(client, "A-1", a) == []

    first = await _note(client, "A-1", "Called BANKB: they book it at 1000.50.", alice)
    assert first["trade_id"] == "A-1" and first["participant"] == "BANKA"
    assert first["version"] == 1 and first["author"] == "alice"
    assert first["key_id"] == key_id(hash_key(alice["Authorization"].split()[1]))
    # The trade moves on; the next note is kept with the version it was written at. The
    # participant's first key has no label: it is named by its id.
    resp = await client.put("/v1/trades/A-1", json=trade_body("A-1", price="1000.50"),
                            headers={**a, "If-Match": '"1"'})
    assert resp.status == 200, await resp.text()
    second = await _note(client, "A-1", "Amended to their price.\nWaiting for the match.", a)
    first_key = key_id(hash_key(a["Authorization"].split()[1]))
    assert second["version"] == 2 and second["author"] == f"key {first_key}"
    # The admin writes on a participant's trade by naming it, as its reads do.
    third = await _note(client, "A-1", "Escalated to the desk head.", ADMIN,
                        "?participant=BANKA")
    assert third["author"] == "admin" and third["key_id"] is None

    listed = await _notes(client, "A-1", a)
    assert listed == [first, second, third]  # oldest first, as written
    assert await _notes(client, "A-1", ADMIN, "?participant=BANKA") == listed
    at = [datetime.fromisoformat(str(n["written_at"])) for n in listed]
    assert at == sorted(at) and all(t.tzinfo is not None for t in at)
    # A note is no version of the trade: the trade is as it was.
    resp = await client.get("/v1/trades/A-1/versions", headers=a)
    assert len((await resp.json())["versions"]) == 2


async def test_a_note_is_the_participants_own(client, banks):
    """The counterparty never sees it, nor can it write one on the trade: 404, as for
    any trade of another participant (existence is not leaked)."""
    a, b = banks
    assert (await client.post("/v1/trades", json=trade_body("A-1"), headers=a)).status == 201
    await _note(client, "A-1", "Internal: the desk booked the wrong date.", a)
    for resp in (await client.get("/v1/trades/A-1/notes", headers=b),
                 await client.post("/v1/trades/A-1/notes", json={"text": "hi"}, headers=b),
                 await client.get("/v1/trades/A-1/notes?participant=BANKA", headers=b)):
        assert resp.status == 404, await resp.text()
    # BANKB's own trade of that id, once it has one, has its own notes: none.
    resp = await client.post("/v1/trades", json=trade_body(
        "A-1", counterparty="BANKA", side="buy"), headers=b)
    assert resp.status in (200, 201), await resp.text()
    assert await _notes(client, "A-1", b) == []


async def test_bad_notes_are_refused_and_nothing_is_written(client, banks, conn):
    a, _ = banks
    assert (await client.post("/v1/trades", json=trade_body("A-1"), headers=a)).status == 201
    for body, status in (({"text": ""}, 422), ({"text": "   \n "}, 422),
                         ({"text": "x" * 2001}, 422), ({"text": "a\x00b"}, 422),
                         ({"text": "bell\x07"}, 422), ({"text": 5}, 422), ({}, 422),
                         ({"text": "ok", "author": "someone else"}, 422)):
        resp = await client.post("/v1/trades/A-1/notes", json=body, headers=a)
        assert resp.status == status, (body, await resp.text())
        assert (await resp.json())["error"] == "validation_failed"
    resp = await client.post("/v1/trades/A-1/notes", data="text", headers=a)
    assert resp.status == 415
    resp = await client.post("/v1/trades/A-1/notes", data="{",
                             headers={**a, "Content-Type": "application/json"})
    assert resp.status == 400
    assert (await client.post("/v1/trades/NOPE/notes", json={"text": "x"},
                              headers=a)).status == 404
    assert (await client.get("/v1/trades/NOPE/notes", headers=a)).status == 404
    assert (await client.post("/v1/trades/A-1/notes", json={"text": "x"})).status == 401
    # The admin must say whose trade.
    resp = await client.post("/v1/trades/A-1/notes", json={"text": "x"}, headers=ADMIN)
    assert resp.status == 422
    assert await conn.fetchval("SELECT count(*) FROM trade_notes") == 0
    # The longest note, and one in any script, are taken whole.
    text = "é" * 1999 + "\u20ac"
    assert (await _note(client, "A-1", text, a))["text"] == text


async def test_notes_are_append_only_in_the_database(client, banks, conn):
    a, _ = banks
    assert (await client.post("/v1/trades", json=trade_body("A-1"), headers=a)).status == 201
    await _note(client, "A-1", "Said once.", a)
    for statement in ("UPDATE trade_notes SET body = 'rewritten'", "DELETE FROM trade_notes",
                      "TRUNCATE trade_notes"):
        with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
            await conn.execute(statement)
    assert [r["body"] for r in await conn.fetch("SELECT body FROM trade_notes")] == [
        "Said once."]


async def test_key_labels_are_checked_and_listed(client, banks):
    resp = await client.post("/v1/participants", json={"name": "BANKC", "label": "ops bot"},
                             headers=ADMIN)
    assert resp.status == 201, await resp.text()
    c = bearer((await resp.json())["api_key"])
    resp = await client.post("/v1/participants/BANKC/keys", json={"label": "  bob  "},
                             headers=ADMIN)
    assert (await resp.json())["label"] == "bob"  # trimmed, as a form field would be
    resp = await client.post("/v1/participants/BANKC/keys", headers=ADMIN)  # no body
    assert resp.status == 201 and (await resp.json())["label"] is None
    resp = await client.get("/v1/participants/BANKC/keys", headers=ADMIN)
    assert [k["label"] for k in (await resp.json())["keys"]] == ["ops bot", "bob", None]
    for body in ({"label": ""}, {"label": "x" * 65}, {"label": "tab\x01"}, {"label": 3},
                 {"lable": "typo"}):
        resp = await client.post("/v1/participants/BANKC/keys", json=body, headers=ADMIN)
        assert resp.status == 422, (body, await resp.text())
    resp = await client.post("/v1/participants/BANKC/keys", data="bob", headers=ADMIN)
    assert resp.status == 415
    # The first key's label names its notes.
    assert (await client.post("/v1/trades", json=trade_body("C-1"), headers=c)).status == 201
    assert (await _note(client, "C-1", "Checked.", c))["author"] == "ops bot"


async def test_writing_a_note_is_logged_for_audit(client, banks):
    a, _ = banks
    assert (await client.post("/v1/trades", json=trade_body("A-1"), headers=a)).status == 201
    with capture_logs() as logs:
        note = await _note(client, "A-1", "A private remark.", a)
    [line] = [entry for entry in logs if entry["event"] == "trade note written"]
    assert line["participant"] == "BANKA" and line["trade_id"] == "A-1"
    assert line["note_id"] == note["note_id"] and line["author"] == note["author"]
    assert "A private remark." not in str(logs)  # what a note says stays in the database


async def test_the_cli_labels_keys(db_url, service) -> None:
    created = run_cli("participant", "add", "BANKC", "--label", "carol",
                      KEVIN_DATABASE_URL=db_url)
    assert created.returncode == 0, created.stderr
    issued = run_cli("participant", "add-key", "BANKC", "--label", "reconciliation bot",
                     KEVIN_DATABASE_URL=db_url)
    assert issued.returncode == 0, issued.stderr
    listed = run_cli("participant", "keys", "BANKC", KEVIN_DATABASE_URL=db_url)
    lines = listed.stdout.splitlines()
    assert len(lines) == 2 and lines[0].endswith("  carol")
    assert lines[1].endswith("  reconciliation bot")
    failed = run_cli("participant", "add-key", "BANKC", "--label", "",
                     KEVIN_DATABASE_URL=db_url)
    assert failed.returncode != 0 and "invalid key label" in failed.stderr
    assert "Traceback" not in failed.stderr


async def test_notes_come_a_page_at_a_time_oldest_first(client, banks):
    a, b = banks
    assert (await client.post("/v1/trades", json=trade_body("A-1"), headers=a)).status == 201
    written = [await _note(client, "A-1", f"Note {i}.", a) for i in range(5)]
    pages, cursor = [], ""
    while True:
        resp = await client.get(f"/v1/trades/A-1/notes?limit=2{cursor}", headers=a)
        assert resp.status == 200, await resp.text()
        page = await resp.json()
        pages.append([n["text"] for n in page["notes"]])
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert pages == [["Note 0.", "Note 1."], ["Note 2.", "Note 3."], ["Note 4."]]
    # Without a limit, the first 100; a page that ends the list says so.
    whole = await (await client.get("/v1/trades/A-1/notes", headers=a)).json()
    assert whole == {"notes": written, "next_cursor": None}
    # A cursor is the caller's own list's: another participant still gets 404.
    resp = await client.get(f"/v1/trades/A-1/notes?limit=2{cursor}", headers=b)
    assert resp.status == 404
    for query in ("limit=0", "limit=1001", "limit=x", "cursor=bm90LWEtbnVtYmVy",
                  "cursor=%%%", "cursor=MA"):  # "not-a-number"; "0"
        resp = await client.get(f"/v1/trades/A-1/notes?{query}", headers=a)
        assert resp.status == 422, query
        assert (await resp.json())["error"] == "validation_failed"


# --- the workbench's trade page -------------------------------------------------------


async def test_the_workbench_writes_notes_as_the_key_that_logged_in(client, banks, conn):
    a, b = banks
    alice = await _labelled_key(client, "BANKA", "alice")
    assert (await client.post("/v1/trades", json=trade_body("A-1"), headers=a)).status == 201
    bank_a = await Browser.login(client, alice["Authorization"].split()[1])
    resp = await bank_a.post_form("/ui/trades/A-1/notes", {"text": "  Chased by phone.  "})
    assert resp.status == 303 and resp.headers["Location"] == "/ui/trades/A-1"
    page = await bank_a.page("/ui/trades/A-1")
    assert "Chased by phone." in page and 'class="author">alice<' in page
    # Every page says whom the session acts as: the participant, and the key's label.
    assert 'id="who">BANKA<' in page and 'id="who-label">alice<' in page
    unlabelled = await Browser.login(client, a["Authorization"].split()[1])
    assert 'id="who-label"' not in await unlabelled.page("/ui/trades/A-1")
    # The session's API calls write as its key too (with the CSRF token, as any unsafe
    # call the cookie authenticates).
    resp = await client.post("/v1/trades/A-1/notes", json={"text": "From the page's script."},
                             headers={**bank_a.cookie, "X-CSRF-Token": bank_a.csrf})
    assert resp.status == 201 and (await resp.json())["author"] == "alice"

    admin = await Browser.login(client, ADMIN_TOKEN)
    resp = await admin.post_form("/ui/trades/A-1/notes",
                                 {"participant": "BANKA", "text": "Seen by operations."})
    assert 'id="notes-earlier"' not in await bank_a.page("/ui/trades/A-1")
    assert resp.status == 303 and resp.headers["Location"] == "/ui/trades/A-1?participant=BANKA"
    assert [(r["author"], r["body"]) for r in await conn.fetch(
        "SELECT author, body FROM trade_notes ORDER BY note_id")] == [
        ("alice", "Chased by phone."), ("alice", "From the page's script."),
        ("admin", "Seen by operations.")]


async def test_the_workbench_refuses_bad_or_foreign_notes_and_writes_nothing(
        client, banks, conn):
    a, b = banks
    assert (await client.post("/v1/trades", json=trade_body("A-1"), headers=a)).status == 201
    bank_a = await Browser.login(client, a["Authorization"].split()[1])
    bank_b = await Browser.login(client, b["Authorization"].split()[1])
    resp = await bank_a.post_form("/ui/trades/A-1/notes", {"text": "forged"}, csrf=False)
    assert resp.status == 403
    for text in ("", "   ", "x" * 2001, "nul\x00"):
        resp = await bank_a.post_form("/ui/trades/A-1/notes", {"text": text})
        assert resp.status == 422, text
    resp = await bank_b.post_form("/ui/trades/A-1/notes", {"text": "not mine"})
    assert resp.status == 404
    page = await bank_a.page("/ui/trades/A-1")
    assert 'id="no-notes"' in page
    assert await conn.fetchval("SELECT count(*) FROM trade_notes") == 0


async def test_the_exceptions_rows_show_how_many_notes_a_trade_has(client, banks):
    """On the book's own rows only: a trade alleged against BANKB is BANKA's, and so are
    its notes."""
    a, b = banks
    alice = await _labelled_key(client, "BANKA", "alice")
    for trade_id in ("A-1", "A-2"):
        resp = await client.post("/v1/trades", json=trade_body(trade_id), headers=a)
        assert resp.status == 201
    await _note(client, "A-1", "First call.", a)
    await _note(client, "A-1", "Second call.", alice)
    bank_a = await Browser.login(client, a["Authorization"].split()[1])
    page = await bank_a.page("/ui/exceptions?tab=unmatched")
    row = page.split('id="row-BANKA-A-1"', 1)[1].split("</tr>", 1)[0]
    assert 'aria-label="2 notes"' in row and "the last by alice" in row
    assert 'href="/ui/trades/A-1#notes"' in row
    other = page.split('id="row-BANKA-A-2"', 1)[1].split("</tr>", 1)[0]
    assert "notes-badge" not in other
    admin = await Browser.login(client, ADMIN_TOKEN)
    assert 'aria-label="2 notes"' in await admin.page("/ui/exceptions?tab=unmatched")
    bank_b = await Browser.login(client, b["Authorization"].split()[1])
    alleged = await bank_b.page("/ui/exceptions?tab=alleged")
    assert 'id="row-BANKA-A-1"' in alleged and "notes-badge" not in alleged
    assert "alice" not in alleged


async def test_the_trade_page_shows_the_newest_notes_and_says_how_many_there_are(
        client, banks, monkeypatch):
    a, _ = banks
    monkeypatch.setattr("kevin.ui.pages.NOTES_SHOWN", 2)
    assert (await client.post("/v1/trades", json=trade_body("A-1"), headers=a)).status == 201
    for i in range(3):
        await _note(client, "A-1", f"Note {i}.", a)
    page = await (await Browser.login(client, a["Authorization"].split()[1])).page(
        "/ui/trades/A-1")
    assert "Note 0." not in page
    assert page.index("Note 1.") < page.index("Note 2.")  # oldest first, as written
    assert 'id="notes-earlier">The newest 2 of 3 notes' in page
