"""The workbench in a real browser: Debian's Chromium (/usr/bin/chromium) driven by
Playwright, against the app on a local port.

Without Chromium these tests skip with the reason, except in CI (``CI`` set), where a
missing browser fails them: .ci/run installs it. ``KEVIN_SCREENSHOTS=docs/screenshots``
saves a picture of each page as the scenarios pass through it (the README's).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ADMIN, ADMIN_TOKEN, trade_body
from tests.test_cutoffs_api import theirs
from tests.test_ui import overdue_book

try:
    from playwright import async_api as playwright_api
except ImportError:  # the test extra installs it; CI must never pass without it
    if os.environ.get("CI"):
        raise
    pytest.skip("playwright is not installed (pip install -e '.[test]')",
                allow_module_level=True)
expect = playwright_api.expect

CHROMIUM = os.environ.get("KEVIN_CHROMIUM", "/usr/bin/chromium")
# This machine's closed network: no background fetches, no QUIC, no first-run work.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]
SCREENSHOTS = os.environ.get("KEVIN_SCREENSHOTS")
WAIT_MS = 15_000  # a live update arrives in well under a second; the machine is shared

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def chromium() -> str:
    if shutil.which(CHROMIUM) is None:
        reason = f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(reason + ": CI must run the browser tests")
        pytest.skip(reason)
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
    return CHROMIUM


@pytest.fixture(scope="session")
async def browser(chromium: str) -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as playwright:
        # Playwright gives every launch a fresh, empty user data directory.
        launched = await playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def base_url(client: Any) -> str:
    return str(client.make_url("")).rstrip("/")


class Person:
    """One browser context (its own cookies): one person at the workbench."""

    def __init__(self, context: Any, page: Any, base_url: str) -> None:
        self.context, self.page, self.base_url = context, page, base_url

    async def goto(self, path: str) -> Any:
        return await self.page.goto(self.base_url + path)

    async def page_id(self) -> str:
        """Set once per document load: unchanged means no reload happened."""
        return await self.page.evaluate("window.kevinPageId")

    async def live(self) -> None:
        """Until the page's EventSource is connected to the feed."""
        await expect(self.page.locator("body")).to_have_attribute(
            "data-live", "open", timeout=WAIT_MS)

    async def screenshot(self, name: str) -> None:
        if SCREENSHOTS:
            await self.page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"),
                                       full_page=True)


@pytest.fixture
async def people(browser: Any, base_url: str) -> AsyncIterator[Any]:
    contexts: list[Any] = []

    async def open_as(credential: str, width: int = 1280, height: int = 800) -> Person:
        context = await browser.new_context(viewport={"width": width, "height": height})
        context.set_default_timeout(WAIT_MS)
        contexts.append(context)
        person = Person(context, await context.new_page(), base_url)
        await person.goto("/ui/")
        await expect(person.page).to_have_url(base_url + "/ui/login?next=%2Fui%2F")
        await person.page.get_by_label("API key or admin token").fill(credential)
        await person.page.get_by_role("button", name="Log in").click()
        await expect(person.page).to_have_url(base_url + "/ui/exceptions")
        return person

    try:
        yield open_as
    finally:
        for context in contexts:
            await context.close()


# Every element of every table on the page, against the window's width: a table's cells
# may not run past the right edge, not even hidden inside their scrolling box.
_TABLE_OVERFLOW = """() => {
  const width = document.documentElement.clientWidth;
  const past = [];
  for (const table of document.querySelectorAll("main table")) {
    const name = table.id || table.className;
    const over = [table, ...table.querySelectorAll("*")].filter(
      el => el.getBoundingClientRect().right > width + 0.5);
    if (over.length) {
      const last = over[over.length - 1];
      past.push(`${name}: ${over.length} elements past ${width}px, the last a `
                + `${last.tagName} to ${Math.round(last.getBoundingClientRect().right)}px `
                + `(${last.textContent.trim().slice(0, 40)})`);
    }
    const box = table.parentElement;
    if (box.scrollWidth > box.clientWidth) {
      past.push(`${name}: its box scrolls by ${box.scrollWidth - box.clientWidth}px`);
    }
  }
  return {page: document.documentElement.scrollWidth - width, past};
}"""


def key_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


