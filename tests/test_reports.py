"""The STP report (GET /v1/reports/stp, `kevin report stp`) against figures worked out here
from the trades' own versions, with an independent percentile."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from kevin.api.app_keys import KEVIN
from kevin.store import reports
from tests.conftest import ADMIN
from tests.support import buy, cancel, get, post, sell, versions


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def percentile_cont(values: list[Decimal], fraction: Decimal) -> Decimal:
    """PostgreSQL's percentile_cont: linear interpolation between the closest ranks."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


async def time_to_match(client, headers, trade_id: str) -> Decimal:
    """The first matched version's recorded_at minus the first submission, which the API
    does not show: read from version 1's row (a version 1 is recorded when it is written,
    with what matching derived from it, after its first submission)."""
    history = await versions(client, headers, trade_id)
    first_matched = next(v for v in history if v["status"] == "matched")
    async with client.server.app[KEVIN].pool.acquire() as conn:
        first_submitted_at = await conn.fetchval(
            "SELECT first_submitted_at FROM trades"
            " WHERE participant = $1 AND trade_id = $2 AND version = 1",
            history[0]["participant"], trade_id)
    delta = _instant(first_matched["recorded_at"]) - first_submitted_at
    return Decimal(delta.days * 86_400 + delta.seconds) + Decimal(delta.microseconds).scaleb(-6)


async def report(client, headers, **params: Any) -> dict[str, Any]:
    resp = await client.get("/v1/reports/stp", params=params, headers=headers)
    assert resp.status == 200, await resp.text()
    return await resp.json()


@pytest.fixture
def today() -> date:
    return datetime.now(UTC).date()


async def book(client, a, b, today: date) -> str:
    """BANKA's trades, whose figures the tests work out by hand (each open one under a match
    key of its own, so that its nearest candidate is the one named here); returns the
    instant just before the admin force-matched A-FORCED."""
    old = (today - timedelta(days=10)).isoformat()
    # Matched on its trade date, automatically.
    await post(client, a, sell("A-AUTO", trade_date=today.isoformat()))
    await post(client, b, buy("B-AUTO", trade_date=today.isoformat()))
    # Matched automatically, ten days after its trade date (another product).
    await post(client, a, sell("A-LATE", trade_date=old, product="XAG"))
    await post(client, b, buy("B-LATE", trade_date=old, product="XAG"))
    # Mismatched on price: open.
    await post(client, a, sell("A-PRICE", trade_date=today.isoformat(), price="1000.25",
                               quantity="7"))
    await post(client, b, buy("B-PRICE", trade_date=today.isoformat(), price="1003.00",
                              quantity="7"))
    # Nothing on the other side (no GBP trade of BANKB's): open.
    await post(client, a, sell("A-ALONE", trade_date=today.isoformat(), currency="GBP"))
    # Cancelled.
    await post(client, a, sell("A-GONE", trade_date=today.isoformat(), currency="CHF"))
    await cancel(client, a, "A-GONE")
    # Mismatched on quantity, then force-matched by the admin.
    await post(client, a, sell("A-FORCED", trade_date=today.isoformat(), quantity="50",
                               currency="EUR"))
    await post(client, b, buy("B-FORCED", trade_date=today.isoformat(), quantity="51",
                              currency="EUR"))
    assert (await get(client, a, "A-FORCED"))["status"] == "mismatched"
    before_force = (await get(client, a, "A-FORCED"))["recorded_at"]
    resp = await client.post("/v1/admin/matches", headers=ADMIN, json={
        "legs": [{"participant": "BANKA", "trade_id": "A-FORCED"},
                 {"participant": "BANKB", "trade_id": "B-FORCED"}], "comment": "phoned"})
    assert resp.status == 201, await resp.text()
    for trade_id in ("A-AUTO", "A-LATE", "A-FORCED"):
        assert (await get(client, a, trade_id))["status"] == "matched"
    return before_force


