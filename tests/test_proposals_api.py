"""Proposals through HTTP: resolving near-misses and cancelling matches by agreement."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from kevin.store.invariants import find_violations
from tests.conftest import ADMIN, wait_for
from tests.feed_helpers import read_all
from tests.test_matching_api import assert_matched, buy, get, post, sell


async def propose(client, headers, **body: Any) -> tuple[int, dict[str, Any]]:
    body = {"trade_id": "A-8", "kind": "match", "counterparty_trade_id": "B-8", **body}
    resp = await client.post("/v1/proposals", json=body, headers=headers)
    return resp.status, await resp.json()


async def answer(client, headers, proposal_id: str, decision: str,
                 comment: str | None = None) -> tuple[int, dict[str, Any]]:
    resp = await client.post(f"/v1/proposals/{proposal_id}/{decision}",
                             json={"comment": comment} if comment else None, headers=headers)
    return resp.status, await resp.json()


async def near_miss(client, a, b) -> None:
    """A-8 and B-8 mirror each other but for the price: both mismatched (exact rules)."""
    await post(client, a, sell("A-8", price="1000.25"))
    await post(client, b, buy("B-8", price="1003.00"))
    assert (await get(client, a, "A-8"))["status"] == "mismatched"


async def no_violations(conn) -> None:
    assert await find_violations(conn) == []


async def test_an_accepted_match_proposal_matches_both_with_reason_agreed(client, banks, conn):
    a, b = banks
    await near_miss(client, a, b)
    status, proposal = await propose(client, a, comment="price agreed on the phone")
    assert status == 201, proposal
    assert proposal["state"] == "open" and proposal["version"] == 1
    assert proposal["proposer"] == "BANKA" and proposal["counterparty"] == "BANKB"
    assert proposal["differences"] == [{"field": "price", "ours": "1000.25",
                                        "theirs": "1003.00"}]
    pid = proposal["proposal_id"]

    status, accepted = await answer(client, b, pid, "accept", "ok")
    assert status == 200 and accepted["state"] == "accepted" and accepted["version"] == 2
    assert accepted["actor"] == "BANKB" and accepted["comment"] == "ok"
    ours, theirs = await get(client, a, "A-8"), await get(client, b, "B-8")
    assert_matched(ours, theirs)
    assert ours["reason"] == theirs["reason"] == "agreed"
    assert ours["match"]["match_id"] == pid  # the agreement and the match name each other
    assert ours["match"]["accepted_differences"] == [
        {"field": "price", "ours": "1000.25", "theirs": "1003.00"}]
    assert theirs["match"]["accepted_differences"] == [
        {"field": "price", "ours": "1003.00", "theirs": "1000.25"}]
    assert ours["mismatches"] == [] and theirs["mismatches"] == []
    await no_violations(conn)


async def test_a_match_made_by_rules_carries_no_accepted_differences(client, banks):
    a, b = banks
    await post(client, a, sell("A-1"))
    await post(client, b, buy("B-1"))
    assert "accepted_differences" not in (await get(client, a, "A-1"))["match"]


async def test_both_sides_learn_of_every_proposal_change_on_their_feed(client, banks):
    a, b = banks
    await near_miss(client, a, b)
    _, proposal = await propose(client, a)
    await answer(client, b, proposal["proposal_id"], "reject", "not at that price")
    for headers, me in ((a, "BANKA"), (b, "BANKB")):
        # Seqs are handed out just after commit (the sequencer): wait for the decision's.
        updates = await wait_for(lambda h=headers: _with_proposals(client, h, 2))
        seqs = [u["seq"] for u in updates]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        mine = [u for u in updates if u["event"] == "proposal"]
        assert [(u["state"], u["version"], u["participant"]) for u in mine] == [
            ("open", 1, me), ("rejected", 2, me)]
        assert mine[1]["proposal"]["comment"] == "not at that price"
    # The admin's feed carries both participants' updates.
    await wait_for(lambda: _with_proposals(client, ADMIN, 4))


async def _with_proposals(client, headers, n: int):
    updates = await read_all(client, headers)
    return updates if len([u for u in updates if u["event"] == "proposal"]) >= n else None


async def test_only_the_two_participants_and_the_admin_see_a_proposal(client, banks, api):
    a, b = banks
    c = await api.participant("BANKC")
    await near_miss(client, a, b)
    _, proposal = await propose(client, a)
    path = f"/v1/proposals/{proposal['proposal_id']}"
    for headers in (a, b, ADMIN):
        resp = await client.get(path, headers=headers)
        assert resp.status == 200 and (await resp.json())["proposal_id"] == \
            proposal["proposal_id"]
    assert (await client.get(path, headers=c)).status == 404
    for decision in ("accept", "reject", "withdraw"):
        assert (await answer(client, c, proposal["proposal_id"], decision))[0] == 404
    listed = await (await client.get("/v1/proposals", params={"state": "open"},
                                     headers=c)).json()
    assert listed["proposals"] == []
    for headers in (a, b, ADMIN):
        listed = await (await client.get("/v1/proposals", params={"state": "open"},
                                         headers=headers)).json()
        assert [p["proposal_id"] for p in listed["proposals"]] == [proposal["proposal_id"]]
    listed = await (await client.get("/v1/proposals", params={"state": "accepted"},
                                     headers=a)).json()
    assert listed["proposals"] == []
    assert (await client.get("/v1/proposals", params={"state": "maybe"},
                             headers=a)).status == 422


async def test_who_may_decide(client, banks):
    a, b = banks
    await near_miss(client, a, b)
    _, proposal = await propose(client, a)
    pid = proposal["proposal_id"]
    status, body = await answer(client, a, pid, "accept")
    assert status == 403  # accepting your own proposal
    assert (await answer(client, a, pid, "reject"))[0] == 403
    assert (await answer(client, b, pid, "withdraw"))[0] == 403
    assert (await answer(client, ADMIN, pid, "accept"))[0] == 403
    status, withdrawn = await answer(client, a, pid, "withdraw")
    assert status == 200 and withdrawn["state"] == "withdrawn"
    status, body = await answer(client, b, pid, "accept")
    assert status == 409 and body["error"] == "proposal_not_open"
    assert body["details"]["state"] == "withdrawn"
    assert (await get(client, a, "A-8"))["status"] == "mismatched"


async def test_a_new_version_of_either_trade_lapses_an_open_proposal(client, banks, conn):
    a, b = banks
    await near_miss(client, a, b)
    _, proposal = await propose(client, a)
    current = await get(client, b, "B-8")
    resp = await client.put("/v1/trades/B-8", json={**buy("B-8", price="1002.00"),
                                                    "trade_id": "B-8"},
                            headers={**b, "If-Match": f'"{current["version"]}"'})
    assert resp.status == 200, await resp.text()
    resp = await client.get(f"/v1/proposals/{proposal['proposal_id']}", headers=a)
    lapsed = await resp.json()
    assert lapsed["state"] == "lapsed" and lapsed["actor"] == "kevin" and lapsed["version"] == 2
    status, body = await answer(client, b, proposal["proposal_id"], "accept")
    assert status == 409 and body["details"]["state"] == "lapsed"
    # The new versions can be proposed again.
    status, again = await propose(client, b, trade_id="B-8", counterparty_trade_id="A-8")
    assert status == 201 and again["trade_version"] == (await get(client, b, "B-8"))["version"]
    await no_violations(conn)


async def test_an_accepted_cancel_proposal_cancels_both_legs(client, banks, conn):
    a, b = banks
    await post(client, a, sell("A-8"))
    await post(client, b, buy("B-8"))
    status, body = await propose(client, a, kind="match")
    assert status == 409 and body["details"]["reason"] == "already_matched"
    status, proposal = await propose(client, a, kind="cancel", comment="booked twice")
    assert status == 201 and proposal["differences"] == []
    status, accepted = await answer(client, b, proposal["proposal_id"], "accept")
    assert status == 200
    ours, theirs = await get(client, a, "A-8"), await get(client, b, "B-8")
    assert ours["status"] == theirs["status"] == "cancelled"
    assert ours["reason"] == theirs["reason"] == "cancelled"
    await no_violations(conn)


async def test_a_cancel_proposal_needs_the_two_trades_matched_together(client, banks):
    a, b = banks
    await near_miss(client, a, b)
    status, body = await propose(client, a, kind="cancel")
    assert status == 409 and body["error"] == "cannot_propose"
    assert body["details"]["reason"] == "not_matched"


async def test_matched_cancel_by_agreement_refuses_a_plain_delete(client, banks):
    a, b = banks
    resp = await client.put("/v1/profiles/a-b", json={
        "participants": ["BANKA", "BANKB"], "product": "*",
        "matched_cancel": "by_agreement"}, headers=ADMIN)
    assert resp.status == 200
    await post(client, a, sell("A-8"))
    await post(client, b, buy("B-8"))
    matched = await get(client, a, "A-8")
    resp = await client.delete("/v1/trades/A-8",
                               headers={**a, "If-Match": f'"{matched["version"]}"'})
    body = await resp.json()
    assert resp.status == 409 and body["error"] == "agreement_required"
    assert body["details"]["profile"] == "a-b"
    assert (await get(client, a, "A-8"))["version"] == matched["version"]
    # An unmatched trade of the pair is still cancelled freely.
    await post(client, a, sell("A-9", price="5"))
    resp = await client.delete("/v1/trades/A-9", headers={**a, "If-Match": '"1"'})
    assert resp.status == 200
    # Without the profile (retired), the plain cancel works again.
    await client.delete("/v1/profiles/a-b", headers=ADMIN)
    resp = await client.delete("/v1/trades/A-8",
                               headers={**a, "If-Match": f'"{matched["version"]}"'})
    assert resp.status == 200


async def test_bad_proposals(client, banks, api):
    a, b = banks
    await near_miss(client, a, b)
    await post(client, b, buy("B-9", product="XAG"))
    status, body = await propose(client, a, trade_id="NOPE")
    assert status == 404
    status, body = await propose(client, a, counterparty_trade_id="NOPE")
    assert status == 404
    status, body = await propose(client, a, counterparty_trade_id="B-9")
    assert status == 409 and body["details"]["reason"] == "not_mirrored"
    status, body = await propose(client, a, kind="swap")
    assert status == 422 and body["details"][0]["field"] == "kind"
    resp = await client.post("/v1/proposals", json={"trade_id": "A-8", "kind": "match",
                                                    "counterparty_trade_id": "B-8"},
                             headers=ADMIN)
    assert resp.status == 403
    assert (await propose(client, a))[0] == 201
    status, body = await propose(client, a)
    assert status == 409 and body["error"] == "proposal_exists"
    # The other side proposing the same thing is the same proposal.
    status, body = await propose(client, b, trade_id="B-8", counterparty_trade_id="A-8")
    assert status == 409 and body["error"] == "proposal_exists"
    assert (await client.get("/v1/proposals/not-a-uuid", headers=a)).status == 404
    assert (await client.get("/v1/proposals/00000000-0000-0000-0000-000000000000",
                             headers=a)).status == 404
    resp = await client.delete("/v1/trades/A-8", headers={**a, "If-Match": '"2"'})
    assert resp.status == 200
    status, body = await propose(client, a)
    assert status == 409 and body["details"]["reason"] == "not_live"


# --- kevin check ---------------------------------------------------------------------------


@pytest.mark.breaks_invariants  # forges what the check must report
async def test_kevin_check_reports_an_accepted_proposal_without_its_outcome(
        client, banks, conn, db_url):
    from kevin.check import check
    a, b = banks
    await near_miss(client, a, b)
    _, proposal = await propose(client, a)
    await answer(client, b, proposal["proposal_id"], "accept")
    assert (await check(db_url)).ok
    async with conn.transaction():
        await conn.execute("ALTER TABLE trades DISABLE TRIGGER USER")
        await conn.execute("UPDATE trades SET reason = 'matched' WHERE reason = 'agreed' "
                           "AND participant = 'BANKA'")
        await conn.execute("ALTER TABLE trades ENABLE TRIGGER USER")
    report = await check(db_url)
    assert report.offenders(8) == {("BANKA", "A-8")}
    assert "accepted match proposal" in report.text()


@pytest.mark.breaks_invariants  # forges what the check must report
async def test_kevin_check_reports_open_proposals_that_should_not_be(
        client, banks, conn, db_url):
    from kevin.check import check
    a, b = banks
    await near_miss(client, a, b)
    _, proposal = await propose(client, a)
    # A new version written while the lapse trigger is off leaves the proposal open on a
    # stale version; a second open proposal for the same trades slips past the index.
    await conn.execute("ALTER TABLE trades DISABLE TRIGGER trades_lapse_proposals")
    current = await get(client, a, "A-8")
    resp = await client.put("/v1/trades/A-8", json={**sell("A-8", price="1001"),
                                                    "trade_id": "A-8"},
                            headers={**a, "If-Match": f'"{current["version"]}"'})
    assert resp.status == 200
    await conn.execute("ALTER TABLE trades ENABLE TRIGGER trades_lapse_proposals")
    await conn.execute("DROP INDEX ix_proposals_one_open")
    await conn.execute(
        "INSERT INTO proposals SELECT gen_random_uuid(), version, latest, kind, state, "
        "proposer, trade_id, trade_version, counterparty, counterparty_trade_id, "
        "counterparty_trade_version, pair_key, differences, comment, actor, created_at, "
        "recorded_at FROM proposals WHERE proposal_id = $1", uuid.UUID(proposal["proposal_id"]))
    report = await check(db_url)
    problems = [v.problem for v in report.violations if v.invariant == 9]
    assert any("2 open match proposals" in p for p in problems), problems
    assert any("names version 2, the latest is 3" in p for p in problems), problems
