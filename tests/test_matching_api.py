"""Matching through HTTP against real PostgreSQL: rules, matches, mismatches, breaks,
alleged trades and operator overrides."""

from __future__ import annotations

import itertools

from tests.conftest import ADMIN
from tests.matching_checks import check_matching_invariants
from tests.support import assert_matched, buy, get, post, put_rules, sell, versions

# --- matching on submission --------------------------------------------------------------


async def test_opposite_sides_match_on_submission(client, banks, conn):
    a, b = banks
    first = await post(client, a, sell())
    assert first["status"] == "unmatched" and first["version"] == 1
    second = await post(client, b, buy())
    # The submitter sees the outcome: its version 2, matched.
    assert second["version"] == 2 and second["reason"] == "matched"
    ours = await get(client, a, "A-1")
    assert ours["version"] == 2 and ours["reason"] == "matched"
    assert_matched(ours, second)
    assert [v["reason"] for v in await versions(client, b, "B-1")] == ["submitted", "matched"]
    # Each version has its feed row; the match recorded "no rules" (exact).
    feed = await conn.fetch("SELECT participant, trade_id, version FROM feed ORDER BY id")
    assert [tuple(r) for r in feed] == [("BANKA", "A-1", 1), ("BANKB", "B-1", 1),
                                        ("BANKB", "B-1", 2), ("BANKA", "A-1", 2)]
    assert await conn.fetchval(
        "SELECT count(*) FROM trades WHERE status = 'matched' AND rules_version IS NULL") == 2
    await check_matching_invariants(conn)


async def test_the_counterparty_sees_only_trade_id_and_version_of_the_other_side(client, banks):
    a, b = banks
    await post(client, a, sell(attributes={"desk": "secret"}))
    mine = await post(client, b, buy())
    assert "secret" not in str(mine)
    assert (await client.get("/v1/trades/A-1", headers=b)).status == 404


async def test_a_match_records_the_rules_version(client, banks, conn):
    a, b = banks
    await put_rules(client, price_tolerance={"abs": "1"})
    v2 = await put_rules(client, price_tolerance={"abs": "0.50"})
    assert v2["version"] == 2
    await post(client, a, sell(price="1000.25"))
    await post(client, b, buy(price="1000.75"))  # 0.50 away: inclusive
    rows = await conn.fetch("SELECT rules_version FROM trades WHERE status = 'matched'")
    assert [r["rules_version"] for r in rows] == [2, 2]


async def test_each_rule_kind_through_http(client, banks):
    a, b = banks
    await put_rules(client, price_tolerance={"bps": "1"}, quantity_tolerance={"abs": "0.5"},
                    settlement_date_window_days=1, location="ignore")
    await post(client, a, sell(product="XAU", price="2000", quantity="10"))
    # 1 bp of 2000 is 0.2; quantity 0.5 away; settlement 1 day later; another location.
    matched = await post(client, b, buy(price="2000.2", quantity="10.5",
                                        settlement_date="2026-11-25", location="NYC"))
    assert matched["status"] == "matched"


async def test_fx_bps_on_small_prices_with_json_numbers(client, banks):
    a, b = banks
    await put_rules(client, product="EURUSD", price_tolerance={"bps": "0.5"})
    # JSON numbers, parsed as decimals: 0.5 bp of 1.08451 is 0.0000542255.
    await post(client, a, sell("A-FX", product="EURUSD", currency="USD", price=1.08451,
                               quantity=1000000))
    far = await post(client, b, buy("B-FX1", product="EURUSD", currency="USD",
                                    price=1.0845642256, quantity=1000000))
    assert far["status"] == "mismatched"
    assert far["mismatches"] == [{"counterparty_trade_id": "A-FX", "fields": [
        {"field": "price", "ours": "1.0845642256", "theirs": "1.08451",
         "tolerance": "0.0000542255"}],
        "rules": {"kind": "product", "name": "EURUSD", "version": 1}}]
    edge = await post(client, b, buy("B-FX2", product="EURUSD", currency="USD",
                                     price=1.0845642255, quantity=1000000))
    assert edge["status"] == "matched"
    assert edge["match"]["counterparty_trade_id"] == "A-FX"