def buy(trade_id: str = "B-1", **overrides: Any) -> dict[str, Any]:
    return trade_body(trade_id, **{"counterparty": "BANKA", "side": "buy",
                                   "attributes": {}, **overrides})


async def submit(client: Any, headers: dict[str, str], body: dict[str, Any]) -> dict:
    resp = await client.post("/v1/trades", json=body, headers=headers)
    assert resp.status in (200, 201), await resp.text()
    return await resp.json()


async def latest(client: Any, headers: dict[str, str], trade_id: str) -> dict:
    resp = await client.get(f"/v1/trades/{trade_id}", headers=headers)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def price_rules(client: Any) -> None:
    resp = await client.put("/v1/rules/XAU", json={"price_tolerance": {"abs": "0.50"}},
                            headers=ADMIN)
    assert resp.status == 200


async def test_a_mismatch_appears_live_and_a_force_match_shows_on_both_pages(
        client, banks, people):
    a, b = banks
    await price_rules(client)
    await submit(client, a, trade_body("A-1"))
    await submit(client, a, trade_body("A-2", product="XAG"))

    bank_a = await people(key_of(a))
    await bank_a.live()
    page_id = await bank_a.page_id()
    rows = bank_a.page.locator("#trades tbody tr[id^=row-]")
    await expect(rows).to_have_count(0)
    await expect(bank_a.page.locator("#tab-mismatched .count")).to_have_text("0")

    # BANKB's trade arrives at another price: BANKA's A-1 becomes mismatched, live.
    await submit(client, b, buy("B-1", price="1003.00"))
    row = bank_a.page.locator("#row-BANKA-A-1")
    await expect(row).to_be_visible(timeout=WAIT_MS)
    await expect(row.locator(".field")).to_have_text("price")
    await expect(bank_a.page.locator("#tab-mismatched .count")).to_have_text("1")
    assert await bank_a.page_id() == page_id
    await bank_a.screenshot("exceptions")

    await row.get_by_role("link", name="A-1").click()
    await expect(bank_a.page.locator("h1")).to_contain_text("Trade A-1")
    await expect(bank_a.page.locator("#trade-status")).to_have_text("mismatched")
    price = bank_a.page.locator("table.diff tr", has=bank_a.page.locator("th", has_text="price"))
    await expect(price.locator("td")).to_have_text(["1000.25", "1003.00", "0.50"])
    await bank_a.live()
    await bank_a.screenshot("trade-mismatched")
    page_a = await bank_a.page_id()

    bank_b = await people(key_of(b))
    await bank_b.goto("/ui/trades/B-1")
    await expect(bank_b.page.locator("#trade-status")).to_have_text("mismatched")
    await bank_b.live()
    page_b = await bank_b.page_id()

    admin = await people(ADMIN_TOKEN)
    await admin.goto("/ui/trades/A-1?participant=BANKA")
    await expect(admin.page.get_by_label("Their trade id")).to_have_value("B-1")
    await admin.page.get_by_label("Comment").fill("agreed on the phone with BANKB")
    await admin.page.get_by_role("button", name="Force-match").click()
    await expect(admin.page.locator("#trade-status")).to_have_text("matched")
    await admin.screenshot("trade-matched-admin")

    # Both participants' pages follow without a reload.
    for person, before in ((bank_a, page_a), (bank_b, page_b)):
        await expect(person.page.locator("#trade-status")).to_have_text(
            "matched", timeout=WAIT_MS)
        await expect(person.page.locator("#version-3 .comment")).to_contain_text(
            "agreed on the phone")
        assert await person.page_id() == before
    ours = await latest(client, a, "A-1")
    assert ours["status"] == "matched" and ours["reason"] == "forced"