async def test_the_report_gives_the_figures_worked_out_from_the_versions(client, banks, today):
    a, b = banks
    await book(client, a, b, today)
    start, end = (today - timedelta(days=10)).isoformat(), today.isoformat()
    got = await report(client, a, **{"from": start, "to": end})

    waits = [await time_to_match(client, a, t) for t in ("A-AUTO", "A-LATE", "A-FORCED")]
    assert got["trades"] == 5 and got["cancelled"] == 1
    assert got["matched"] == 3 and got["open"] == 2
    assert (got["auto"], got["agreed"], got["forced"]) == (2, 0, 1)
    # A-AUTO and A-FORCED matched on their trade date (today); A-LATE ten days after.
    assert got["matched_on_trade_date_pct"] == "40.0"
    assert got["matched_by_t1_pct"] == "40.0"
    for name, fraction in (("p50", "0.5"), ("p90", "0.9"), ("p99", "0.99")):
        expected = percentile_cont(waits, Decimal(fraction)).quantize(Decimal("0.001"))
        assert Decimal(got["time_to_match_seconds"][name]) == expected, name
    # A-PRICE differed on price; A-FORCED on quantity before it was forced.
    assert got["mismatch_fields"] == {"price": 1, "quantity": 1}
    assert got["groups"] == [] and got["participant"] == "BANKA"


async def test_groups_by_product_and_counterparty_add_up_to_the_whole(client, banks, today):
    a, b = banks
    await book(client, a, b, today)
    params = {"from": (today - timedelta(days=10)).isoformat(), "to": today.isoformat()}
    by_product = await report(client, a, **params, group_by="product")
    groups = {g["key"]: g for g in by_product["groups"]}
    assert set(groups) == {"XAU", "XAG"}
    assert (groups["XAG"]["trades"], groups["XAG"]["matched"]) == (1, 1)
    assert groups["XAG"]["matched_on_trade_date_pct"] == "0.0"
    assert (groups["XAU"]["trades"], groups["XAU"]["cancelled"], groups["XAU"]["open"]) == \
        (4, 1, 2)
    assert groups["XAU"]["matched_on_trade_date_pct"] == "50.0"
    assert by_product["trades"] == sum(g["trades"] for g in groups.values())
    by_counterparty = await report(client, a, **params, group_by="counterparty")
    assert [g["key"] for g in by_counterparty["groups"]] == ["BANKB"]
    assert by_counterparty["groups"][0]["trades"] == by_counterparty["trades"] == 5
    # The totals of a grouped report are the ungrouped report's, percentiles included
    # (taken over every group's waits, not derived from the groups' own).
    whole = await report(client, a, **params)
    for grouped in (by_product, by_counterparty):
        assert {k: v for k, v in grouped.items() if k not in ("groups", "group_by", "as_of")} \
            == {k: v for k, v in whole.items() if k not in ("groups", "group_by", "as_of")}


async def test_the_next_weekday_after_a_trade_date_is_the_calendars(conn):
    """matched_by_t1 reads the next weekday from the date's day number (0001-01-01 was a
    Monday): it agrees with the calendar over years of dates."""
    rows = await conn.fetch(
        f"SELECT d::date AS d, {reports.NEXT_WEEKDAY.format(d='d::date')} AS next_weekday "
        "FROM generate_series(DATE '1999-12-25', DATE '2031-01-05', interval '1 day') AS d")
    assert len(rows) > 11_000
    for row in rows:
        day = row["d"]
        expected = day + timedelta(days={4: 3, 5: 2}.get(day.weekday(), 1))
        assert row["next_weekday"] == expected, day


