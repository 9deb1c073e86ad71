"""The web workbench over HTTP (no browser): sessions, CSRF, who sees what, the pages'
content and every action going through the engine. The browser scenarios are in
test_ui_browser.py."""

from __future__ import annotations

import hashlib
import html
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kevin.store.participants import hash_key
from tests.conftest import ADMIN, ADMIN_TOKEN, trade_body, wait_for
from tests.test_cutoffs_api import PROFILE, Clock, ours, theirs
from tests.ui_helpers import Browser, csrf_of, login

STATIC = Path(__file__).parent.parent / "kevin" / "ui" / "static"
HTMX_SHA256 = "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717"


def buy(trade_id: str = "B-1", **overrides):
    return trade_body(trade_id, **{"counterparty": "BANKA", "side": "buy",
                                   "attributes": {}, **overrides})


async def submit(client, headers, body) -> dict:
    resp = await client.post("/v1/trades", json=body, headers=headers)
    assert resp.status in (200, 201), await resp.text()
    return await resp.json()


async def latest(client, headers, trade_id) -> dict:
    resp = await client.get(f"/v1/trades/{trade_id}", headers=headers)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def mismatched_pair(client, a, b, suffix: str = "1", product: str = "XAU") -> None:
    """A-n (BANKA sells) and B-n (BANKB buys at another price): mismatched both sides."""
    resp = await client.put(f"/v1/rules/{product}",
                            json={"price_tolerance": {"abs": "0.50"}}, headers=ADMIN)
    assert resp.status == 200
    await submit(client, a, trade_body(f"A-{suffix}", product=product))
    theirs = await submit(client, b, buy(f"B-{suffix}", price="1003.00", product=product))
    assert theirs["status"] == "mismatched"


# --- login, sessions, CSRF -----------------------------------------------------------


async def test_login_sets_a_strict_httponly_cookie_for_a_session_stored_server_side(
        client, banks, api, conn):
    key = (await client.post("/v1/participants", json={"name": "BANKC"}, headers=ADMIN))
    api_key = (await key.json())["api_key"]
    resp = await login(client, api_key)
    assert resp.status == 303 and resp.headers["Location"] == "/ui/exceptions"
    header = next(v for v in resp.headers.getall("Set-Cookie") if "kevin_session=" in v)
    attributes = {part.strip().split("=")[0].lower() for part in header.split(";")}
    assert {"httponly", "samesite", "max-age", "path"} <= attributes
    assert "SameSite=Strict" in header
    token = resp.cookies["kevin_session"].value
    row = await conn.fetchrow("SELECT * FROM ui_sessions")
    # Only the hash of the cookie's token is stored, never the token or the key.
    assert bytes(row["session_hash"]) == hash_key(token)
    assert bytes(row["credential_hash"]) == hash_key(api_key)
    assert row["participant"] == "BANKC"
    assert token.encode() not in str(dict(row)).encode()
    assert (row["expires_at"] - row["created_at"]).total_seconds() == 8 * 3600


async def test_a_session_opened_by_one_service_process_is_valid_in_another(
        client, banks, db_url, aiohttp_client):
    from kevin.api.app import create_app
    from kevin.engine.service import TradeService
    from kevin.store import database

    a, _ = banks
    browser = await Browser.login(client, a["Authorization"].split()[1])
    pool = await database.create_pool(db_url, min_size=1, max_size=4)
    other = await aiohttp_client(create_app(TradeService(pool), ADMIN_TOKEN))
    try:
        resp = await other.get("/v1/trades", headers=browser.cookie)
        assert resp.status == 200
        page = await other.get("/ui/exceptions", headers=browser.cookie,
                               allow_redirects=False)
        assert page.status == 200 and '<strong id="who">BANKA</strong>' in await page.text()
        # Logging out through the first ends the session in the second too.
        assert (await browser.post_form("/ui/logout", {})).status == 303
        assert (await other.get("/v1/trades", headers=browser.cookie)).status == 401
    finally:
        await other.close()  # its feed loops hold connections until the app stops
        await pool.close()


async def test_a_wrong_key_logs_nobody_in(client, banks, conn):
    resp = await login(client, "kv_not-a-key")
    assert resp.status == 401
    assert "kevin_session" not in resp.cookies
    assert "not valid" in await resp.text()
    assert await conn.fetchval("SELECT count(*) FROM ui_sessions") == 0


async def test_the_login_form_without_its_csrf_token_is_refused(client, banks, conn):
    resp = await client.post("/ui/login", data={"api_key": ADMIN_TOKEN},
                             allow_redirects=False)
    assert resp.status == 403
    assert "kevin_session" not in resp.cookies
    assert await conn.fetchval("SELECT count(*) FROM ui_sessions") == 0


async def test_login_never_redirects_off_the_workbench(client, banks):
    form = await client.get("/ui/login?next=//evil.example/x")
    token = csrf_of(await form.text())
    resp = await client.post("/ui/login", allow_redirects=False, data={
        "csrf_token": token, "api_key": ADMIN_TOKEN, "next": "https://evil.example/"})
    assert resp.status == 303 and resp.headers["Location"] == "/ui/"


