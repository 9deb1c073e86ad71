"""Matching under profiles through HTTP: precedence pair + product > pair + * > product
rules > exact, and every match and mismatch entry names what decided it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ADMIN
from tests.test_batch_api import batch
from tests.test_matching_api import buy, get, post, sell


async def put_profile(client, name: str, product: str, fields: dict[str, Any],
                      participants: tuple[str, str] = ("BANKA", "BANKB")) -> dict[str, Any]:
    resp = await client.put(f"/v1/profiles/{name}", json={
        "participants": list(participants), "product": product, "fields": fields},
        headers=ADMIN)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def pair(client, a, b, n: int, gap: str) -> dict[str, Any]:
    """A sell at 1000 and a buy ``gap`` above it; the buy's latest version."""
    await post(client, a, sell(f"A-{n}", price="1000"))
    await post(client, b, buy(f"B-{n}", price=str(1000 + float(gap))))
    return await get(client, b, f"B-{n}")


async def test_precedence_most_specific_first(client, banks, api):
    a, b = banks
    await api.participant("BANKC")
    # Exact: nothing in force.
    found = await pair(client, a, b, 1, "0.5")
    assert found["status"] == "mismatched"
    assert found["mismatches"][0]["rules"] == {"kind": "exact", "name": "XAU", "version": None}
    # The product's rules.
    resp = await client.put("/v1/rules/XAU", json={"price_tolerance": {"abs": "1"}},
                            headers=ADMIN)
    assert resp.status == 200
    found = await pair(client, a, b, 2, "0.5")
    assert found["status"] == "matched"
    assert found["match"]["rules"] == {"kind": "product", "name": "XAU", "version": 1}
    # The pair's "*" profile wins over the product's rules...
    await put_profile(client, "a-b-all", "*", {"price": {"abs": "2"}})
    found = await pair(client, a, b, 3, "1.5")
    assert found["match"]["rules"] == {"kind": "profile", "name": "a-b-all", "version": 1}
    # ... and the pair's profile for the product wins over its "*" one.
    await put_profile(client, "a-b-gold", "XAU", {"price": {"abs": "3"}})
    found = await pair(client, a, b, 4, "2.5")
    assert found["match"]["rules"] == {"kind": "profile", "name": "a-b-gold", "version": 1}
    found = await pair(client, a, b, 5, "3.5")
    assert found["status"] == "mismatched"
    assert found["mismatches"][0]["rules"] == {"kind": "profile", "name": "a-b-gold",
                                               "version": 1}
    assert found["mismatches"][0]["fields"][0]["tolerance"] == "3"
    # Another pair's profile is not this pair's business.
    await put_profile(client, "a-c-gold", "XAU", {"price": "ignore"}, ("BANKA", "BANKC"))
    found = await pair(client, a, b, 6, "10")
    assert found["status"] == "mismatched"
    # Retired, the pair falls back to its "*" profile, then to the product's rules.
    await client.delete("/v1/profiles/a-b-gold", headers=ADMIN)
    found = await pair(client, a, b, 7, "1.5")
    assert found["match"]["rules"]["name"] == "a-b-all"
    await client.delete("/v1/profiles/a-b-all", headers=ADMIN)
    found = await pair(client, a, b, 8, "1.5")
    assert found["status"] == "mismatched"
    assert found["mismatches"][0]["rules"] == {"kind": "product", "name": "XAU", "version": 1}


async def test_both_legs_of_a_match_name_the_profile(client, banks):
    a, b = banks
    await put_profile(client, "a-b", "*", {"quantity": {"range": {"below": "0",
                                                                  "above": "5"}}})
    await post(client, a, sell("A-1", quantity="100"))
    await post(client, b, buy("B-1", quantity="104"))
    ours, theirs = await get(client, a, "A-1"), await get(client, b, "B-1")
    assert ours["status"] == theirs["status"] == "matched"
    assert ours["match"]["rules"] == theirs["match"]["rules"] == {
        "kind": "profile", "name": "a-b", "version": 1}


async def test_a_batch_matches_under_the_pairs_profile(client, banks):
    a, b = banks
    await put_profile(client, "a-b", "XAU", {"price": {"pct": "0.10", "max_abs": "1.00"}})
    await post(client, a, sell("A-1", price="1000"))
    await post(client, a, sell("A-2", price="1000", quantity="200"))
    results = await batch(client, b, buy("B-1", price="1001"),
                          buy("B-2", price="1001.01", quantity="200"))
    assert [r["result"] for r in results["results"]] == ["created", "created"]
    matched, missed = await get(client, b, "B-1"), await get(client, b, "B-2")
    assert matched["status"] == "matched"
    assert matched["match"]["rules"] == {"kind": "profile", "name": "a-b", "version": 1}
    assert (await get(client, a, "A-1"))["match"]["rules"]["name"] == "a-b"
    assert missed["status"] == "mismatched"
    assert missed["mismatches"][0]["rules"]["name"] == "a-b"


