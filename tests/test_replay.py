"""Replays: re-running matching from an instant under other rules, through HTTP and the
command line, against real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from kevin.check import check
from kevin.engine.archive import archive
from tests.conftest import ADMIN, as_read, wait_for
from tests.matching_checks import check_matching_invariants
from tests.processes import run_cli_async as run_cli
from tests.support import amend, buy, cancel, get, post, sell

ROOT = Path(__file__).resolve().parents[1]
US = timedelta(microseconds=1)


async def replay(client, since: str, rules: dict[str, Any] | None = None,
                 apply: bool = False, status: int = 200) -> dict[str, Any]:
    body: dict[str, Any] = {"since": since, "apply": apply}
    if rules is not None:
        body["rules"] = rules
    resp = await client.post("/v1/replays", json=body, headers=ADMIN)
    assert resp.status == status, await resp.text()
    return await resp.json()


async def db_now(conn) -> str:
    return (await conn.fetchval("SELECT clock_timestamp()")).isoformat()


async def counts(conn) -> tuple[int, int, int]:
    return (await conn.fetchval("SELECT count(*) FROM trade_history"),
            await conn.fetchval("SELECT count(*) FROM feed"),
            await conn.fetchval("SELECT count(*) FROM replays"))


XAU_RULES = {"price_tolerance": {"abs": "0.50"}, "quantity_tolerance": {"abs": "0"},
             "settlement_date_window_days": 1, "location": "exact"}


async def busy_day(client, banks) -> list[str]:
    """Matches, mismatches, amends, cancels, a break and a force under stored XAU rules;
    returns instants taken between the steps."""
    a, b = banks
    marks = []
    resp = await client.put("/v1/rules/XAU", json=XAU_RULES, headers=ADMIN)
    assert resp.status == 200
    marks.append((await resp.json())["recorded_at"])
    await post(client, a, sell("A-1", price="1000.00"))
    await post(client, b, buy("B-1", price="1000.40"))              # within 0.50: matched
    await post(client, a, sell("A-2", price="1000.00"))
    await post(client, b, buy("B-2", price="1002.00"))              # mismatched
    await post(client, b, buy("B-3", price="1003.00"))              # mismatched, farther
    marks.append((await get(client, b, "B-3"))["recorded_at"])
    await amend(client, b, buy("B-2", price="1000.30"))             # now matches A-2
    await post(client, a, sell("A-3", price="1003.20", quantity="90"))  # vs B-3: mismatch
    await amend(client, a, sell("A-1", price="1000.10", attributes={"x": 1}))
    await post(client, a, sell("A-4", price="999.00", settlement_date="2026-11-25"))
    await cancel(client, a, "A-3")                                  # B-3 rests again
    await post(client, a, sell("A-5", price="1003.00", location="NYC"))  # vs B-3 location
    marks.append((await get(client, a, "A-5"))["recorded_at"])
    await post(client, b, buy("B-5", price="999.10"))               # A-4 within 1 day
    b5 = await get(client, b, "B-5")
    if b5["status"] == "matched":
        resp = await client.delete(f"/v1/admin/matches/{b5['match']['match_id']}",
                                   json={"comment": "wrong desk"}, headers=ADMIN)
        assert resp.status == 200, await resp.text()
    legs = [{"participant": "BANKA", "trade_id": "A-5"},
            {"participant": "BANKB", "trade_id": "B-3"}]
    resp = await client.post("/v1/admin/matches", json={"legs": legs, "comment": "by phone"},
                             headers=ADMIN)
    assert resp.status == 201, await resp.text()
    await post(client, b, buy("B-6", price="1000.10", trade_date="2026-11-19"))
    await post(client, a, sell("A-6", price="1000.20", trade_date="2026-11-19"))
    return marks


async def test_replaying_the_rules_in_force_changes_nothing(client, banks, conn):
    before_all = await db_now(conn)
    marks = await busy_day(client, banks)
    assert await check_matching_invariants(conn) >= 3
    statuses = {r["status"] for r in await conn.fetch("SELECT status FROM trades")}
    assert {"matched", "mismatched", "unmatched", "cancelled"} <= statuses
    reasons = {r["reason"] for r in await conn.fetch("SELECT reason FROM trades")}
    assert {"forced", "broken", "amended", "cancelled", "mismatched"} <= reasons
    written = await counts(conn)
    dry_runs = 0
    for since in [before_all, *marks, await db_now(conn)]:
        result = await replay(client, since, {"XAU": XAU_RULES})
        assert result["changes"] == [], (since, result["changes"])
        assert result["applied"] is False and result["products"] == ["XAU"]
        # No rules given: every product active since then, under its stored rules.
        assert (await replay(client, since))["changes"] == []
        dry_runs += 2
    applied = await replay(client, before_all, {"XAU": XAU_RULES}, apply=True)
    assert applied["changes"] == [] and applied["applied"] is True
    trades, feed, replays = await counts(conn)
    assert (trades, feed) == written[:2] and replays == written[2] + dry_runs + 1


async def test_dry_run_shows_and_apply_writes_the_changes_of_looser_rules(
        client, banks, conn, db_url):
    a, b = banks
    since = await db_now(conn)
    await post(client, a, sell("A-1", price="1000.25"))
    await post(client, b, buy("B-1", price="1000.50"))   # exact matching: mismatched
    a1 = await get(client, a, "A-1")
    assert a1["status"] == "mismatched"
    written = await counts(conn)

    loose = {"XAU": {"price_tolerance": {"abs": "0.25"}}}
    dry = await replay(client, since, loose)
    assert dry["applied"] is False
    assert [(c["participant"], c["trade_id"]) for c in dry["changes"]] == [
        ("BANKA", "A-1"), ("BANKB", "B-1")]
    first = dry["changes"][0]
    assert first["before"]["status"] == "mismatched" and first["before"]["version"] == 2
    assert first["before"]["mismatches"][0]["fields"][0]["field"] == "price"
    assert first["after"] == {"status": "matched", "version": None, "mismatches": [],
                              "match": {"counterparty_trade_id": "B-1", "match_id": None,
                                        "counterparty_version": None}}
    # A dry run writes no version and no feed update, only its own record (applied: false).
    assert await counts(conn) == (written[0], written[1], written[2] + 1)
    assert await get(client, a, "A-1") == a1
    resp = await client.get(f"/v1/replays/{dry['replay_id']}", headers=ADMIN)
    assert resp.status == 200, await resp.text()
    record = await resp.json()
    assert record["replay_id"] == dry["replay_id"] and record["applied"] is False
    assert record["actor"] == "admin" and record["rules"]["XAU"]["price_tolerance"] == {
        "abs": "0.25"}
    assert record["profiles"] == {}  # none given
    assert datetime.fromisoformat(record["since"]) == datetime.fromisoformat(since)
    # Deterministic: the same replay again gives the same answer.
    again = await replay(client, since, loose)
    assert again["changes"] == dry["changes"] and again["replay_id"] != dry["replay_id"]
    written = await counts(conn)

    applied = await replay(client, since, loose, apply=True)
    assert applied["applied"] is True
    ours, theirs = (c["after"] for c in applied["changes"])
    assert ours["status"] == theirs["status"] == "matched"
    assert ours["match"]["match_id"] == theirs["match"]["match_id"] is not None
    assert ours["match"]["counterparty_version"] == theirs["version"]
    assert theirs["match"]["counterparty_version"] == ours["version"]
    a_now, b_now = await get(client, a, "A-1"), await get(client, b, "B-1")
    assert a_now["reason"] == b_now["reason"] == "replayed"
    assert a_now["version"] == ours["version"] == a1["version"] + 1
    # Appended, never rewritten: the mismatched version is still in the history.
    history = (await (await client.get("/v1/trades/A-1/versions", headers=a)).json())["versions"]
    assert [v["reason"] for v in history] == ["submitted", "mismatched", "replayed"]
    assert as_read(history[1]) == a1
    # Every replayed version points to the replay, and the replay is recorded.
    rows = await conn.fetch("SELECT replay_id::text FROM trades WHERE reason = 'replayed'")
    assert [r[0] for r in rows] == [applied["replay_id"]] * 2
    trades, feed, replays = await counts(conn)
    assert (trades, feed, replays) == (written[0] + 2, written[1] + 2, written[2] + 1)
    record = await (await client.get(f"/v1/replays/{applied['replay_id']}", headers=ADMIN)).json()
    assert record["replay_id"] == applied["replay_id"] and record["actor"] == "admin"
    assert record["applied"] is True
    assert datetime.fromisoformat(record["since"]) == datetime.fromisoformat(since)
    assert record["rules"] == {"XAU": {"price_tolerance": {"abs": "0.25"},
                                       "quantity_tolerance": {"abs": "0"},
                                       "settlement_date_window_days": 0, "location": "exact"}}
    await check_matching_invariants(conn)
    assert (await check(db_url)).ok
    # Applied once, the same replay has nothing left to change.
    assert (await replay(client, since, loose))["changes"] == []


async def test_best_candidate_wins_in_a_replay_too(client, banks, conn):
    a, b = banks
    since = await db_now(conn)
    for trade_id, price in (("A-1", "1001.00"), ("A-2", "1000.40"), ("A-3", "999.70")):
        await post(client, a, sell(trade_id, price=price))
    await post(client, b, buy("B-1", price="1000.00"))
    assert (await get(client, b, "B-1"))["status"] == "mismatched"
    result = await replay(client, since, {"XAU": {"price_tolerance": {"abs": "1"}}})
    matched = {(c["participant"], c["trade_id"]): c["after"] for c in result["changes"]
               if c["after"]["status"] == "matched"}
    # Smallest price difference first: A-3 (0.30) beats A-2 (0.40) and A-1 (1.00).
    assert matched == {
        ("BANKA", "A-3"): {**matched[("BANKA", "A-3")], "match": {
            "counterparty_trade_id": "B-1", "match_id": None, "counterparty_version": None}},
        ("BANKB", "B-1"): {**matched[("BANKB", "B-1")], "match": {
            "counterparty_trade_id": "A-3", "match_id": None, "counterparty_version": None}}}
    # The two losers stay mismatched with nothing to point at; they just rest.
    losers = {c["trade_id"]: c["after"]["status"] for c in result["changes"]
              if c["after"]["status"] != "matched"}
    assert losers == {"A-1": "unmatched", "A-2": "unmatched"}


async def test_a_replay_starts_from_the_book_as_it_stood(client, banks, conn):
    a, b = banks
    await client.put("/v1/rules/XAU", json={"price_tolerance": {"abs": "1"}}, headers=ADMIN)
    await post(client, a, sell("A-1", price="1000.00"))
    await post(client, b, buy("B-1", price="1000.80"))
    assert (await get(client, a, "A-1"))["status"] == "matched"
    since = await db_now(conn)
    await post(client, a, sell("A-2", price="1000.00"))
    await post(client, b, buy("B-2", price="1000.80"))
    tight = {"XAU": {"price_tolerance": {"abs": "0.10"}}}
    result = await replay(client, since, tight)
    # The match made before `since` stands; the one after it would not have happened.
    assert {c["trade_id"]: c["after"]["status"] for c in result["changes"]} == {
        "A-2": "mismatched", "B-2": "mismatched"}
    # From before everything, neither would have matched.
    everything = await replay(client, "2000-01-01T00:00:00Z", tight)
    assert len(everything["changes"]) == 4


async def test_a_trade_amended_across_products_replays_with_its_whole_history(
        client, banks, conn):
    """The history is read by product, over the products ``linked_products`` closed: a
    trade amended out of or into the replayed product brings the other product along, so
    each such trade is replayed from its first version (submitted in the other product)
    and the rules in force reproduce what live matching wrote."""
    a, b = banks
    since = await db_now(conn)
    await client.put("/v1/rules/XAU", json=XAU_RULES, headers=ADMIN)
    await post(client, a, sell("A-1", product="XAG", price="1000.00"))
    await post(client, b, buy("B-1", price="1000.40"))                 # nothing in XAU yet
    await amend(client, a, sell("A-1", price="1000.00"))               # into XAU: matched
    await post(client, a, sell("A-2", price="1000.00"))
    await amend(client, a, sell("A-2", product="XAG", price="1000.00"))  # out of XAU
    await post(client, b, buy("B-2", product="XAG", price="1000.00"))  # matched in XAG
    assert (await get(client, a, "A-1"))["status"] == "matched"
    assert (await get(client, b, "B-2"))["status"] == "matched"
    result = await replay(client, since, {"XAU": XAU_RULES})
    assert result["products"] == ["XAG", "XAU"]
    assert result["changes"] == []
    # Exact rules: A-1 (amended into XAU) and B-1 no longer match.
    exact = await replay(client, since, {"XAU": {}})
    assert {(c["trade_id"], c["after"]["status"]) for c in exact["changes"]} == {
        ("A-1", "mismatched"), ("B-1", "mismatched")}


async def test_a_replay_sees_archived_versions(client, banks, conn, pool, db_url):
    a, b = banks
    since = await db_now(conn)
    await post(client, a, sell("A-1", price="1000.25"))
    await post(client, b, buy("B-1", price="1000.75"))
    await amend(client, b, buy("B-1", price="1000.70"))
    await post(client, a, sell("A-2", price="1000.60", quantity="50"))
    loose = {"XAU": {"price_tolerance": {"abs": "0.50"}}}
    before = await replay(client, since, loose)
    assert before["changes"]
    moved = await archive(pool, datetime.fromisoformat(await db_now(conn)))
    assert moved.moved > 0
    assert (await replay(client, since, loose))["changes"] == before["changes"]
    await replay(client, since, loose, apply=True)
    assert (await replay(client, since, loose))["changes"] == []
    report = await check(db_url)  # archive-aware: versions 1..n across both tables
    assert report.ok, report.text()


async def test_replay_is_admin_only_and_validated(client, banks):
    a, _ = banks
    resp = await client.post("/v1/replays", json={"since": "2026-11-21T00:00:00Z"}, headers=a)
    assert resp.status == 403
    for bad in [{}, {"since": "2026-11-21T00:00:00"}, {"since": "yesterday"},
                {"since": "2026-11-21T00:00:00Z", "rules": {"XAU": {"location": "near"}}},
                {"since": "2026-11-21T00:00:00Z", "rules": {"X AU": {}}},
                {"since": "2026-11-21T00:00:00Z", "apply": "perhaps"},
                {"since": "2026-11-21T00:00:00Z", "extra": 1}]:
        resp = await client.post("/v1/replays", json=bad, headers=ADMIN)
        assert resp.status == 422, bad
        assert (await resp.json())["error"] == "validation_failed"
    assert (await client.get("/v1/replays/not-a-uuid", headers=ADMIN)).status == 404
    missing = await client.get("/v1/replays/00000000-0000-0000-0000-000000000000",
                               headers=ADMIN)
    assert missing.status == 404 and (await missing.json())["error"] == "not_found"


async def test_replay_apply_races_live_matching_safely(client, banks, conn):
    """Replays lock match keys as live matching does: an apply racing new submissions
    leaves every match mutual and every trade in at most one."""
    a, b = banks
    since = await db_now(conn)
    for i in range(10):
        await post(client, a, sell(f"A-{i}", price=f"{1000 + i}.25"))
        await post(client, b, buy(f"B-{i}", price=f"{1000 + i}.50"))
    loose = {"XAU": {"price_tolerance": {"abs": "0.25"}}}

    async def submit_more() -> None:
        for i in range(10, 20):
            await post(client, a, sell(f"A-{i}", price=f"{1000 + i}.25"))
            await post(client, b, buy(f"B-{i}", price=f"{1000 + i}.25"))

    results = await asyncio.gather(replay(client, since, loose, apply=True), submit_more())
    # Whatever the interleaving, the ten resting pairs are matched, A-i with B-i.
    matched = {c["trade_id"]: c["after"]["match"]["counterparty_trade_id"]
               for c in results[0]["changes"] if c["after"]["status"] == "matched"}
    assert {k: v for k, v in matched.items() if int(k[2:]) < 10} == {
        **{f"A-{i}": f"B-{i}" for i in range(10)}, **{f"B-{i}": f"A-{i}" for i in range(10)}}
    assert await check_matching_invariants(conn) == 20




@pytest.mark.slow
async def test_cli_replay_dry_run_and_apply(client, banks, conn, db_url, tmp_path):
    a, b = banks
    since = await db_now(conn)
    await post(client, a, sell("A-1", price="1000.25"))
    await post(client, b, buy("B-1", price="1000.50"))
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"XAU": {"price_tolerance": {"abs": "0.25"}}}))
    code, out, err = await run_cli(db_url, "replay", "--since", since, "--rules", str(rules))
    assert code == 0, err
    dry = json.loads(out)
    assert dry["applied"] is False and len(dry["changes"]) == 2
    assert (await get(client, a, "A-1"))["status"] == "mismatched"
    code, out, err = await run_cli(db_url, "replay", "--since", since, "--rules", str(rules),
                                   "--apply")
    assert code == 0, err
    applied = json.loads(out)
    assert applied["applied"] is True
    assert (await get(client, a, "A-1"))["reason"] == "replayed"
    records = await conn.fetch("SELECT actor, applied FROM replays ORDER BY recorded_at")
    assert [(r["actor"], r["applied"]) for r in records] == [("cli", False), ("cli", True)]
    rules.write_text("{not json")
    code, _, err = await run_cli(db_url, "replay", "--since", since, "--rules", str(rules))
    assert code != 0 and err.startswith("kevin: ") and len(err.strip().splitlines()) == 1
    code, _, err = await run_cli(db_url, "replay", "--since", "yesterday")
    assert code != 0 and "with a zone" in err


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_random_days_replay_to_no_changes_under_the_same_rules(service, pool, conn, seed):
    """Whatever participants and operators did, re-running it under the rules that were
    in force reproduces exactly what live matching wrote."""
    import random

    from kevin.domain.errors import KevinError
    from kevin.domain.models import TradeSubmission, TradeTerms
    from kevin.domain.rules import Rules
    from kevin.engine.replay import Replayer

    rng = random.Random(seed)
    for name in ("BANKA", "BANKB", "BANKC"):
        await service.create_participant(name)
    rules = Rules.model_validate({"price_tolerance": {"bps": "5"},
                                  "quantity_tolerance": {"abs": "1"},
                                  "settlement_date_window_days": 1, "location": "ignore"})
    await service.put_rules("XAU", rules, "admin")
    replayer = Replayer(pool)
    marks = [await conn.fetchval("SELECT clock_timestamp()")]
    live: dict[tuple[str, str], int] = {}

    def terms(participant: str) -> dict[str, Any]:
        counterparty = rng.choice([p for p in ("BANKA", "BANKB", "BANKC") if p != participant])
        return {"counterparty": counterparty, "side": rng.choice(["buy", "sell"]),
                "product": rng.choice(["XAU", "XAU", "XAG"]), "currency": "USD",
                "quantity": str(rng.choice([100, 100, 101, 103])),
                "price": str(1000 + Decimal(rng.choice(["0", "0", "0.3", "0.5", "0.6", "2"]))),
                "trade_date": "2026-11-20",
                "settlement_date": rng.choice(["2026-11-24", "2026-11-25", "2026-11-27"]),
                "location": rng.choice(["LDN", "NYC"])}

    for step in range(70):
        roll = rng.random()
        try:
            if roll < 0.1:  # a bulk submission of a few lines, matched set-based
                participant = rng.choice(["BANKA", "BANKB", "BANKC"])
                lines = [TradeSubmission.model_validate(
                    {"trade_id": f"{participant[-1]}-{step}.{n}", **terms(participant)})
                    for n in range(rng.randint(2, 8))]
                for outcome in await service.submit_batch(participant, lines):
                    assert outcome.trade is not None
                    live[(participant, outcome.trade.trade_id)] = outcome.trade.version
            elif roll < 0.55 or not live:
                participant = rng.choice(["BANKA", "BANKB", "BANKC"])
                trade_id = f"{participant[-1]}-{step}"
                _, trade = await service.submit(participant, TradeSubmission.model_validate(
                    {"trade_id": trade_id, **terms(participant)}))
                live[(participant, trade_id)] = trade.version
            else:
                participant, trade_id = rng.choice(sorted(live))
                current = await service.get(participant, trade_id)
                if roll < 0.75:
                    body = {**current.terms().model_dump(), "price": str(
                        current.price
                        + rng.choice([-1, 0, 1]) * Decimal(rng.choice(["0.2", "0.5"])))}
                    await service.amend(participant, trade_id, current.version,
                                        TradeTerms.model_validate(body))
                elif roll < 0.83:
                    await service.cancel(participant, trade_id, current.version)
                    del live[(participant, trade_id)]
                elif roll < 0.92 and current.match is not None:
                    await service.break_match(current.match.match_id, "ops", "admin")
                else:
                    others = [r for r in sorted(live) if r[0] == current.counterparty]
                    if others:
                        await service.force_match([(participant, trade_id), rng.choice(others)],
                                                  "phone", "admin")
        except KevinError:
            pass  # e.g. forcing a trade that is not resting: live refuses, nothing written
        if step % 10 == 9:
            marks.append(await conn.fetchval("SELECT clock_timestamp()"))
    reasons = {r[0] for r in await conn.fetch("SELECT DISTINCT reason FROM trades")}
    assert {"matched", "mismatched", "amended"} <= reasons, reasons
    for since in marks:
        for given in ({"XAU": rules, "XAG": Rules()}, {}):
            result = await replayer.replay(since, given, apply=False, actor="test")
            assert result.changes == [], (seed, since, given, result.changes)
    # And a different rule does change something, so the check above is not vacuous.
    exact = await replayer.replay(marks[0], {"XAU": Rules()}, apply=False, actor="test")
    assert exact.changes
    # Applied, a looser rule leaves a consistent book that replays to itself.
    loose = {"XAU": Rules.model_validate({"price_tolerance": {"bps": "30"},
                                          "quantity_tolerance": {"abs": "3"},
                                          "settlement_date_window_days": 3,
                                          "location": "ignore"})}
    dry = await replayer.replay(marks[1], loose, apply=False, actor="test")
    applied = await replayer.replay(marks[1], loose, apply=True, actor="test")
    assert [(c.participant, c.trade_id, c.after.status) for c in applied.changes] == \
        [(c.participant, c.trade_id, c.after.status) for c in dry.changes]
    assert applied.changes and any(c.after.status == "matched" for c in applied.changes)
    await check_matching_invariants(conn)
    assert (await replayer.replay(marks[1], loose, apply=False, actor="test")).changes == []


async def test_the_replay_endpoints_are_in_the_openapi_document(client):
    spec = await (await client.get("/openapi.json")).json()
    assert "post" in spec["paths"]["/v1/replays"]
    assert "get" in spec["paths"]["/v1/replays/{replay_id}"]
    schemas = spec["components"]["schemas"]
    assert {"ReplayRequest", "ReplayResult", "ReplayRecord", "MatchState"} <= set(schemas)
    assert set(schemas["ReplayRequest"]["required"]) == {"since"}
    refs = {v for v in _walk(spec) if isinstance(v, str) and v.startswith("#/components/")}
    assert all(ref.rsplit("/", 1)[-1] in schemas for ref in refs)


def _walk(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return [x for v in node.values() for x in _walk(v)]
    if isinstance(node, list):
        return [x for v in node for x in _walk(v)]
    return [node]


async def test_batch_submissions_replay_to_themselves(client, banks, conn):
    """A bulk submission is matched as if its lines came one by one, in order — and a
    replay re-runs them one by one, in order: the two must agree."""
    a, b = banks
    since = await db_now(conn)
    await client.put("/v1/rules/XAU", json={"price_tolerance": {"abs": "0.50"}}, headers=ADMIN)
    for i, price in enumerate(["1000.00", "1000.40", "1001.00", "1003.00", "1010.00"]):
        await post(client, a, sell(f"A-{i}", price=price))
    lines = [buy(f"B-{i}", price=price) for i, price in
             enumerate(["1000.10", "1000.20", "1002.00", "1000.90", "999.00", "1003.40"])]
    ndjson = "\n".join(json.dumps(line) for line in lines).encode()
    resp = await client.post("/v1/trades/batch", data=ndjson,
                             headers={**b, "Content-Type": "application/x-ndjson"})
    assert resp.status == 200, await resp.text()
    results = (await resp.json())["results"]
    assert [r["result"] for r in results] == ["created"] * len(lines)
    statuses = {r["trade"]["trade_id"]: r["trade"]["status"] for r in results}
    assert "matched" in statuses.values() and "mismatched" in statuses.values()
    assert (await replay(client, since))["changes"] == []
    assert (await replay(client, since, {"XAU": {"price_tolerance": {"abs": "0.50"}}})
            )["changes"] == []
    # And under exact rules, the batch would have matched nothing.
    exact = await replay(client, since, {"XAU": {}})
    assert {c["trade_id"] for c in exact["changes"] if c["before"]["status"] == "matched"}


async def test_a_dry_run_reading_its_history_does_not_hold_back_the_feed(
        client, banks, conn, monkeypatch):
    """A dry run reads everything in one read-only snapshot and takes no transaction id,
    so the feed's sequencer, which waits only for transactions holding one (the snapshot
    xmin it reads is the oldest running xid), keeps handing out seqs while a replay
    reads: the dry run is held open mid-read here while another trade is written."""
    from kevin.store import replay as replay_store

    a, b = banks
    since = await db_now(conn)
    await post(client, a, sell("A-1", price="1000.00"))
    await post(client, b, buy("B-1", price="1000.40"))
    reading, release = asyncio.Event(), asyncio.Event()
    replay_pids = []
    read_history = replay_store.history

    async def history_held_open(read_conn, products):
        versions = await read_history(read_conn, products)
        replay_pids.append(read_conn.get_server_pid())
        reading.set()
        await asyncio.wait_for(release.wait(), 60)
        return versions

    monkeypatch.setattr(replay_store, "history", history_held_open)
    dry_run = asyncio.create_task(replay(client, since, {"XAU": XAU_RULES}))
    try:
        await asyncio.wait_for(reading.wait(), 30)
        (pid,) = replay_pids
        holds = await conn.fetchrow(
            "SELECT backend_xid, backend_xmin, state FROM pg_stat_activity WHERE pid = $1", pid)
        assert holds["state"] == "idle in transaction" and holds["backend_xmin"] is not None
        assert holds["backend_xid"] is None
        await post(client, a, sell("A-2", price="1005.00"))

        async def sequenced() -> bool:
            return await conn.fetchval(
                "SELECT seq IS NOT NULL FROM feed WHERE participant = 'BANKA' "
                "AND trade_id = 'A-2'")

        await wait_for(sequenced, timeout=30)
        assert not dry_run.done()  # still reading when the feed moved on
    finally:
        release.set()
    answer = await dry_run
    assert answer["applied"] is False and answer["products"] == ["XAU"]


async def test_the_history_splits_the_same_whatever_order_its_rows_come_in(
        client, banks, conn):
    """The history statement has no ORDER BY (the server would sort every row before
    sending the first): ``split_history`` groups and orders the versions itself, so the
    starting book, the events and each trade's latest version are the same from the
    rows in any order — the busy day's, cut at each of its marks."""
    import random

    from kevin.domain.replay import split_history
    from kevin.store import replay as replay_store

    before_all = await db_now(conn)
    marks = await busy_day(client, banks)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        versions = await replay_store.history(
            conn, await replay_store.linked_products(conn, ["XAU"]))
        broken = await replay_store.broken_pairs(conn)
    assert len(versions) > len({v.trade_ref for v in versions})  # several per trade

    def split(rows, since):
        history = split_history(rows, datetime.fromisoformat(since), broken)
        return (history.book, history.events,
                {r: (s.version, s.txid) for r, s in history.latest.items()},
                history.built, history.broken_before)

    ordered = sorted(versions, key=lambda v: (v.trade_ref, v.version))
    shuffled = list(versions)
    random.Random(5).shuffle(shuffled)
    events = split(ordered, before_all)[1]
    assert {"Submitted", "Amended", "Cancelled", "Forced", "Broken"} <= {
        type(event).__name__ for event in events}
    for since in [before_all, *marks]:
        expected = split(ordered, since)
        for rows in (versions, ordered[::-1], shuffled):
            assert split(rows, since) == expected, since


async def test_the_history_read_builds_each_version_as_the_store_reads_it(
        client, banks, pool):
    """The replay's history statement returns its own columns (jsonb and amounts as text,
    a matched version's entry split by the server) and builds Trades from them: each
    must equal the version as the store reads it, and its outcome, read from the row
    without building it, the outcome of that Trade."""
    from kevin.domain.replay import outcome
    from kevin.store import replay as replay_store
    from kevin.store import trades as trade_store

    a, _ = banks
    await busy_day(client, banks)
    await post(client, a, sell("A-9", price="10000000000000000000.5",
                               quantity="0.000000000000000001", attributes={"n": 1e99}))
    async with pool.acquire() as conn:
        versions = await replay_store.history(
            conn, await replay_store.linked_products(conn, ["XAU"]))
        stored = {}
        for participant, trade_id in {v.trade_ref for v in versions}:
            for trade in await trade_store.versions(conn, participant, trade_id):
                stored[(participant, trade_id, trade.version)] = trade
    assert len(stored) == len(versions)
    for version in versions:
        trade = version.read()
        assert trade == stored[(*version.trade_ref, version.version)]
        assert version.outcome() == outcome(trade)