async def test_banka_proposes_a_match_bankb_accepts_and_both_pages_follow_live(
        client, banks, people):
    a, b = banks
    await price_rules(client)
    await submit(client, a, trade_body("A-1"))
    await submit(client, b, buy("B-1", price="1003.00"))

    bank_b = await people(key_of(b))
    await bank_b.goto("/ui/trades/B-1")
    await expect(bank_b.page.locator("#no-proposals")).to_be_visible()
    await bank_b.live()
    page_b = await bank_b.page_id()

    bank_a = await people(key_of(a))
    await bank_a.goto("/ui/trades/A-1")
    await expect(bank_a.page.get_by_label("Their trade id")).to_have_value("B-1")
    await bank_a.page.locator("#propose-comment").fill("inside our usual spread")
    await bank_a.page.get_by_role("button", name="Propose").click()
    await expect(bank_a.page.locator("#proposals tbody tr")).to_have_count(1)
    await expect(bank_a.page.get_by_role("button", name="Withdraw")).to_be_visible()
    await bank_a.live()
    page_a = await bank_a.page_id()

    # BANKB's open page shows the proposal as it arrives, with the answer it may give.
    proposal = bank_b.page.locator("#proposals tbody tr")
    await expect(proposal).to_have_count(1, timeout=WAIT_MS)
    await expect(proposal).to_contain_text("inside our usual spread")
    await expect(proposal.locator(".field")).to_contain_text(
        "price: BANKA 1000.25 · BANKB 1003.00")
    assert await bank_b.page_id() == page_b
    await bank_b.screenshot("trade-proposal-received")
    await proposal.get_by_label("Comment").fill("agreed")
    await proposal.get_by_role("button", name="Accept").click()
    await expect(bank_b.page.locator("#trade-status")).to_have_text("matched")

    await expect(bank_a.page.locator("#trade-status")).to_have_text("matched", timeout=WAIT_MS)
    await expect(bank_a.page.locator("#no-proposals")).to_be_visible()
    assert await bank_a.page_id() == page_a
    for headers, trade_id in ((a, "A-1"), (b, "B-1")):
        agreed = await latest(client, headers, trade_id)
        assert agreed["status"] == "matched" and agreed["reason"] == "agreed"


async def test_the_admin_breaks_a_match_with_a_comment(client, banks, people):
    a, b = banks
    await submit(client, a, trade_body("A-1"))
    matched = await submit(client, b, buy("B-1"))
    assert matched["status"] == "matched"
    admin = await people(ADMIN_TOKEN)
    await admin.goto("/ui/trades/A-1?participant=BANKA")
    await expect(admin.page.locator("#trade-status")).to_have_text("matched")
    await admin.page.get_by_label("Comment").fill("booked twice: the desk confirmed")
    await admin.page.get_by_role("button", name="Break the match").click()
    await expect(admin.page.locator("#trade-status")).not_to_have_text("matched")
    newest = admin.page.locator("ol.timeline li").first
    await expect(newest.locator(".reason")).to_have_text("broken")
    await expect(newest.locator(".comment")).to_contain_text("booked twice")
    await admin.screenshot("trade-broken-admin")
    for headers, trade_id in ((a, "A-1"), (b, "B-1")):
        broken = await latest(client, headers, trade_id)
        assert broken["reason"] == "broken"
        assert broken["comment"] == "booked twice: the desk confirmed"


async def test_a_participant_can_neither_see_nor_act_on_another_participants_trade(
        client, banks, people, base_url):
    a, b = banks
    await submit(client, a, trade_body("A-1"))
    bank_b = await people(key_of(b))
    for path in ("/ui/trades/A-1", "/ui/trades/A-1?participant=BANKA"):
        response = await bank_b.goto(path)
        assert response.status == 404
        await expect(bank_b.page.locator("h1")).to_have_text("Not found")
        await expect(bank_b.page.locator("body")).not_to_contain_text("1000.25")
    # The action URL too, with BANKB's own valid session and CSRF token.
    await bank_b.goto("/ui/exceptions")
    csrf = await bank_b.page.locator(
        "form.logout input[name=csrf_token]").get_attribute("value")
    for path, form in (("/ui/trades/A-1/cancel", {"version": "1"}),
                       ("/ui/admin/force-match", {
                           "participant": "BANKA", "trade_id": "A-1",
                           "counterparty": "BANKB", "counterparty_trade_id": "B-1"})):
        response = await bank_b.context.request.post(
            base_url + path, form={**form, "csrf_token": csrf}, max_redirects=0)
        assert response.status in (403, 404), path
    assert (await latest(client, a, "A-1"))["status"] == "unmatched"