async def test_best_candidate_wins_whatever_the_arrival_order(client, banks, conn):
    """Determinism: the resting candidates arrive in every order; the best one (price
    difference, then quantity difference) is always the one matched."""
    a, b = banks
    await put_rules(client, price_tolerance={"abs": "1"}, quantity_tolerance={"abs": "5"})
    candidates = [buy("B-far", price="1001.00"), buy("B-best", price="1000.00", quantity="101"),
                  buy("B-qty", price="1000.50", quantity="103")]
    # The same |price difference| (0.25) above and below: quantity difference decides.
    for n, order in enumerate(itertools.permutations(candidates)):
        for body in order:
            await post(client, b, {**body, "trade_id": f"{body['trade_id']}-{n}"})
        incoming = await post(client, a, sell(f"A-{n}", price="1000.25", quantity="100"))
        assert incoming["match"]["counterparty_trade_id"] == f"B-best-{n}", order
    await check_matching_invariants(conn)


async def test_earliest_submission_breaks_a_full_tie(client, banks):
    a, b = banks
    await post(client, b, buy("B-2"))
    await post(client, b, buy("B-1"))  # later, though its trade_id sorts first
    matched = await post(client, a, sell())
    assert matched["match"]["counterparty_trade_id"] == "B-2"


# --- mismatches -----------------------------------------------------------------------


async def test_mismatch_lists_on_both_sides_then_an_amend_matches(client, banks):
    a, b = banks
    await put_rules(client, price_tolerance={"abs": "0.50"})
    await post(client, a, sell(price="1000.25", location="LDN"))
    theirs = await post(client, b, buy(price="1003.00", quantity="90", location="NYC"))
    assert theirs["status"] == "mismatched" and theirs["reason"] == "mismatched"
    assert theirs["mismatches"] == [{"counterparty_trade_id": "A-1", "fields": [
        {"field": "price", "ours": "1003.00", "theirs": "1000.25", "tolerance": "0.50"},
        {"field": "quantity", "ours": "90", "theirs": "100", "tolerance": "0"},
        {"field": "location", "ours": "NYC", "theirs": "LDN", "tolerance": None},
    ], "rules": {"kind": "product", "name": "XAU", "version": 1}}]
    ours = await get(client, a, "A-1")
    assert ours["status"] == "mismatched" and ours["version"] == 2
    assert ours["mismatches"][0]["counterparty_trade_id"] == "B-1"
    assert ours["mismatches"][0]["fields"][0] == {
        "field": "price", "ours": "1000.25", "theirs": "1003.00", "tolerance": "0.50"}

    # B fixes its side into tolerance: both match.
    resp = await client.put("/v1/trades/B-1", json=buy(price="1000.70", location="LDN"),
                            headers={**b, "If-Match": f'"{theirs["version"]}"'})
    assert resp.status == 200, await resp.text()
    amended = await resp.json()
    assert amended["status"] == "matched"
    assert resp.headers["ETag"] == f'"{amended["version"]}"'
    assert_matched(await get(client, a, "A-1"), amended)
    reasons = [v["reason"] for v in await versions(client, b, "B-1")]
    assert reasons == ["submitted", "mismatched", "amended", "matched"]


async def test_mismatches_nearest_first_at_most_three(client, banks):
    a, b = banks
    for i, price in enumerate(["1010", "1001", "990", "1002", "1000.5"]):
        await post(client, b, buy(f"B-{i}", price=price))
    ours = await post(client, a, sell(price="1000.25"))
    assert [m["counterparty_trade_id"] for m in ours["mismatches"]] == ["B-4", "B-1", "B-3"]


async def test_different_trade_dates_neither_match_nor_mismatch(client, banks):
    a, b = banks
    await post(client, a, sell())
    other_day = await post(client, b, buy(trade_date="2026-11-19"))
    assert other_day["status"] == "unmatched" and other_day["mismatches"] == []


async def test_a_mismatch_pointing_at_a_trade_matched_elsewhere_is_refreshed(client, banks):
    a, b = banks
    await post(client, b, buy("B-1", price="1000.00"))
    pointing = await post(client, a, sell("A-1", price="1000.25"))  # mismatches B-1
    assert pointing["status"] == "mismatched"
    await post(client, a, sell("A-2", price="1000.00"))  # matches B-1 exactly
    refreshed = await get(client, a, "A-1")
    assert refreshed["status"] == "unmatched" and refreshed["mismatches"] == []
    assert refreshed["reason"] == "unmatched"