async def test_as_of_reads_the_report_as_it_stood_and_again_the_same(client, banks, today):
    a, b = banks
    before_force = await book(client, a, b, today)
    params = {"from": today.isoformat(), "to": today.isoformat(), "as_of": before_force}
    then = await report(client, a, **params)
    assert then["forced"] == 0 and then["matched"] == 1 and then["open"] == 3
    assert then["as_of"] == before_force.replace("Z", "+00:00") or \
        _instant(then["as_of"]) == _instant(before_force)
    # Nothing is overwritten: later versions do not change the answer about then.
    await post(client, a, sell("A-AFTER", trade_date=today.isoformat(), quantity="9"))
    assert await report(client, a, **params) == then
    now = await report(client, a, **{"from": today.isoformat(), "to": today.isoformat()})
    assert now["forced"] == 1 and now["trades"] == 5


async def test_the_admin_reads_everyone_or_one_and_a_participant_only_itself(
        client, banks, today):
    a, b = banks
    await book(client, a, b, today)
    params = {"from": (today - timedelta(days=10)).isoformat(), "to": today.isoformat()}
    everyone = await report(client, ADMIN, **params)
    banka = await report(client, ADMIN, **params, participant="BANKA")
    bankb = await report(client, b, **params)
    assert banka["trades"] == 5 and bankb["trades"] == 4  # B-AUTO, B-LATE, B-PRICE, B-FORCED
    assert everyone["trades"] == banka["trades"] + bankb["trades"]
    assert everyone["participant"] is None
    resp = await client.get("/v1/reports/stp", params={**params, "participant": "BANKA"},
                            headers=b)
    assert resp.status == 404


async def test_csv_gives_the_groups_as_rows(client, banks, today):
    a, b = banks
    await book(client, a, b, today)
    params = {"from": (today - timedelta(days=10)).isoformat(), "to": today.isoformat(),
              "group_by": "product"}
    resp = await client.get("/v1/reports/stp", params=params,
                            headers={**a, "Accept": "text/csv"})
    assert resp.status == 200 and resp.content_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    json_groups = (await report(client, a, **params))["groups"]
    assert [r["key"] for r in rows] == [g["key"] for g in json_groups]
    for row, group in zip(rows, json_groups, strict=True):
        assert int(row["trades"]) == group["trades"]
        assert row["matched_on_trade_date_pct"] == group["matched_on_trade_date_pct"]
        assert row["time_to_match_p50_seconds"] == group["time_to_match_seconds"]["p50"]


@pytest.mark.parametrize(("params", "field"), [
    ({"from": "2026-11-20", "to": "2026-11-19"}, "from"),
    ({"from": "2025-01-01", "to": "2026-01-02"}, "to"),
    ({"from": "2026-11-20", "to": "2026-11-20", "group_by": "desk"}, "group_by"),
    ({"from": "20261120", "to": "2026-11-20"}, "from"),
    ({"to": "2026-11-20"}, "from"),
    ({"from": "2026-11-20", "to": "2026-11-20", "as_of": "yesterday"}, "as_of"),
])
async def test_bad_parameters_are_422_naming_the_field(client, banks, params, field):
    a, _ = banks
    resp = await client.get("/v1/reports/stp", params=params, headers=a)
    assert resp.status == 422, await resp.text()
    body = await resp.json()
    assert body["error"] == "validation_failed"
    assert field in [d["field"] for d in body["details"]]


async def test_an_empty_range_reports_zeroes_and_no_shares(client, banks):
    a, _ = banks
    got = await report(client, a, **{"from": "2001-01-01", "to": "2001-12-31"})
    assert got["trades"] == 0 and got["matched_on_trade_date_pct"] is None
    assert got["time_to_match_seconds"] == {"p50": None, "p90": None, "p99": None}


async def kevin_cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "kevin.cli", *args], capture_output=True,
        text=True, timeout=60, env={"KEVIN_DATABASE_URL": db_url, "PATH": "/usr/bin:/bin"})