async def test_a_form_posted_without_its_csrf_token_is_refused(client, banks, people):
    a, _ = banks
    await submit(client, a, trade_body("A-1"))
    bank_a = await people(key_of(a))
    await bank_a.goto("/ui/trades/A-1")
    await bank_a.page.locator("#cancel-form input[name=csrf_token]").evaluate(
        "input => input.remove()")
    await bank_a.page.get_by_role("button", name="Cancel this trade").click()
    await expect(bank_a.page.locator("h1")).to_have_text("Not allowed")
    await expect(bank_a.page.locator(".message")).to_contain_text("CSRF")
    assert (await latest(client, a, "A-1"))["status"] == "unmatched"


async def test_logout_ends_the_session(client, banks, people, base_url):
    a, _ = banks
    bank_a = await people(key_of(a))
    assert (await bank_a.context.request.get(base_url + "/v1/trades")).status == 200
    await bank_a.page.get_by_role("button", name="Log out").click()
    await expect(bank_a.page).to_have_url(base_url + "/ui/login")
    await bank_a.goto("/ui/exceptions")
    await expect(bank_a.page).to_have_url(base_url + "/ui/login?next=%2Fui%2Fexceptions")
    # The cookie the browser held no longer opens the API either.
    assert (await bank_a.context.request.get(base_url + "/v1/trades")).status == 401


async def test_bulk_cancel_by_keyboard_on_a_narrow_window_shows_each_outcome(
        client, banks, people):
    a, _ = banks
    for n in (1, 2, 3):
        await submit(client, a, trade_body(f"A-{n}"))
    bank_a = await people(key_of(a), width=390, height=800)
    await bank_a.page.locator("#tab-unmatched").click()
    await expect(bank_a.page.locator("#live-region")).to_have_attribute("data-tab", "unmatched")
    await expect(bank_a.page.locator("#trades tbody tr[id^=row-]")).to_have_count(3)
    # Nothing wider than the window but the table, which scrolls inside its own box.
    overflow = await bank_a.page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0
    await bank_a.screenshot("exceptions-narrow")
    # Select two rows with the keyboard: focus, then space.
    for trade_id in ("A-1", "A-3"):
        box = bank_a.page.get_by_label(f"Select BANKA {trade_id}")
        await box.focus()
        await bank_a.page.keyboard.press("Space")
        await expect(box).to_be_checked()
    await bank_a.page.get_by_label("With the selected trades").select_option("cancel")
    await bank_a.page.get_by_role("button", name="Apply to the selection").press("Enter")
    results = bank_a.page.locator("#outcomes tbody tr")
    await expect(results).to_have_count(2)
    await expect(bank_a.page.locator("#outcomes-title")).to_have_text("Cancel: 2 done, 0 failed")
    # The cancelled trades leave the unmatched list live; A-2 stays.
    await expect(bank_a.page.locator("#trades tbody tr[id^=row-]")).to_have_count(
        1, timeout=WAIT_MS)
    await expect(bank_a.page.locator("#row-BANKA-A-2")).to_be_visible()
    assert await bank_a.page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth") <= 0
    await bank_a.screenshot("bulk-results-narrow")
    statuses = [(await latest(client, a, f"A-{n}"))["status"] for n in (1, 2, 3)]
    assert statuses == ["cancelled", "unmatched", "cancelled"]


async def test_the_stp_report_draws_its_charts(client, banks, people):
    a, b = banks
    await price_rules(client)
    await submit(client, a, trade_body("A-1", trade_date="2026-11-19"))
    await submit(client, b, buy("B-1", trade_date="2026-11-19"))
    await submit(client, a, trade_body("A-2"))
    await submit(client, b, buy("B-2", price="1003.00"))
    admin = await people(ADMIN_TOKEN)
    await admin.page.get_by_role("link", name="STP report").click()
    await admin.page.get_by_label("Trade dates from").fill("2026-11-14")
    await admin.page.get_by_label("to", exact=True).fill("2026-11-20")
    await admin.page.get_by_label("Group by").select_option("counterparty")
    await admin.page.get_by_role("button", name="Show").click()
    await expect(admin.page).to_have_url(re.compile(r"from=2026-11-14&to=2026-11-20"))
    for chart in ("Time to match (seconds)", "Share matched on trade date, by day (%)",
                  "Mismatches by field (trades)"):
        image = admin.page.get_by_role("img", name=chart)
        await expect(image).to_be_visible()
        assert (await image.bounding_box())["height"] > 20
    await expect(admin.page.locator("#figures tr[data-key=BANKA]")).to_be_visible()
    assert await admin.page.evaluate(_TABLE_OVERFLOW) == {"page": 0, "past": []}
    await admin.screenshot("stp-report")