async def test_a_mismatch_pointing_at_a_cancelled_or_amended_trade_is_refreshed(client, banks):
    a, b = banks
    await post(client, b, buy("B-1", price="1000.00"))
    await post(client, b, buy("B-2", price="1001.00"))
    ours = await post(client, a, sell("A-1", price="1000.25"))
    assert [m["counterparty_trade_id"] for m in ours["mismatches"]] == ["B-1", "B-2"]
    b1 = await get(client, b, "B-1")
    resp = await client.delete("/v1/trades/B-1", headers={**b, "If-Match": f'"{b1["version"]}"'})
    assert resp.status == 200
    ours = await get(client, a, "A-1")
    assert [m["counterparty_trade_id"] for m in ours["mismatches"]] == ["B-2"]
    # B-2 amended to another price: the list shows its new terms.
    b2 = await get(client, b, "B-2")
    resp = await client.put("/v1/trades/B-2", json=buy("B-2", price="1002.00"),
                            headers={**b, "If-Match": f'"{b2["version"]}"'})
    assert resp.status == 200
    ours = await get(client, a, "A-1")
    assert ours["mismatches"][0]["fields"][0]["theirs"] == "1002.00"


# --- breaks on amend and cancel ----------------------------------------------------------


async def test_amending_a_matched_trade_breaks_the_match(client, banks, conn):
    a, b = banks
    await post(client, a, sell())
    await post(client, b, buy())
    ours = await get(client, a, "A-1")
    resp = await client.put("/v1/trades/A-1", json=sell(price="1005"),
                            headers={**a, "If-Match": f'"{ours["version"]}"'})
    amended = await resp.json()
    assert resp.status == 200
    # Now mismatched with B-1 (which is back in the book as well).
    assert amended["status"] == "mismatched"
    theirs = await versions(client, b, "B-1")
    assert [v["reason"] for v in theirs] == ["submitted", "matched", "unmatched", "mismatched"]
    assert theirs[2]["status"] == "unmatched" and theirs[2]["match"] is None
    # Amend back into agreement: a new match, with a new match_id.
    resp = await client.put("/v1/trades/A-1", json=sell(),
                            headers={**a, "If-Match": f'"{amended["version"]}"'})
    again = await resp.json()
    assert again["status"] == "matched"
    assert again["match"]["match_id"] != ours["match"]["match_id"]
    await check_matching_invariants(conn)


async def test_amending_only_attributes_keeps_the_match(client, banks, conn):
    a, b = banks
    await post(client, a, sell())
    await post(client, b, buy())
    ours = await get(client, a, "A-1")
    resp = await client.put("/v1/trades/A-1", json=sell(attributes={"desk": "other"}),
                            headers={**a, "If-Match": f'"{ours["version"]}"'})
    amended = await resp.json()
    assert amended["status"] == "matched" and amended["reason"] == "amended"
    assert amended["match"]["match_id"] == ours["match"]["match_id"]
    assert_matched(amended, await get(client, b, "B-1"))
    await check_matching_invariants(conn)


async def test_cancelling_a_matched_trade_releases_the_counterparty(client, banks, conn):
    a, b = banks
    await post(client, a, sell())
    await post(client, b, buy())
    await post(client, a, sell("A-2", price="1000.30"))  # rests: A-1 took B-1
    ours = await get(client, a, "A-1")
    resp = await client.delete("/v1/trades/A-1", headers={**a, "If-Match": f'"{ours["version"]}"'})
    assert resp.status == 200 and (await resp.json())["status"] == "cancelled"
    theirs = await versions(client, b, "B-1")
    assert [v["reason"] for v in theirs] == ["submitted", "matched", "unmatched", "mismatched"]
    assert theirs[-1]["mismatches"][0]["counterparty_trade_id"] == "A-2"
    await check_matching_invariants(conn)


async def test_amending_into_another_product_leaves_the_old_key_clean(client, banks, conn):
    a, b = banks
    await post(client, b, buy("B-1", price="999"))
    ours = await post(client, a, sell(price="1000"))
    assert ours["status"] == "mismatched"
    resp = await client.put("/v1/trades/A-1", json=sell(product="XAG", price="1000"),
                            headers={**a, "If-Match": f'"{ours["version"]}"'})
    assert (await resp.json())["status"] == "unmatched"
    theirs = await get(client, b, "B-1")
    assert theirs["status"] == "unmatched" and theirs["mismatches"] == []
    await check_matching_invariants(conn)