async def test_replays_take_profiles_and_a_replay_with_neither_changes_nothing(client, banks):
    a, b = banks
    await put_profile(client, "a-b", "*", {"price": {"abs": "2"}})
    first = await pair(client, a, b, 1, "1.5")  # matched under the profile
    second = await pair(client, a, b, 2, "5")  # mismatched under it
    assert (first["status"], second["status"]) == ("matched", "mismatched")
    since = "2000-01-01T00:00:00Z"
    resp = await client.post("/v1/replays", json={"since": since}, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["changes"] == []  # the stored profile is replayed too
    # Under a looser profile for the pair, the second pair matches too.
    resp = await client.post("/v1/replays", json={"since": since, "profiles": {
        "a-b-loose": {"participants": ["BANKA", "BANKB"], "product": "XAU",
                      "fields": {"price": {"abs": "6"}}}}}, headers=ADMIN)
    body = await resp.json()
    assert resp.status == 200, body
    changed = {(c["trade_id"], c["after"]["status"]) for c in body["changes"]}
    assert changed == {("A-2", "matched"), ("B-2", "matched")}
    # Its record keeps the profiles it was run with, as given (omitted fields exact).
    record = await (await client.get(f"/v1/replays/{body['replay_id']}",
                                     headers=ADMIN)).json()
    assert record["rules"] == {}
    assert list(record["profiles"]) == ["a-b-loose"]
    loose = record["profiles"]["a-b-loose"]
    assert loose["participants"] == ["BANKA", "BANKB"] and loose["product"] == "XAU"
    assert loose["fields"]["price"] == {"abs": "6"}
    # Bad profiles in a replay are refused like any other.
    resp = await client.post("/v1/replays", json={"since": since, "profiles": {
        "x": {"participants": ["BANKA"], "product": "XAU"}}}, headers=ADMIN)
    assert resp.status == 422


@pytest.mark.breaks_invariants  # forges what the check must report
async def test_kevin_check_verifies_what_decided_each_match(client, banks, conn, db_url):
    from kevin.check import check
    a, b = banks
    await put_profile(client, "a-b", "*", {"price": {"abs": "2"}})
    await pair(client, a, b, 1, "1.5")
    await client.put("/v1/rules/XAU", json={"price_tolerance": {"abs": "1"}}, headers=ADMIN)
    await client.delete("/v1/profiles/a-b", headers=ADMIN)
    await pair(client, a, b, 2, "0.5")
    report = await check(db_url)
    assert report.ok, report.text()
    # A match naming a profile version that was never in force is reported.
    async with conn.transaction():
        await conn.execute("ALTER TABLE trades DISABLE TRIGGER USER")
        await conn.execute(
            "UPDATE trades SET mismatches = jsonb_build_array(jsonb_set(mismatches -> 0,"
            " '{rules,version}', '7')) WHERE trade_id = 'A-1' AND status = 'matched'")
        await conn.execute("ALTER TABLE trades ENABLE TRIGGER USER")
    report = await check(db_url)
    assert report.offenders(10) == {("BANKA", "A-1")}
    assert "names profile a-b version 7" in report.text()


async def test_kevin_replay_takes_a_profiles_file(client, banks, db_url, tmp_path):
    import json

    from tests.processes import run_cli_async
    a, b = banks
    await pair(client, a, b, 1, "5")  # mismatched: exact
    profiles = tmp_path / "profiles.json"
    profiles.write_text(json.dumps({"a-b": {"participants": ["BANKA", "BANKB"],
                                            "product": "*", "fields": {"price": "ignore"}}}))
    code, out, err = await run_cli_async(db_url, "replay", "--since", "2000-01-01T00:00:00Z",
                                         "--profiles", str(profiles))
    assert code == 0, err
    assert {(c["trade_id"], c["after"]["status"]) for c in json.loads(out)["changes"]} == {
        ("A-1", "matched"), ("B-1", "matched")}
    profiles.write_text(json.dumps({"a-b": {"participants": ["BANKA"], "product": "*"}}))
    code, _, err = await run_cli_async(db_url, "replay", "--since", "2000-01-01T00:00:00Z",
                                       "--profiles", str(profiles))
    assert code != 0 and str(profiles) in err and len(err.strip().splitlines()) == 1