async def test_the_admin_sees_a_rules_change_before_making_it(client, banks, people):
    a, b = banks
    await submit(client, a, trade_body("A-1"))
    await submit(client, b, buy("B-1", price="1000.70"))
    admin = await people(ADMIN_TOKEN)
    await admin.page.get_by_role("link", name="Rules & profiles").click()
    await admin.page.locator("#r-product").fill("XAU")
    await admin.page.get_by_role("button", name="Show", exact=True).click()
    await expect(admin.page.locator("#current-rules")).to_contain_text("matches exactly")
    await admin.page.get_by_label("Rules (JSON").fill('{"price_tolerance": {"abs": "0.50"}}')
    await admin.page.get_by_label("Replay the trades since (UTC)").fill("2026-01-01T00:00:00")
    await admin.page.get_by_role("button", name="Show what would change").click()
    await expect(admin.page.locator("#changes-title")).to_have_text(
        "Dry run: 2 trades would change")
    await expect(admin.page.locator("#change-BANKA-A-1")).to_contain_text("matched with B-1")
    assert await admin.page.evaluate(_TABLE_OVERFLOW) == {"page": 0, "past": []}
    await admin.screenshot("rules-dry-run")
    assert (await latest(client, a, "A-1"))["status"] == "mismatched"


async def test_the_admin_rotates_a_participants_key(client, banks, people):
    a, _ = banks
    old_key = key_of(a)
    admin = await people(ADMIN_TOKEN)
    await admin.page.get_by_role("link", name="Participants").click()
    banka = admin.page.locator("#participant-BANKA")
    await expect(banka).to_contain_text("valid")
    await admin.page.get_by_role("button", name="Issue a key for BANKA").click()
    new_key = (await admin.page.locator("#issued-key").text_content() or "").strip()
    assert new_key.startswith("kv_") and new_key != old_key
    await expect(admin.page.locator("#issued")).to_contain_text("shown this once")
    # Two valid keys now; the old one is revoked from its row.
    await expect(banka.get_by_role("button", name=re.compile("^Revoke key"))).to_have_count(2)
    await banka.get_by_role("button", name=re.compile("^Revoke key")).first.click()
    await expect(admin.page.locator("#revoked")).to_contain_text("of BANKA revoked")
    await expect(banka.locator(".status-cancelled")).to_have_count(1)
    assert await admin.page.evaluate(_TABLE_OVERFLOW) == {"page": 0, "past": []}
    await admin.screenshot("participants")
    assert (await client.get("/v1/trades", headers=a)).status == 401
    assert (await client.get("/v1/trades",
                             headers={"Authorization": f"Bearer {new_key}"})).status == 200