# --- alleged -----------------------------------------------------------------------------


async def test_alleged_trades(client, banks, api):
    a, b = banks
    c = await api.participant("BANKC")
    await post(client, a, sell("A-1", attributes={"desk": "private"}))
    await post(client, a, sell("A-2", price="2000"))
    await post(client, b, buy("B-2", price="2000"))  # A-2 matches: no longer alleged
    await post(client, c, sell("C-1", counterparty="BANKB"))
    resp = await client.get("/v1/alleged", headers=b)
    assert resp.status == 200
    alleged = (await resp.json())["trades"]
    assert [(t["participant"], t["trade_id"]) for t in alleged] == [("BANKA", "A-1"),
                                                                   ("BANKC", "C-1")]
    assert alleged[0]["side"] == "sell" and alleged[0]["price"] == "1000.25"
    assert alleged[0]["counterparty"] == "BANKB"
    assert "attributes" not in alleged[0] and "private" not in str(alleged)
    assert (await (await client.get("/v1/alleged", headers=a)).json())["trades"] == []
    page = await (await client.get("/v1/alleged", params={"limit": "1"}, headers=b)).json()
    assert len(page["trades"]) == 1 and page["next_cursor"]
    nxt = await (await client.get("/v1/alleged", params={"cursor": page["next_cursor"]},
                                  headers=b)).json()
    assert [t["trade_id"] for t in nxt["trades"]] == ["C-1"]
    as_admin = await client.get("/v1/alleged", params={"participant": "BANKB"}, headers=ADMIN)
    assert len((await as_admin.json())["trades"]) == 2
    assert (await client.get("/v1/alleged")).status == 401


# --- rules -------------------------------------------------------------------------------


async def test_rules_are_versioned_and_readable_as_of(client, banks):
    resp = await client.get("/v1/rules/XAU", headers=ADMIN)
    assert resp.status == 404 and (await resp.json())["error"] == "not_found"
    v1 = await put_rules(client, price_tolerance={"abs": "0.50"})
    assert v1 == {**v1, "product": "XAU", "version": 1, "price_tolerance": {"abs": "0.50"},
                  "quantity_tolerance": {"abs": "0"}, "settlement_date_window_days": 0,
                  "location": "exact"}
    v2 = await put_rules(client, price_tolerance={"bps": 2.5}, location="ignore")
    assert v2["version"] == 2 and v2["price_tolerance"] == {"bps": "2.5"}
    latest = await (await client.get("/v1/rules/XAU", headers=ADMIN)).json()
    assert latest == v2
    then = await client.get("/v1/rules/XAU", params={"as_of": v1["recorded_at"]}, headers=ADMIN)
    assert (await then.json()) == v1
    before = await client.get("/v1/rules/XAU", params={"as_of": "2000-01-01T00:00:00Z"},
                              headers=ADMIN)
    assert before.status == 404
    fx = await put_rules(client, product="EUR/USD", price_tolerance={"bps": "1"})
    assert fx["product"] == "EUR/USD"


async def test_rules_validation_and_auth(client, banks):
    a, _ = banks
    resp = await client.put("/v1/rules/XAU", json={"price_tolerance": {"abs": "1"}}, headers=a)
    assert resp.status == 403
    assert (await client.get("/v1/rules/XAU", headers=a)).status == 403
    for bad in [{"price_tolerance": {"abs": "1", "bps": "2"}}, {"price_tolerance": {"abs": -1}},
                {"location": "nearby"}, {"settlement_date_window_days": "soon"},
                {"product": "XAG"}, {"quantity_tolerance": {"abs": "Infinity"}}]:
        resp = await client.put("/v1/rules/XAU", json=bad, headers=ADMIN)
        assert resp.status == 422, bad
        assert (await resp.json())["error"] == "validation_failed"
    resp = await client.put("/v1/rules/XAU", data=b"{", headers={
        **ADMIN, "Content-Type": "application/json"})
    assert resp.status == 400


# --- operator overrides --------------------------------------------------------------------