@pytest.mark.slow
async def test_kevin_report_stp_prints_the_same_report(client, banks, db_url, today):
    a, b = banks
    await book(client, a, b, today)
    start, end = (today - timedelta(days=10)).isoformat(), today.isoformat()
    as_of = datetime.now(UTC).isoformat()
    over_http = await report(client, ADMIN, **{"from": start, "to": end, "as_of": as_of,
                                               "group_by": "product"})
    done = await kevin_cli(db_url, "report", "stp", "--from", start, "--to", end,
                           "--as-of", as_of, "--group-by", "product", "--csv")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert {r["key"]: int(r["trades"]) for r in rows} == \
        {g["key"]: g["trades"] for g in over_http["groups"]}
    bad = await kevin_cli(db_url, "report", "stp", "--from", end, "--to", start)
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "from" in bad.stderr


async def test_now_and_as_of_a_moment_later_read_the_same(client, banks, today):
    """The report of now reads the latest versions and the history apart; as of an instant
    it reads every version: both must agree, a broken match's first match included."""
    a, b = banks
    await book(client, a, b, today)
    await post(client, a, sell("A-BROKEN", trade_date=today.isoformat(), currency="JPY"))
    matched = await post(client, b, buy("B-BROKEN", trade_date=today.isoformat(),
                                        currency="JPY"))
    resp = await client.request("DELETE", f"/v1/admin/matches/{matched['match']['match_id']}",
                                json={"comment": "wrong desk"}, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    assert (await get(client, a, "A-BROKEN"))["status"] == "unmatched"
    params = {"from": (today - timedelta(days=10)).isoformat(), "to": today.isoformat()}
    for group_by in (None, "product", "counterparty"):
        extra = {"group_by": group_by} if group_by else {}
        now = await report(client, a, **params, **extra)
        later = datetime.now(UTC).isoformat()
        then = await report(client, a, **params, **extra, as_of=later)
        assert {**now, "as_of": None} == {**then, "as_of": None}, group_by
    # Broken, A-BROKEN is open, yet it was first matched on its trade date.
    assert now["trades"] == 6 and now["open"] == 3 and now["matched"] == 3
    assert now["matched_on_trade_date_pct"] == "50.0"


async def test_overdue_is_counted_at_the_reports_instant(client, banks, db_url, today):
    """With a cut-off in force (T+1 17:00 London): of the trades open at the report's
    instant, those past it — as a read at that instant says, now or as of then; the
    figures otherwise as before, every one worked out here."""
    a, b = banks
    old, fresh = (today - timedelta(days=10)).isoformat(), (today + timedelta(days=5)).isoformat()
    before_cutoff = datetime.now(UTC).isoformat()
    resp = await client.put("/v1/profiles/a-b-xau", headers=ADMIN, json={
        "participants": ["BANKA", "BANKB"], "product": "XAU",
        "cutoff": {"business_days": 1, "time": "17:00", "timezone": "Europe/London",
                   "calendar": "GB"}})
    assert resp.status == 200, await resp.text()
    # Each under a match key of its own (currency), so that only A-MM and B-MM differ.
    await post(client, a, sell("A-OPEN", trade_date=old, settlement_date=old,
                               currency="GBP"))  # overdue
    await post(client, a, sell("A-MM", trade_date=old, settlement_date=old, quantity="7",
                               currency="EUR"))
    await post(client, b, buy("B-MM", trade_date=old, settlement_date=old, quantity="8",
                              currency="EUR"))
    await post(client, a, sell("A-DONE", trade_date=old, settlement_date=old, currency="CHF"))
    before_match = datetime.now(UTC).isoformat()
    await post(client, b, buy("B-DONE", trade_date=old, settlement_date=old, currency="CHF"))
    await post(client, a, sell("A-FRESH", trade_date=fresh, settlement_date=fresh,
                               currency="JPY"))  # open, its cut-off ahead
    await post(client, a, sell("A-XPT", trade_date=old, settlement_date=old,
                               product="XPT"))  # open, no cut-off
    await post(client, a, sell("A-GONE", trade_date=old, settlement_date=old,
                               currency="AUD"))
    await cancel(client, a, "A-GONE")
    assert (await get(client, a, "A-DONE"))["status"] == "matched"
    assert (await get(client, a, "A-MM"))["status"] == "mismatched"

    params = {"from": old, "to": fresh}
    got = await report(client, a, **params)
    wait = await time_to_match(client, a, "A-DONE")
    assert {k: v for k, v in got.items() if k not in ("as_of",)} == {
        "trades": 5, "cancelled": 1, "matched": 1,
        # A-DONE matched today, ten days after its trade date.
        "matched_on_trade_date_pct": "0.0", "matched_by_t1_pct": "0.0",
        "auto": 1, "agreed": 0, "forced": 0,
        "open": 4, "overdue": 2,  # A-OPEN and A-MM; not A-FRESH (ahead), A-XPT (none)
        "time_to_match_seconds": {k: str(wait.quantize(Decimal("0.001")))
                                  for k in ("p50", "p90", "p99")},
        "mismatch_fields": {"quantity": 1},
        "start": old, "end": fresh, "participant": "BANKA", "group_by": None, "groups": []}
    # What a read now says agrees.
    resp = await client.get("/v1/trades", params={"overdue": "true"}, headers=a)
    assert sorted(t["trade_id"] for t in (await resp.json())["trades"]) == ["A-MM", "A-OPEN"]
    by_product = {g["key"]: (g["open"], g["overdue"]) for g in
                  (await report(client, a, **params, group_by="product"))["groups"]}
    assert by_product == {"XAU": (3, 2), "XPT": (1, 0)}
    everyone = await report(client, ADMIN, **params, group_by="counterparty")
    assert everyone["overdue"] == 3  # B-MM too
    assert {g["key"]: g["overdue"] for g in everyone["groups"]} == {"BANKA": 1, "BANKB": 2}

    # As of before B-DONE came: A-DONE was open, and overdue. Before the profile: no
    # cut-off, nothing overdue.
    then = await report(client, a, **params, as_of=before_match)
    assert (then["open"], then["overdue"], then["matched"]) == (3, 3, 0)
    assert (await report(client, a, **params, as_of=before_cutoff))["overdue"] == 0

    resp = await client.get("/v1/reports/stp", params={**params, "group_by": "product"},
                            headers={**a, "Accept": "text/csv"})
    rows = {r["key"]: r for r in csv.DictReader(io.StringIO(await resp.text()))}
    assert {k: (r["open"], r["overdue"]) for k, r in rows.items()} == \
        {"XAU": ("3", "2"), "XPT": ("1", "0")}
    done = await kevin_cli(db_url, "report", "stp", "--from", old, "--to", fresh,
                           "--participant", "BANKA", "--as-of", before_match)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert (printed["open"], printed["overdue"]) == (3, 3)


async def test_overdue_under_the_products_rules_alone(client, banks, today):
    """No profile claims the pair: the product's rules decide (the statement joins them
    alone), now and as of an instant; a product without rules has nothing overdue."""
    a, _ = banks
    old = (today - timedelta(days=10)).isoformat()
    resp = await client.put("/v1/rules/XAU", headers=ADMIN, json={"cutoff": {
        "business_days": 1, "time": "17:00", "timezone": "Europe/London", "calendar": "GB"}})
    assert resp.status == 200, await resp.text()
    await post(client, a, sell("A-OPEN", trade_date=old, settlement_date=old, currency="GBP"))
    await post(client, a, sell("A-XPT", trade_date=old, settlement_date=old, product="XPT"))
    params = {"from": old, "to": old}
    got = await report(client, a, **params)
    assert (got["trades"], got["open"], got["overdue"]) == (2, 2, 1)
    by_product = {g["key"]: (g["open"], g["overdue"]) for g in
                  (await report(client, a, **params, group_by="product"))["groups"]}
    assert by_product == {"XAU": (1, 1), "XPT": (1, 0)}
    then = await report(client, a, **params, as_of=datetime.now(UTC).isoformat())
    assert (then["open"], then["overdue"]) == (2, 1)