async def test_alice_notes_an_exception_and_the_note_survives_a_live_redraw(
        client, banks, people):
    """The admin issues Alice her own key; at the trade page she writes down what she
    did, signed with her name; a note half typed is kept while the page redraws itself
    for the counterparty's trade; BANKB never sees BANKA's notes."""
    a, b = banks
    await submit(client, a, trade_body("A-1"))
    admin = await people(ADMIN_TOKEN)
    await admin.page.get_by_role("link", name="Participants").click()
    await admin.page.get_by_label("Whom the new key of BANKA is for").fill("alice")
    await admin.page.get_by_role("button", name="Issue a key for BANKA").click()
    await expect(admin.page.locator("#issued-label")).to_have_text("alice")
    alice_key = (await admin.page.locator("#issued-key").text_content() or "").strip()
    await expect(admin.page.locator("#participant-BANKA .key-label")).to_have_text("alice")

    alice = await people(alice_key)
    # She finds the trade by its id from the header, as from any page.
    await alice.page.get_by_label("Trade id", exact=True).fill("A-1")
    await alice.page.get_by_label("Trade id", exact=True).press("Enter")
    await expect(alice.page).to_have_url(re.compile(r"/ui/trades/A-1$"))
    await expect(alice.page.locator("#no-notes")).to_be_visible()
    await alice.page.get_by_label("Add a note").fill("Called BANKB.\nThey book it today.")
    await alice.page.get_by_role("button", name="Add the note").click()
    note = alice.page.locator("#notes-list li")
    await expect(note).to_have_count(1)
    await expect(note.locator(".author")).to_have_text("alice")
    await expect(note.locator(".note-text")).to_have_text("Called BANKB.\nThey book it today.")
    await expect(note).to_contain_text("version 1")

    # A second note, half typed when BANKB's trade arrives and the page redraws itself.
    await alice.live()
    page_id = await alice.page_id()
    await alice.page.get_by_label("Add a note").fill("Their trade is in")
    await submit(client, b, buy("B-1"))
    await expect(alice.page.locator("#trade-status")).to_have_text("matched", timeout=WAIT_MS)
    assert await alice.page_id() == page_id
    await expect(alice.page.get_by_label("Add a note")).to_have_value("Their trade is in")
    await alice.page.get_by_role("button", name="Add the note").click()
    await expect(note).to_have_count(2)
    await expect(note.nth(1)).to_contain_text("version 2")
    await alice.screenshot("trade-notes")
    # Its row on the exceptions page says so, and leads back to the notes.
    await alice.goto("/ui/exceptions?tab=matched_today")
    badge = alice.page.locator("#row-BANKA-A-1 .notes-badge")
    await expect(badge).to_have_text("✎2")
    assert await alice.page.evaluate(_TABLE_OVERFLOW) == {"page": 0, "past": []}
    await badge.click()
    await expect(alice.page.locator("#notes-list li")).to_have_count(2)

    bank_b = await people(key_of(b))
    await bank_b.goto("/ui/trades/B-1")
    await expect(bank_b.page.locator("#no-notes")).to_be_visible()
    assert "Called BANKB" not in await bank_b.page.content()
    resp = await client.get("/v1/trades/A-1/notes", headers=a)
    assert [n["author"] for n in (await resp.json())["notes"]] == ["alice", "alice"]


async def test_the_login_page_works_from_the_keyboard(client, banks, browser, base_url):
    a, _ = banks
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = await context.new_page()
        await page.goto(base_url + "/ui/login")
        if SCREENSHOTS:
            await page.screenshot(path=str(Path(SCREENSHOTS) / "login.png"))
        # The key field has the focus on arrival (Chromium applies autofocus a frame
        # after the load event: keys typed before it are lost); Enter submits.
        await expect(page.get_by_label("API key or admin token")).to_be_focused()
        await page.keyboard.type(key_of(a))
        await page.keyboard.press("Enter")
        await expect(page).to_have_url(base_url + "/ui/exceptions")
        await expect(page.locator("#who")).to_have_text("BANKA")
    finally:
        await context.close()


async def test_an_overdue_trade_shows_its_ageing_and_leaves_the_tab_live_when_matched(
        client, api, service, people):
    a, b, _ = await overdue_book(client, api, service)  # the clock: 2026-10-26 18:00 UTC
    bank_a = await people(key_of(a))
    await bank_a.page.locator("#tab-overdue").click()
    await expect(bank_a.page.locator("#live-region")).to_have_attribute("data-tab", "overdue")
    await expect(bank_a.page.locator("#tab-overdue .count")).to_have_text("5")
    row = bank_a.page.locator("#row-BANKA-A-LATE")
    await expect(row.locator(".ageing .due")).to_have_text("overdue by 1h 0m")
    await expect(row.locator(".ageing time")).to_have_text("cut-off 2026-10-26 17:00 UTC")
    await expect(row.locator(".whose")).to_have_text("own")
    await expect(bank_a.page.locator("#row-BANKB-B-XAG .whose")).to_have_text(
        "alleged by BANKB")
    await bank_a.live()
    await bank_a.screenshot("exceptions-overdue")
    page_id = await bank_a.page_id()

    # BANKB books its side of A-LATE: matched, it leaves the overdue tab without a reload.
    assert (await submit(client, b, theirs("B-LATE", "2026-10-23")))["status"] == "matched"
    await expect(row).to_have_count(0, timeout=WAIT_MS)
    await expect(bank_a.page.locator("#tab-overdue .count")).to_have_text("4")
    await expect(bank_a.page.locator("#row-BANKA-A-MM")).to_be_visible()
    assert await bank_a.page_id() == page_id

    # The trade page says the same of a trade still overdue.
    await bank_a.page.locator("#row-BANKA-A-MM").get_by_role("link", name="A-MM").click()
    await expect(bank_a.page.locator("#trade-ageing")).to_have_text("overdue by 1h 0m")