async def test_pages_without_a_session_send_the_browser_to_the_login(client, banks):
    resp = await client.get("/ui/exceptions?tab=unmatched", allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == "/ui/login?next=%2Fui%2Fexceptions%3Ftab%3Dunmatched"
    resp = await client.post("/ui/bulk", data={"action": "cancel"}, allow_redirects=False)
    assert resp.status == 401


async def test_the_json_api_and_the_feed_accept_the_session_cookie(client, banks):
    a, b = banks
    await submit(client, a, trade_body("A-1"))
    await submit(client, b, buy("B-9", product="XAG"))
    browser = await Browser.login(client, a["Authorization"].split()[1])
    resp = await browser.get("/v1/trades")
    assert resp.status == 200
    assert [t["trade_id"] for t in (await resp.json())["trades"]] == ["A-1"]
    resp = await browser.get("/v1/trades/B-9?participant=BANKB")
    assert resp.status == 404  # exactly what BANKA's key may see

    async def feed_page():
        # The feed's seq is given by the sequencer just after commit: wait for it.
        resp = await browser.get("/v1/feed?after=0", headers={"Accept": "application/json"})
        assert resp.status == 200
        return (await resp.json())["updates"]

    updates = await wait_for(feed_page)
    assert [(u["participant"], u["trade_id"]) for u in updates] == [("BANKA", "A-1")]


async def test_a_cookie_authenticated_unsafe_api_request_needs_the_csrf_header(
        client, banks):
    a, _ = banks
    browser = await Browser.login(client, a["Authorization"].split()[1])
    refused = await client.post("/v1/trades", json=trade_body("A-7"), headers=browser.cookie)
    assert refused.status == 403
    assert (await refused.json())["details"] == {"header": "X-CSRF-Token"}
    wrong = await client.post("/v1/trades", json=trade_body("A-7"),
                              headers={**browser.cookie, "X-CSRF-Token": "guess"})
    assert wrong.status == 403
    assert (await latest_or_none(client, a, "A-7")) is None
    done = await client.post("/v1/trades", json=trade_body("A-7"),
                             headers={**browser.cookie, "X-CSRF-Token": browser.csrf})
    assert done.status == 201


async def latest_or_none(client, headers, trade_id):
    resp = await client.get(f"/v1/trades/{trade_id}", headers=headers)
    return None if resp.status == 404 else await resp.json()


async def test_a_form_post_without_the_csrf_token_is_refused(client, banks):
    a, _ = banks
    await submit(client, a, trade_body("A-1"))
    browser = await Browser.login(client, a["Authorization"].split()[1])
    resp = await browser.post_form("/ui/trades/A-1/cancel", {"version": "1"}, csrf=False)
    assert resp.status == 403
    assert "CSRF" in await resp.text()
    resp = await browser.post_form("/ui/trades/A-1/cancel",
                                   {"version": "1", "csrf_token": "forged"}, csrf=False)
    assert resp.status == 403
    assert (await latest(client, a, "A-1"))["status"] == "unmatched"


async def test_logout_ends_the_session(client, banks, conn):
    a, _ = banks
    browser = await Browser.login(client, a["Authorization"].split()[1])
    resp = await browser.post_form("/ui/logout", {})
    assert resp.status == 303 and resp.headers["Location"] == "/ui/login"
    assert 'kevin_session=""' in resp.headers["Set-Cookie"]
    assert await conn.fetchval("SELECT count(*) FROM ui_sessions") == 0
    # The old cookie opens nothing any more: not the pages, not the API, not the feed.
    assert (await browser.get("/ui/exceptions")).status == 303
    assert (await browser.get("/v1/trades")).status == 401
    assert (await browser.get("/v1/feed", headers={"Accept": "application/json"})).status == 401


async def test_an_expired_session_is_refused(client, banks, conn):
    a, _ = banks
    browser = await Browser.login(client, a["Authorization"].split()[1])
    assert (await browser.get("/v1/trades")).status == 200
    await conn.execute("UPDATE ui_sessions SET expires_at = clock_timestamp()")
    assert (await browser.get("/v1/trades")).status == 401
    assert (await browser.get("/ui/exceptions")).status == 303


async def test_an_admin_session_ends_when_the_admin_token_changes(client, banks):
    from kevin.api.app_keys import WORKBENCH
    from kevin.domain.keys import AdminTokens

    browser = await Browser.login(client, ADMIN_TOKEN)
    assert (await browser.get("/v1/trades")).status == 200
    client.server.app[WORKBENCH].admin_tokens = AdminTokens.of("a-new-token")
    assert (await browser.get("/v1/trades")).status == 401


# --- who sees what ---------------------------------------------------------------------


async def test_a_participant_cannot_see_or_act_on_another_participants_trade(client, banks):
    a, b = banks
    await mismatched_pair(client, a, b)
    bank_b = await Browser.login(client, b["Authorization"].split()[1])
    for path in ("/ui/trades/A-1", "/ui/trades/A-1?participant=BANKA"):
        resp = await bank_b.get(path)
        assert resp.status == 404, path
        assert "1000.25" not in await resp.text()
    cancel = await bank_b.post_form("/ui/trades/A-1/cancel", {"version": "2"})
    assert cancel.status == 404
    force = await bank_b.post_form("/ui/admin/force-match", {
        "participant": "BANKA", "trade_id": "A-1", "counterparty": "BANKB",
        "counterparty_trade_id": "B-1", "comment": ""})
    assert force.status == 403
    bulk = await bank_b.post_form("/ui/bulk", [("action", "cancel"),
                                               ("selected", "BANKA/A-1/2")])
    assert bulk.status == 200
    assert "no trade A-1" in await bulk.text()
    # Its own alleged list shows A-1 (it is alleged against BANKB), but links nowhere.
    alleged = await bank_b.page("/ui/exceptions?tab=alleged")
    assert 'id="row-BANKA-A-1"' in alleged and "/ui/trades/A-1" not in alleged
    assert (await latest(client, a, "A-1"))["status"] == "mismatched"


async def test_find_a_trade_goes_to_its_page_in_the_viewers_own_book(client, banks):
    a, b = banks
    for headers, trade_id in ((a, "SAME-1"), (b, "SAME-1"), (a, "ONLY-A")):
        body = trade_body(trade_id, counterparty="BANKB" if headers is a else "BANKA",
                          side="sell" if headers is a else "buy")
        assert (await client.post("/v1/trades", json=body, headers=headers)).status == 201
    bank_a = await Browser.login(client, a["Authorization"].split()[1])
    bank_b = await Browser.login(client, b["Authorization"].split()[1])
    # Every page has the box; a trade id the book has opens its page.
    assert 'id="find-trade"' in await bank_a.page("/ui/exceptions")
    resp = await bank_a.get("/ui/trades?trade_id=%20ONLY-A%20")
    assert resp.status == 303 and resp.headers["Location"] == "/ui/trades/ONLY-A"
    resp = await bank_b.get("/ui/trades?trade_id=SAME-1")
    assert resp.status == 303 and resp.headers["Location"] == "/ui/trades/SAME-1"
    # Another book's trade is never opened: BANKA's ONLY-A names BANKB, so BANKB learns
    # what its Alleged tab shows already (tests below), and no more.
    resp = await bank_b.get("/ui/trades?trade_id=ONLY-A")
    assert resp.status == 200
    page = await resp.text()
    assert "BANKB has no trade ONLY-A" in page and "/ui/trades/ONLY-A" not in page
    # The admin goes straight to the one holder, or chooses among several.
    admin = await Browser.login(client, ADMIN_TOKEN)
    resp = await admin.get("/ui/trades?trade_id=ONLY-A")
    assert resp.status == 303
    assert resp.headers["Location"] == "/ui/trades/ONLY-A?participant=BANKA"
    resp = await admin.get("/ui/trades?trade_id=SAME-1")
    assert resp.status == 200
    page = await resp.text()
    assert page.count('href="/ui/trades/SAME-1?participant=') == 2
    assert page.index("participant=BANKA") < page.index("participant=BANKB")
    resp = await admin.get("/ui/trades?trade_id=NOBODY")
    assert resp.status == 404 and "No participant has trade NOBODY." in await resp.text()
    for bad in ("", "a%20b", "x" * 65, "%3Cscript%3E"):
        resp = await bank_a.get(f"/ui/trades?trade_id={bad}")
        assert resp.status == 422, bad
        assert "<script>" not in await resp.text()
    # Without a session, the login, as every page.
    resp = await client.get("/ui/trades?trade_id=ONLY-A", allow_redirects=False)
    assert resp.status in (302, 303) and "/ui/login" in resp.headers["Location"]


async def test_find_a_trade_by_the_counterpartys_id_leads_to_the_books_own(client, banks):
    """Someone on the phone reads out their own trade id: its trade leads to the book's."""
    a, b = banks
    bank_a = await Browser.login(client, a["Authorization"].split()[1])
    # Matched: BANKB's B-1 leads to BANKA's A-1.
    assert (await client.post("/v1/trades", json=trade_body("A-1"), headers=a)).status == 201
    buy = trade_body("B-1", counterparty="BANKA", side="buy")
    assert (await client.post("/v1/trades", json=buy, headers=b)).status == 201
    resp = await bank_a.get("/ui/trades?trade_id=B-1")
    assert resp.status == 303 and resp.headers["Location"] == "/ui/trades/A-1"
    # Mismatched against two of BANKA's: both offered, none chosen for the user.
    for trade_id in ("A-2", "A-3"):
        body = trade_body(trade_id, product="XAG")
        assert (await client.post("/v1/trades", json=body, headers=a)).status == 201
    far = trade_body("B-2", counterparty="BANKA", side="buy", product="XAG", price="1200")
    assert (await client.post("/v1/trades", json=far, headers=b)).status == 201
    resp = await bank_a.get("/ui/trades?trade_id=B-2")
    assert resp.status == 200
    page = await resp.text()
    assert "BANKB's B-2, mismatched" in page
    assert 'href="/ui/trades/A-2"' in page and 'href="/ui/trades/A-3"' in page
    # Alleged and unmatched: to the tab that lists it.
    lone = trade_body("B-3", counterparty="BANKA", side="buy", product="XPT")
    assert (await client.post("/v1/trades", json=lone, headers=b)).status == 201
    page = await (await bank_a.get("/ui/trades?trade_id=B-3")).text()
    assert "BANKB's B-3, unmatched" in page and "tab=alleged" in page
    # A trade naming another participant, or cancelled, is none of BANKA's business.
    resp = await client.post("/v1/participants", json={"name": "BANKC"}, headers=ADMIN)
    assert resp.status == 201, await resp.text()
    third = trade_body("B-4", counterparty="BANKC")
    assert (await client.post("/v1/trades", json=third, headers=b)).status == 201
    resp = await bank_a.get("/ui/trades?trade_id=B-4")
    assert resp.status == 404 and "BANKA has no trade B-4." in await resp.text()
    resp = await client.delete("/v1/trades/B-3", headers={**b, "If-Match": '"1"'})
    assert resp.status == 200, await resp.text()
    assert (await bank_a.get("/ui/trades?trade_id=B-3")).status == 404


# --- the exceptions page ----------------------------------------------------------------


async def test_the_exceptions_tabs_count_and_filter(client, banks):
    a, b = banks
    await mismatched_pair(client, a, b, "1")
    await submit(client, a, trade_body("A-2", product="XAG"))
    await submit(client, a, trade_body("A-3", product="XAG", price="5"))
    await submit(client, b, buy("B-3", product="XAG", price="5"))  # matched today
    await submit(client, b, buy("B-4", product="XPT"))  # alleged against BANKA
    bank_a = await Browser.login(client, a["Authorization"].split()[1])

    page = await bank_a.page("/ui/exceptions")
    # Alleged: what BANKB says it traded with BANKA, not matched (B-1 and B-4).
    assert _counts(page) == {"mismatched": 1, "unmatched": 1, "alleged": 2, "overdue": 0,
                             "proposals": 0, "matched_today": 1}
    assert 'id="row-BANKA-A-1"' in page and "A-2" not in page
    assert '<span class="field">price</span>' in page
    page = await bank_a.page("/ui/exceptions?tab=unmatched&product=XAU")
    assert _counts(page)["unmatched"] == 0 and _counts(page)["mismatched"] == 1
    page = await bank_a.page("/ui/exceptions?tab=unmatched&product=XAG")
    assert 'id="row-BANKA-A-2"' in page
    page = await bank_a.page("/ui/exceptions?tab=alleged")
    assert 'id="row-BANKB-B-4"' in page
    page = await bank_a.page("/ui/exceptions?tab=matched_today")
    assert 'id="row-BANKA-A-3"' in page
    page = await bank_a.page("/ui/exceptions?tab=mismatched&counterparty=BANKC")
    assert _counts(page)["mismatched"] == 0
    # Age: nothing here is older than an hour (the engine's filter is tested below).
    page = await bank_a.page("/ui/exceptions?tab=unmatched&age=1h")
    assert _counts(page)["unmatched"] == 0 and 'id="row-BANKA-A-2"' not in page
    # The admin sees every book, or one.
    admin = await Browser.login(client, ADMIN_TOKEN)
    page = await admin.page("/ui/exceptions")
    assert _counts(page)["mismatched"] == 2  # A-1 and B-1
    page = await admin.page("/ui/exceptions?participant=BANKB&tab=alleged")
    assert 'id="row-BANKA-A-2"' in page
    # htmx asks for the live region alone.
    part = await bank_a.get("/ui/exceptions?tab=unmatched", headers={"HX-Request": "true"})
    text = await part.text()
    assert text.lstrip().startswith('<div id="live-region"') and "<html" not in text


async def test_the_age_filter_is_on_first_submission(client, banks):
    from kevin.api.app_keys import WORKBENCH
    from kevin.engine.workbench import ExceptionsQuery

    a, _ = banks
    await submit(client, a, trade_body("A-2"))
    workbench = client.server.app[WORKBENCH]
    now = datetime.now(UTC)
    for before, expected in ((now + timedelta(minutes=1), ["A-2"]),
                             (now - timedelta(hours=1), [])):
        found = await workbench.exceptions(ExceptionsQuery(
            tab="unmatched", participant="BANKA", submitted_before=before))
        assert [t.trade_id for t in found.trades] == expected
        assert found.counts["unmatched"] == len(expected)


async def test_bad_filters_are_a_clear_page_not_a_500(client, banks):
    a, _ = banks
    bank_a = await Browser.login(client, a["Authorization"].split()[1])
    for query in ("tab=nope", "age=2y", "product=%27%3B--", "counterparty=lower"):
        resp = await bank_a.get(f"/ui/exceptions?{query}")
        assert resp.status == 422, query
        assert resp.content_type == "text/html"


def _counts(page: str) -> dict[str, int]:
    return {tab: int(count) for tab, count in re.findall(
        r'id="tab-(\w+)"[^>]*>[^<]*<span class="count" data-count="(\d+)"', page)}


# --- overdue: the tab and ageing against the cut-off, on a controlled clock ---------------


async def overdue_book(client, api, service):
    """Trades of 2026-10-23 (a Friday) and after, under a BANKA-BANKB profile for XAU
    (cut-off T+1 17:00 London: Monday 26th 17:00 UTC) and XAG rules (T+0 13:00 New York:
    Friday 23rd 17:00 UTC); XPT has none. The service's clock is returned, at 18:00 on
    the 26th: both cut-offs of the 23rd have passed."""
    a, b = await api.participant("BANKA"), await api.participant("BANKB")
    c = await api.participant("BANKC")
    clock = Clock()
    service.clock = clock
    clock.at("2026-10-26T18:00:00+00:00")
    assert (await client.put("/v1/profiles/a-b-xau", json=PROFILE, headers=ADMIN)).status == 200
    resp = await client.put("/v1/rules/XAG", json={"cutoff": {
        "business_days": 0, "time": "13:00", "timezone": "America/New_York",
        "calendar": "US"}}, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    await submit(client, a, ours("A-C", "2026-10-23", product="XAG", counterparty="BANKC"))
    await submit(client, b, theirs("B-XAG", "2026-10-23", product="XAG", price="3"))
    await submit(client, a, ours("A-LATE", "2026-10-23"))
    await submit(client, a, ours("A-MM", "2026-10-23", quantity="7"))
    assert (await submit(client, b, theirs("B-MM", "2026-10-23", quantity="8")))[
        "status"] == "mismatched"
    await submit(client, a, ours("A-NEW", "2026-10-27"))
    await submit(client, a, ours("A-XPT", "2026-10-23", product="XPT"))
    # BANKC's trade naming BANKB: overdue, but neither BANKA's nor alleged against it.
    await submit(client, c, ours("C-1", "2026-10-23", product="XAG", counterparty="BANKB"))
    return a, b, clock


def _rows(page: str) -> list[str]:
    return re.findall(r'<tr id="row-([A-Z0-9_]+-[^"]+)"', page)


async def test_the_overdue_tab_lists_the_books_own_and_what_is_alleged_against_it(
        client, api, service):
    a, b, clock = await overdue_book(client, api, service)
    bank_a = await Browser.login(client, a["Authorization"].split()[1])
    page = await bank_a.page("/ui/exceptions?tab=overdue")
    # Most overdue first: the cut-off of the 23rd (XAG), then the 26th (XAU); within
    # one, in order of submission. Not A-NEW (due on the 28th), not A-XPT (no cut-off),
    # not C-1 (BANKC's, naming BANKB).
    assert _rows(page) == ["BANKA-A-C", "BANKB-B-XAG", "BANKA-A-LATE", "BANKA-A-MM",
                           "BANKB-B-MM"]
    assert _counts(page)["overdue"] == 5
    # The page redraws on the feed's overdue notices as on trade and proposal updates.
    listened = json.loads(html.unescape(re.search(r"data-feed-events='([^']*)'", page)[1]))
    assert {"overdue", "proposal", "matched", "submitted"} <= set(listened)
    assert "BANKA's own and those others allege against BANKA" in page
    assert page.count('<td class="whose">own</td>') == 3
    assert page.count('<td class="whose">alleged by BANKB</td>') == 2
    # Rows of trades alleged against BANKA are BANKA's to see, not to open or select.
    assert 'href="/ui/trades/B-XAG' not in page and 'value="BANKB/' not in page
    assert 'href="/ui/trades/A-C"' in page
    assert "overdue by 3d 1h" in page and "overdue by 1h 0m" in page  # A-C, A-LATE
    assert '<time class="meta" datetime="2026-10-26T17:00:00+00:00">cut-off ' \
           '2026-10-26 17:00 UTC</time>' in page
    # The same filters as the other tabs; the counterparty is the other party either way.
    page = await bank_a.page("/ui/exceptions?tab=overdue&product=XAG")
    assert _rows(page) == ["BANKA-A-C", "BANKB-B-XAG"] and _counts(page)["overdue"] == 2
    page = await bank_a.page("/ui/exceptions?tab=overdue&counterparty=BANKC")
    assert _rows(page) == ["BANKA-A-C"] and _counts(page)["overdue"] == 1
    page = await bank_a.page("/ui/exceptions?tab=overdue&counterparty=BANKB")
    assert _rows(page) == ["BANKB-B-XAG", "BANKA-A-LATE", "BANKA-A-MM", "BANKB-B-MM"]
    page = await bank_a.page("/ui/exceptions?tab=overdue&age=1h")  # all submitted just now
    assert _rows(page) == [] and _counts(page)["overdue"] == 0

    # Another book's overdue tab is not BANKA's to read.
    resp = await bank_a.get("/ui/exceptions?tab=overdue&participant=BANKB")
    assert resp.status == 404 and "B-XAG" not in await resp.text()
    # BANKB sees its own and what is alleged against it: never BANKA's trade with BANKC.
    bank_b = await Browser.login(client, b["Authorization"].split()[1])
    page = await bank_b.page("/ui/exceptions?tab=overdue")
    assert _rows(page) == ["BANKB-B-XAG", "BANKC-C-1", "BANKA-A-LATE", "BANKA-A-MM",
                           "BANKB-B-MM"]
    assert "A-C" not in page and _counts(page)["overdue"] == 5
    # The admin: every book, or one book and what is alleged against it.
    admin = await Browser.login(client, ADMIN_TOKEN)
    page = await admin.page("/ui/exceptions?tab=overdue")
    assert sorted(_rows(page)) == sorted(["BANKA-A-C", "BANKB-B-XAG", "BANKC-C-1",
                                          "BANKA-A-LATE", "BANKA-A-MM", "BANKB-B-MM"])
    assert 'class="whose"' not in page
    page = await admin.page("/ui/exceptions?tab=overdue&participant=BANKA")
    assert _rows(page)[0] == "BANKA-A-C" and _counts(page)["overdue"] == 5

    # Matched after its cut-off: A-LATE leaves the tab (and is no longer due).
    assert (await submit(client, b, theirs("B-LATE", "2026-10-23")))["status"] == "matched"
    page = await bank_a.page("/ui/exceptions?tab=overdue")
    assert "BANKA-A-LATE" not in _rows(page) and _counts(page)["overdue"] == 4


async def test_the_overdue_tab_follows_the_clock_through_the_cutoff(client, api, service):
    a, _, clock = await overdue_book(client, api, service)
    bank_a = await Browser.login(client, a["Authorization"].split()[1])
    # Before Monday's cut-off only Friday's XAG trades are overdue; the page asks to be
    # refreshed just after the next cut-off (17:00:00, strictly after: 1801 s).
    clock.at("2026-10-26T16:30:00+00:00")
    page = await bank_a.page("/ui/exceptions?tab=overdue")
    assert _rows(page) == ["BANKA-A-C", "BANKB-B-XAG"] and _counts(page)["overdue"] == 2
    assert 'data-refresh-in="1801"' in page
    page = await bank_a.page("/ui/exceptions?tab=mismatched")
    assert "due in 30m 0s" in page  # A-LATE, against Monday 17:00
    # At the cut-off itself: still in time.
    clock.at("2026-10-26T17:00:00+00:00")
    page = await bank_a.page("/ui/exceptions?tab=overdue")
    assert _counts(page)["overdue"] == 2 and "BANKA-A-LATE" not in _rows(page)
    clock.at("2026-10-26T17:00:01+00:00")
    page = await bank_a.page("/ui/exceptions?tab=overdue")
    assert _counts(page)["overdue"] == 5 and "overdue by 1s" in page
    # The next cut-off ahead is A-NEW's, Wednesday 28th 17:00: the refresh waits an hour
    # at most (a clock may be set meanwhile).
    assert 'data-refresh-in="3600"' in page


async def test_the_trade_page_shows_its_cutoff_and_ageing(client, api, service):
    a, _, clock = await overdue_book(client, api, service)
    bank_a = await Browser.login(client, a["Authorization"].split()[1])
    page = await bank_a.page("/ui/trades/A-LATE")
    assert '<time datetime="2026-10-26T17:00:00+00:00">2026-10-26 17:00:00 UTC</time>' in page
    assert '<strong class="due late" id="trade-ageing">overdue by 1h 0m</strong>' in page
    page = await bank_a.page("/ui/trades/A-NEW")
    assert '<strong class="due" id="trade-ageing">due in 1d 23h</strong>' in page
    page = await bank_a.page("/ui/trades/A-XPT")
    assert '<span id="trade-ageing">No cut-off</span>' in page
    clock.at("2026-10-28T16:59:00+00:00")
    page = await bank_a.page("/ui/trades/A-NEW")
    assert "due in 1m 0s" in page and 'data-refresh-in="61"' in page


# A book of 20 participants' open trades, each with its feed update (the invariants hold).
_MANY_BOOKS = """
INSERT INTO trades (participant, trade_id, version, latest, status, reason, counterparty,
                    side, product, quantity, price, currency, trade_date, settlement_date,
                    actor, first_submitted_at)
SELECT 'P' || (i % 20), 'T-' || i, 1, true, 'unmatched', 'submitted', 'P' || ((i + 1) % 20),
       'sell', 'XAU', 1, 1000 + i, 'USD', '2026-11-20', '2026-11-24', 'P' || (i % 20),
       clock_timestamp()
FROM generate_series(1, 20000) AS i;
INSERT INTO feed (participant, trade_id, version)
SELECT 'P' || (i % 20), 'T-' || i, 1 FROM generate_series(1, 20000) AS i;
ANALYZE trades;
"""


async def test_a_books_exceptions_read_its_trades_by_index_on_a_generic_plan(conn):
    """A prepared statement runs on a generic plan after five runs: one book's statements
    must still find its trades through an index, never by reading every trade."""
    from kevin.store import workbench_queries as q

    await conn.execute(_MANY_BOOKS)
    await conn.execute("SET plan_cache_mode = force_generic_plan")
    today = f"'{datetime.now(UTC).date().isoformat()}T00:00:00+00:00'"
    for name, rest in (("SELECT_MISMATCHED", "500"), ("SELECT_UNMATCHED", "500"),
                       ("SELECT_MATCHED_TODAY", f"{today}, 500"),
                       ("COUNT_TABS", f"{today}, 1000"), ("OPEN_GROUPS", "")):
        await conn.execute(f"PREPARE {name.lower()} AS {getattr(q, name)[True]}")
        plan = "\n".join(r[0] for r in await conn.fetch(
            f"EXPLAIN EXECUTE {name.lower()}('P1', NULL, NULL, NULL{', ' if rest else ''}"
            f"{rest})"))
        assert "Seq Scan on trades" not in plan, (name, plan)
        assert "participant = $1" in plan or "Index Cond: (participant" in plan, (name, plan)


# --- the trade page and its actions -------------------------------------------------------


async def test_the_trade_page_shows_the_timeline_the_differences_and_an_as_of_view(
        client, banks):
    a, b = banks
    await mismatched_pair(client, a, b)
    bank_a = await Browser.login(client, a["Authorization"].split()[1])
    page = await bank_a.page("/ui/trades/A-1")
    assert 'id="trade-status">mismatched' in page
    # Ours, theirs and the tolerance, side by side.
    assert ("<th scope=\"row\">price</th><td>1000.25</td><td>1003.00</td><td>0.50</td>"
            in page)
    assert 'id="version-1"' in page and 'id="version-2"' in page
    assert '<span class="actor">BANKA</span>' in page  # who wrote version 1
    assert 'id="cancel-form"' in page and 'force-form' not in page
    versions = (await (await client.get("/v1/trades/A-1/versions", headers=a)).json())
    first = versions["versions"][0]["recorded_at"]
    page = await bank_a.page(f"/ui/trades/A-1?as_of={first}")
    assert "it was version 1" in page
    assert "No differences recorded" in page
    page = await bank_a.page("/ui/trades/A-1?as_of=2000-01-01T00:00:00")
    assert "did not exist yet" in page


async def test_a_participant_cancels_from_the_trade_page_with_the_version_it_saw(
        client, banks):
    a, _ = banks
    await submit(client, a, trade_body("A-1"))
    bank_a = await Browser.login(client, a["Authorization"].split()[1])
    resp = await bank_a.post_form("/ui/trades/A-1/cancel", {"version": "7"})
    assert resp.status == 412
    assert (await latest(client, a, "A-1"))["status"] == "unmatched"
    resp = await bank_a.post_form("/ui/trades/A-1/cancel", {"version": "1"})
    assert resp.status == 303 and resp.headers["Location"] == "/ui/trades/A-1"
    done = await latest(client, a, "A-1")
    assert done["status"] == "cancelled" and done["reason"] == "cancelled"


async def test_the_admin_force_matches_then_breaks_with_comments(client, banks):
    a, b = banks
    await mismatched_pair(client, a, b)
    admin = await Browser.login(client, ADMIN_TOKEN)
    page = await admin.page("/ui/trades/A-1?participant=BANKA")
    assert 'id="force-form"' in page and 'value="B-1"' in page  # the nearest miss
    resp = await admin.post_form("/ui/admin/force-match", {
        "participant": "BANKA", "trade_id": "A-1", "counterparty": "BANKB",
        "counterparty_trade_id": "B-1", "comment": "agreed by phone"})
    assert resp.status == 303
    assert resp.headers["Location"] == "/ui/trades/A-1?participant=BANKA"
    ours = await latest(client, a, "A-1")
    assert ours["status"] == "matched" and ours["reason"] == "forced"
    assert ours["comment"] == "agreed by phone"
    page = await admin.page("/ui/trades/A-1?participant=BANKA")
    assert 'id="break-form"' in page and "“agreed by phone”" in page
    resp = await admin.post_form("/ui/admin/break", {
        "participant": "BANKA", "trade_id": "A-1",
        "match_id": ours["match"]["match_id"], "comment": "wrong leg"})
    assert resp.status == 303
    for headers, trade_id in ((a, "A-1"), (b, "B-1")):
        broken = await latest(client, headers, trade_id)
        assert broken["reason"] == "broken" and broken["comment"] == "wrong leg"
        assert broken["status"] != "matched"


async def test_bulk_cancel_reports_each_trade(client, banks):
    a, _ = banks
    for n in (1, 2, 3):
        await submit(client, a, trade_body(f"A-{n}"))
    bank_a = await Browser.login(client, a["Authorization"].split()[1])
    resp = await bank_a.post_form("/ui/bulk", [
        ("action", "cancel"), ("selected", "BANKA/A-1/1"), ("selected", "BANKA/A-2/1"),
        ("selected", "BANKA/A-3/5"), ("selected", "BANKA/A-404/1")],
        headers={"HX-Request": "true"})
    assert resp.status == 200
    text = await resp.text()
    assert "<html" not in text and "Cancel: 2 done, 2 failed" in text
    assert "changed since the list was shown" in text and "no trade A-404" in text
    statuses = [(await latest(client, a, f"A-{n}"))["status"] for n in (1, 2, 3)]
    assert statuses == ["cancelled", "cancelled", "unmatched"]


async def test_admin_bulk_force_match_and_break(client, banks):
    a, b = banks
    await mismatched_pair(client, a, b, "1", "XAU")
    await mismatched_pair(client, a, b, "2", "XAG")  # another book: no cross-talk
    admin = await Browser.login(client, ADMIN_TOKEN)
    shown = [await latest(client, a, f"A-{n}") for n in (1, 2)]
    resp = await admin.post_form("/ui/bulk", [
        ("action", "force_match"), ("comment", "month end"),
        *[("selected", f"BANKA/{t['trade_id']}/{t['version']}") for t in shown]])
    text = await resp.text()
    assert "2 done, 0 failed" in text, text
    matched = [await latest(client, a, f"A-{n}") for n in (1, 2)]
    assert [t["reason"] for t in matched] == ["forced", "forced"]
    assert {t["comment"] for t in matched} == {"month end"}
    resp = await admin.post_form("/ui/bulk", [
        ("action", "break"), ("selected", f"BANKA/A-1/{matched[0]['version']}"),
        ("selected", "BANKB/B-1/1")])
    text = await resp.text()
    assert "1 done, 1 failed" in text
    assert (await latest(client, a, "A-1"))["reason"] == "broken"
    # A participant's session may not use the admin's actions.
    bank_a = await Browser.login(client, a["Authorization"].split()[1])
    resp = await bank_a.post_form("/ui/bulk", [
        ("action", "break"), ("selected", f"BANKA/A-2/{matched[1]['version']}")])
    assert resp.status == 422
    assert (await latest(client, a, "A-2"))["status"] == "matched"


# --- the STP report ---------------------------------------------------------------------


async def test_the_stp_report_shows_the_figures_and_its_charts_for_whose_trades_they_are(
        client, banks):
    a, b = banks
    await submit(client, a, trade_body("A-1"))
    await submit(client, b, buy("B-1"))  # matched
    await mismatched_pair(client, a, b, "2", "XAG")
    bank_a = await Browser.login(client, a["Authorization"].split()[1])
    page = await bank_a.page("/ui/reports/stp?from=2026-11-14&to=2026-11-20")
    api = await (await client.get("/v1/reports/stp?from=2026-11-14&to=2026-11-20",
                                  headers=a)).json()
    total = re.search(r'data-key="All">\s*<th scope="row">All</th><td class="num">(\d+)</td>'
                      r'\s*<td class="num">(\d+)</td>', page)
    assert total and (int(total[1]), int(total[2])) == (api["trades"], api["matched"]) == (2, 1)
    for chart in ("chart-time-to-match", "chart-matched-on-trade-date",
                  "chart-mismatch-fields"):
        assert f'<svg id="{chart}" class="chart" role="img"' in page
    assert page.count('<g class="bar">') == 3 + 7 + 1  # percentiles, days, price
    assert ">2026-11-20</text>" in page and ">price</text>" in page
    grouped = await bank_a.page("/ui/reports/stp?from=2026-11-20&to=2026-11-20"
                                "&group_by=product")
    assert 'data-key="XAU"' in grouped and 'data-key="XAG"' in grouped
    # A participant's report is its own: another's is refused, the admin's is everyone's.
    assert (await bank_a.get("/ui/reports/stp?participant=BANKB")).status == 404
    admin = await Browser.login(client, ADMIN_TOKEN)
    page = await admin.page("/ui/reports/stp?from=2026-11-20&to=2026-11-20")
    assert re.search(r'data-key="All">\s*<th scope="row">All</th><td class="num">4</td>',
                     page)
    long = await admin.page("/ui/reports/stp?from=2026-01-01&to=2026-11-20")
    assert "chart-matched-on-trade-date" not in long and "31 days or fewer" in long
    for query in ("from=2026-11-20&to=2026-11-01", "from=20261120", "group_by=desk"):
        resp = await admin.get(f"/ui/reports/stp?{query}")
        assert resp.status == 422, query


# --- profiles and rules (admin) -----------------------------------------------------------


async def test_the_admin_tries_a_rules_change_before_making_it(client, banks):
    a, b = banks
    await submit(client, a, trade_body("A-1"))
    await submit(client, b, buy("B-1", price="1000.70"))  # exact rules: mismatched
    admin = await Browser.login(client, ADMIN_TOKEN)
    page = await admin.page("/ui/admin/rules?product=XAU")
    assert "matches exactly on every field" in page
    form = {"product": "XAU", "rules": '{"price_tolerance": {"abs": "0.50"}}',
            "since": "2000-01-01T00:00:00"}
    dry = await admin.post_form("/ui/admin/rules", {**form, "action": "dry_run"})
    text = await dry.text()
    assert dry.status == 200 and "Dry run: 2 trades would change" in text
    assert 'id="change-BANKA-A-1"' in text and 'id="change-BANKB-B-1"' in text
    # A dry run changes nothing and stores no rules.
    assert (await latest(client, a, "A-1"))["status"] == "mismatched"
    assert (await client.get("/v1/rules/XAU", headers=ADMIN)).status == 404
    done = await admin.post_form("/ui/admin/rules", {**form, "action": "save_and_rematch"})
    text = await done.text()
    assert "Applied: 2 trades changed" in text and "Saved as version 1 of XAU" in text
    ours = await latest(client, a, "A-1")
    assert ours["status"] == "matched" and ours["reason"] == "replayed"
    stored = await (await client.get("/v1/rules/XAU", headers=ADMIN)).json()
    assert stored["price_tolerance"] == {"abs": "0.50"}
    bad = await admin.post_form("/ui/admin/rules", {**form, "rules": "{", "action": "dry_run"})
    assert bad.status == 422 and "not valid JSON" in await bad.text()
    bad = await admin.post_form("/ui/admin/rules", {
        **form, "rules": '{"price_tolerance": {"abs": "-1"}}', "action": "save"})
    assert bad.status == 422
    assert (await admin.post_form("/ui/admin/rules", {**form, "action": "dry_run"},
                                  csrf=False)).status == 403
    # Participants have no such page.
    bank_a = await Browser.login(client, a["Authorization"].split()[1])
    assert (await bank_a.get("/ui/admin/rules?product=XAU")).status == 403
    assert (await bank_a.post_form("/ui/admin/rules", {**form, "action": "save"})).status == 403
    assert (await bank_a.get("/ui/admin/profiles")).status == 403


async def test_the_admin_reads_the_profiles(client, banks):
    profile = {"participants": ["BANKB", "BANKA"], "product": "XAU",
               "fields": {"price": {"abs": "1.00"}}}
    resp = await client.put("/v1/profiles/desk-gold", json=profile, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    admin = await Browser.login(client, ADMIN_TOKEN)
    page = await admin.page("/ui/admin/profiles")
    assert 'id="profile-desk-gold"' in page and "BANKA · BANKB" in page
    assert "<title>Profiles · Kevin workbench</title>" in page
    assert page.count('id="profile-form"') == 1
    assert "&#34;abs&#34;: &#34;1.00&#34;" in page or '"abs": "1.00"' in page
    page = await admin.page("/ui/admin/profiles?as_of=2000-01-01T00:00:00Z")
    assert "No profiles then" in page


async def test_the_admin_tries_a_profile_change_before_making_it(client, banks):
    a, b = banks
    await submit(client, a, trade_body("A-1"))
    await submit(client, b, buy("B-1", price="1000.95"))  # exact: mismatched
    admin = await Browser.login(client, ADMIN_TOKEN)
    form = {"name": "gold-desks", "since": "2000-01-01T00:00:00", "profile":
            '{"participants": ["BANKA", "BANKB"], "product": "XAU",'
            ' "fields": {"price": {"abs": "1.00"}}}'}
    dry = await admin.post_form("/ui/admin/profiles", {**form, "action": "dry_run"})
    text = await dry.text()
    assert dry.status == 200 and "Dry run: 2 trades would change" in text, text
    assert (await client.get("/v1/profiles/gold-desks", headers=ADMIN)).status == 404
    assert (await latest(client, a, "A-1"))["status"] == "mismatched"
    done = await admin.post_form("/ui/admin/profiles", {**form, "action": "save_and_rematch"})
    text = await done.text()
    assert "Applied: 2 trades changed" in text and "Saved as version 1 of gold-desks" in text
    assert 'id="profile-gold-desks"' in text
    assert (await latest(client, a, "A-1"))["reason"] == "replayed"
    bad = await admin.post_form("/ui/admin/profiles", {
        **form, "profile": '{"participants": ["BANKA", "BANKA"], "product": "XAU"}',
        "action": "save"})
    assert bad.status == 422
    bank_a = await Browser.login(client, a["Authorization"].split()[1])
    assert (await bank_a.post_form("/ui/admin/profiles", {**form, "action": "save"})
            ).status == 403


# --- proposals --------------------------------------------------------------------------


async def test_a_match_is_proposed_and_accepted_from_the_pages(client, banks):
    a, b = banks
    await mismatched_pair(client, a, b)
    bank_a = await Browser.login(client, a["Authorization"].split()[1])
    page = await bank_a.page("/ui/trades/A-1")
    assert 'id="propose-form"' in page and 'id="propose-other" name="counterparty_trade_id" '\
        'value="B-1"' in page
    refused = await bank_a.post_form("/ui/proposals", {
        "trade_id": "A-1", "kind": "match", "counterparty_trade_id": "B-1"}, csrf=False)
    assert refused.status == 403
    resp = await bank_a.post_form("/ui/proposals", {
        "trade_id": "A-1", "kind": "match", "counterparty_trade_id": "B-1",
        "comment": "within our usual spread"})
    assert resp.status == 303 and resp.headers["Location"] == "/ui/trades/A-1"
    listed = await (await client.get("/v1/proposals?state=open", headers=b)).json()
    (proposal,) = listed["proposals"]
    proposal_id = proposal["proposal_id"]
    assert proposal["comment"] == "within our usual spread"

    # The proposer may withdraw, not accept; a third participant sees nothing of it.
    page = await bank_a.page("/ui/exceptions?tab=proposals")
    assert _counts(page)["proposals"] == 1
    assert f'/ui/proposals/{proposal_id}/withdraw' in page and "Accept" not in page
    own = await bank_a.post_form(f"/ui/proposals/{proposal_id}/accept", {})
    assert own.status == 403
    key = await client.post("/v1/participants", json={"name": "BANKC"}, headers=ADMIN)
    bank_c = await Browser.login(client, (await key.json())["api_key"])
    assert _counts(await bank_c.page("/ui/exceptions?tab=proposals"))["proposals"] == 0
    assert (await bank_c.post_form(f"/ui/proposals/{proposal_id}/accept", {})).status == 404
    # The admin reads it, and may not decide it.
    admin = await Browser.login(client, ADMIN_TOKEN)
    page = await admin.page("/ui/exceptions?tab=proposals")
    assert f'id="proposal-{proposal_id}"' in page and "/accept" not in page

    bank_b = await Browser.login(client, b["Authorization"].split()[1])
    page = await bank_b.page("/ui/trades/B-1")
    assert f'/ui/proposals/{proposal_id}/accept' in page
    assert "price: BANKA 1000.25 · BANKB 1003.00" in page
    resp = await bank_b.post_form(f"/ui/proposals/{proposal_id}/accept",
                                  {"comment": "agreed", "next": "/ui/trades/B-1"})
    assert resp.status == 303 and resp.headers["Location"] == "/ui/trades/B-1"
    for headers, trade_id in ((a, "A-1"), (b, "B-1")):
        agreed = await latest(client, headers, trade_id)
        assert agreed["status"] == "matched" and agreed["reason"] == "agreed"
    # Decided: the proposal is no longer open, and says so if decided again.
    again = await bank_b.post_form(f"/ui/proposals/{proposal_id}/reject", {})
    assert again.status == 409 and "accepted" in await again.text()
    bad = await bank_b.post_form(f"/ui/proposals/{proposal_id}/explode", {})
    assert bad.status == 404


async def test_a_matched_trade_offers_a_cancel_proposal(client, banks):
    a, b = banks
    await submit(client, a, trade_body("A-1"))
    await submit(client, b, buy("B-1"))
    bank_a = await Browser.login(client, a["Authorization"].split()[1])
    page = await bank_a.page("/ui/trades/A-1")
    assert 'name="kind" value="cancel"' in page
    resp = await bank_a.post_form("/ui/proposals", {
        "trade_id": "A-1", "kind": "cancel", "counterparty_trade_id": "B-1"})
    assert resp.status == 303
    page = await bank_a.page("/ui/trades/A-1")
    assert 'data-kind="cancel"' in page
    admin = await Browser.login(client, ADMIN_TOKEN)
    refused = await admin.post_form("/ui/proposals", {
        "trade_id": "A-1", "kind": "cancel", "counterparty_trade_id": "B-1"})
    assert refused.status == 403


# --- the page's own files ---------------------------------------------------------------


async def test_the_vendored_htmx_is_served_pinned_and_nothing_comes_from_elsewhere(
        client, banks):
    resp = await client.get("/ui/static/htmx-2.0.11.min.js")
    assert resp.status == 200
    assert hashlib.sha256(await resp.read()).hexdigest() == HTMX_SHA256
    assert (STATIC / "htmx-LICENSE.txt").read_text().startswith("Zero-Clause BSD")
    admin = await Browser.login(client, ADMIN_TOKEN)
    page = await admin.get("/ui/exceptions")
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    text = await page.text()
    assert "http://" not in text and "https://" not in text
    assert "<script>" not in text  # no inline script: the policy would refuse it