async def test_force_match_then_break_never_rematches(client, banks, conn):
    a, b = banks
    await post(client, a, sell(price="1000.25"))
    await post(client, b, buy(price="1010"))  # far apart: mismatched
    legs = [{"participant": "BANKA", "trade_id": "A-1"}, {"participant": "BANKB",
                                                          "trade_id": "B-1"}]
    resp = await client.post("/v1/admin/matches", json={"legs": legs, "comment": "agreed by phone"},
                             headers=ADMIN)
    assert resp.status == 201, await resp.text()
    forced = await resp.json()
    ours, theirs = forced["legs"]
    assert ours["reason"] == theirs["reason"] == "forced"
    assert ours["comment"] == theirs["comment"] == "agreed by phone"
    assert ours["match"]["match_id"] == forced["match_id"]
    assert_matched(ours, theirs)
    await check_matching_invariants(conn)

    # Forcing again: both are matched now.
    again = await client.post("/v1/admin/matches", json={"legs": legs}, headers=ADMIN)
    assert again.status == 409 and (await again.json())["error"] == "cannot_match"

    # B amends to exactly A's terms while matched: the forced match breaks and, since
    # the pair was never *broken by an operator*, they match automatically.
    resp = await client.put("/v1/trades/B-1", json=buy(price="1000.25"),
                            headers={**b, "If-Match": f'"{theirs["version"]}"'})
    assert (await resp.json())["status"] == "matched"
    match_id = (await resp.json())["match"]["match_id"]

    resp = await client.delete(f"/v1/admin/matches/{match_id}",
                               json={"comment": "wrong counterparty"}, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    broken = await resp.json()
    for leg in broken["legs"]:
        assert leg["status"] == "unmatched" and leg["reason"] == "broken"
        assert leg["comment"] == "wrong counterparty" and leg["match"] is None
    assert await conn.fetchval("SELECT count(*) FROM broken_pairs") == 1

    # Identical terms, both resting, yet never auto-matched again — not even on amend.
    b1 = await get(client, b, "B-1")
    resp = await client.put("/v1/trades/B-1", json=buy(price="1000.25", location="LDN"),
                            headers={**b, "If-Match": f'"{b1["version"]}"'})
    assert (await resp.json())["status"] == "unmatched"
    # ...but each still matches someone else.
    fresh = await post(client, b, buy("B-9", price="1000.25"))
    assert fresh["status"] == "matched" and fresh["match"]["counterparty_trade_id"] == "A-1"
    # An operator may still force the broken pair together explicitly.
    await check_matching_invariants(conn)


async def test_override_errors(client, banks, api):
    a, b = banks
    await api.participant("BANKC")
    await post(client, a, sell())
    await post(client, a, sell("A-2"))
    leg = {"participant": "BANKA", "trade_id": "A-1"}
    cases = [
        ({"legs": [leg]}, 422),
        ({"legs": [leg, {"participant": "BANKB", "trade_id": "NOPE"}]}, 404),
        ({"legs": [leg, {"participant": "BANKA", "trade_id": "A-2"}]}, 409),
        ({"legs": [leg, leg]}, 409),
    ]
    for body, status in cases:
        resp = await client.post("/v1/admin/matches", json=body, headers=ADMIN)
        assert resp.status == status, (body, await resp.text())
    resp = await client.post("/v1/admin/matches", json={"legs": [leg, leg]}, headers=a)
    assert resp.status == 403
    resp = await client.delete("/v1/admin/matches/not-a-uuid", headers=ADMIN)
    assert resp.status == 404
    resp = await client.delete("/v1/admin/matches/7d4f3c38-5d2e-4d63-9a55-0f1f0b6d0c11",
                               headers=ADMIN)
    assert resp.status == 404 and (await resp.json())["error"] == "not_found"


async def test_the_matching_endpoints_are_in_the_openapi_document(client):
    spec = await (await client.get("/openapi.json")).json()
    assert {"/v1/rules/{product}", "/v1/alleged", "/v1/admin/matches",
            "/v1/admin/matches/{match_id}"} <= set(spec["paths"])
    assert {"put", "get"} <= set(spec["paths"]["/v1/rules/{product}"])
    assert {"RulesUpdate", "RulesVersion", "AllegedPage", "ForceMatch", "MatchLegs"} <= \
        set(spec["components"]["schemas"])