async def test_a_trade_joins_the_overdue_tab_live_when_its_cutoff_passes(
        client, api, service, people):
    a, _, clock = await overdue_book(client, api, service)
    # Two seconds before Monday's 17:00 UTC cut-off: the page says to redraw itself in
    # three (just after it), and keeps doing so while the service's clock stands still.
    clock.at("2026-10-26T16:59:58+00:00")
    bank_a = await people(key_of(a))
    await bank_a.page.locator("#tab-overdue").click()
    region = bank_a.page.locator("#live-region")
    await expect(region).to_have_attribute("data-tab", "overdue")
    await expect(region).to_have_attribute("data-refresh-in", "3")
    await expect(bank_a.page.locator("#tab-overdue .count")).to_have_text("2")
    row = bank_a.page.locator("#row-BANKA-A-LATE")
    await expect(row).to_have_count(0)
    page_id = await bank_a.page_id()
    # The cut-off passes: nothing is written, the next redraw shows the trade overdue.
    clock.at("2026-10-26T17:00:01+00:00")
    await expect(row.locator(".ageing .due")).to_have_text("overdue by 1s", timeout=WAIT_MS)
    await expect(bank_a.page.locator("#tab-overdue .count")).to_have_text("5")
    assert await bank_a.page_id() == page_id


async def test_an_overdue_notice_on_the_feed_brings_its_trade_onto_the_tab(
        client, api, service, people):
    a, _, clock = await overdue_book(client, api, service)
    # An hour before Monday's 17:00 UTC cut-off: left to itself, the page would redraw
    # only in an hour.
    clock.at("2026-10-26T16:00:00+00:00")
    bank_a = await people(key_of(a))
    await bank_a.page.locator("#tab-overdue").click()
    region = bank_a.page.locator("#live-region")
    await expect(region).to_have_attribute("data-tab", "overdue")
    await expect(region).to_have_attribute("data-refresh-in", "3600")
    await expect(bank_a.page.locator("#tab-overdue .count")).to_have_text("2")
    await bank_a.live()
    page_id = await bank_a.page_id()
    # The clock jumps past the cut-off: the chasers' overdue notices on BANKA's feed (its
    # A-LATE and A-MM, and BANKB's B-MM alleged against it) redraw the page.
    clock.at("2026-10-26T17:00:01+00:00")
    row = bank_a.page.locator("#row-BANKA-A-LATE")
    await expect(row.locator(".ageing .due")).to_have_text(
        re.compile(r"overdue by \d+s"), timeout=WAIT_MS)
    await expect(bank_a.page.locator("#tab-overdue .count")).to_have_text("5")
    assert await bank_a.page_id() == page_id


TABS = ("mismatched", "unmatched", "alleged", "overdue", "proposals", "matched_today")


async def test_every_table_fits_a_1280_window_even_with_long_differences(
        client, api, service, people):
    a, b, _ = await overdue_book(client, api, service)  # the clock: 2026-10-26 18:00 UTC
    # Thursday's trade, overdue since Friday 17:00 UTC, differing on every term that can
    # differ: the longest Differences cells of the lists, the proposal and the trade.
    await submit(client, a, trade_body("A-WIDE", trade_date="2026-10-22",
                                       settlement_date="2026-10-22"))
    wide = await submit(client, b, buy("B-WIDE", trade_date="2026-10-22",
                                       settlement_date="2026-10-26", price="1003.00",
                                       quantity="99", location="NYC"))
    assert wide["status"] == "mismatched"
    assert {f["field"] for f in wide["mismatches"][0]["fields"]} == {
        "quantity", "price", "settlement_date", "location"}
    resp = await client.post("/v1/proposals", headers=a, json={
        "trade_id": "A-WIDE", "kind": "match", "counterparty_trade_id": "B-WIDE",
        "comment": "the desk agreed every difference on the phone " * 3})
    assert resp.status == 201, await resp.text()

    found: dict[tuple[str, str], Any] = {}
    # BANKA's lists (its overdue tab has Whose and Other party), then the admin's (every
    # book's: Participant and Counterparty), and the trade with its proposal.
    for who, credential in (("BANKA", key_of(a)), ("admin", ADMIN_TOKEN)):
        person = await people(credential, width=1280, height=800)
        for tab in TABS:
            await person.goto(f"/ui/exceptions?tab={tab}")
            await expect(person.page.locator("#live-region")).to_have_attribute(
                "data-tab", tab)
            await expect(person.page.locator("main table")).to_have_count(1)
            if tab == "overdue":
                await expect(person.page.locator("#row-BANKA-A-WIDE .field")).to_have_count(4)
            found[who, tab] = await person.page.evaluate(_TABLE_OVERFLOW)
        await person.goto("/ui/trades/A-WIDE?participant=BANKA")
        await expect(person.page.locator("table.diff tbody tr")).to_have_count(4)
        await expect(person.page.locator("#proposals tbody tr")).to_have_count(1)
        found[who, "trade"] = await person.page.evaluate(_TABLE_OVERFLOW)
    assert found == dict.fromkeys(found, {"page": 0, "past": []})


async def test_a_tab_clicked_while_a_live_refresh_runs_is_the_tab_that_shows(
        client, banks, people):
    """A live refresh may replace the region while a person's tab request is on its way:
    the tab's answer still shows, and a refresh the tab overtook does not bring back the
    tab the person left."""
    a, _ = banks
    await submit(client, a, trade_body("A-1"))
    bank_a = await people(key_of(a))
    await bank_a.live()
    page = bank_a.page
    region = page.locator("#live-region")
    await expect(region).to_have_attribute("data-tab", "mismatched")
    page_id = await bank_a.page_id()

    # The unmatched tab's answer is held until a live refresh has replaced the region.
    unmatched_tab = re.compile(r".*/ui/exceptions\?(.*&)?tab=unmatched(&.*)?$")
    held, release = asyncio.Event(), asyncio.Event()
    refreshes = {"when held": 0}
    armed = [True]  # the next request for the tab is held, the ones after it not

    async def hold(route: Any) -> None:
        if not armed[0]:
            await route.continue_()
            return
        armed[0] = False
        refreshes["when held"] = await page.evaluate(
            "Number(document.body.dataset.refreshed || 0)")
        held.set()
        await release.wait()
        await route.continue_()

    def more_than(count: int) -> re.Pattern[str]:
        return re.compile(rf"^(?!{count}$)[0-9]+$")  # the count only grows

    await page.route(unmatched_tab, hold)
    await page.locator("#tab-unmatched").click()
    await asyncio.wait_for(held.wait(), WAIT_MS / 1000)
    await submit(client, a, trade_body("A-2", product="XAG"))  # on BANKA's feed: a refresh
    body = page.locator("body")
    await expect(body).to_have_attribute(
        "data-refreshed", more_than(refreshes["when held"]), timeout=WAIT_MS)
    release.set()
    await expect(region).to_have_attribute("data-tab", "unmatched")
    await expect(page.locator("#tab-unmatched")).to_have_attribute("aria-current", "page")
    await expect(page.locator("#row-BANKA-A-1")).to_be_visible()

    # The other way round: a refresh sent before a tab click answers after it. The tab
    # stays, and its lists come up to date.
    held.clear()
    release.clear()
    armed[0] = True
    await submit(client, a, trade_body("A-3", product="XAG"))
    await asyncio.wait_for(held.wait(), WAIT_MS / 1000)  # the refresh, of the tab shown
    await page.locator("#tab-alleged").click()
    await expect(region).to_have_attribute("data-tab", "alleged")
    await expect(page.locator("#tab-unmatched .count")).to_have_text("3")
    release.set()
    await expect(body).to_have_attribute(
        "data-refreshed", more_than(refreshes["when held"]), timeout=WAIT_MS)
    await expect(region).to_have_attribute("data-tab", "alleged")
    assert await bank_a.page_id() == page_id
