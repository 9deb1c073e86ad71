"""Proposal updates downstream of the feed: kevin.consumer hands them to a callback (its
mirror tables hold trades only), and the NATS relay carries them."""

from __future__ import annotations

import asyncio

import pytest

from kevin.consumer import Consumer, ProposalEvent
from kevin.dburl import to_asyncpg_dsn
from tests.conftest import ADMIN, wait_for
from tests.feed_helpers import read_all, relayed
from tests.test_proposals_api import answer, near_miss, propose

NATS_URL = "nats://127.0.0.1:4222"


async def test_the_consumer_hands_proposals_to_its_callback(client, banks, empty_db_url):
    a, b = banks
    await near_miss(client, a, b)
    _, proposal = await propose(client, a)
    await answer(client, b, proposal["proposal_id"], "accept")
    feed = await wait_for(lambda: _sequenced(client, b, 5))  # 2 versions + 2 + 2 proposals
    pool = await Consumer.create_pool(to_asyncpg_dsn(empty_db_url), min_size=1, max_size=2)
    proposals: list[ProposalEvent] = []
    trades: list[tuple[str, int]] = []

    async def on_trade(conn, update):
        trades.append((update.trade_id, update.version))

    async def on_proposal(conn, event: ProposalEvent):
        proposals.append(event)

    try:
        consumer = Consumer(url=str(client.make_url("")),
                            api_key=b["Authorization"].split(" ", 1)[1], pool=pool,
                            strategy="contiguous", callback=on_trade, on_proposal=on_proposal)
        await consumer.setup()
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        await wait_for(lambda: _checkpoint(pool, feed[-1]["seq"]))
        stop.set()
        await asyncio.wait_for(task, 10)
        assert [(e.state, e.version, e.participant) for e in proposals] == [
            ("open", 1, "BANKB"), ("accepted", 2, "BANKB")]
        assert proposals[1].proposal["proposer"] == "BANKA"
        held = await pool.fetch("SELECT trade_id, version FROM kevin_trade_versions "
                                "ORDER BY trade_id, version")
        assert [(r["trade_id"], r["version"]) for r in held] == sorted(trades)
        assert {r["trade_id"] for r in held} == {"B-8"}  # trades only, no proposal rows
    finally:
        await pool.close()


async def _sequenced(client, headers, n):
    updates = await read_all(client, headers)
    return updates if len(updates) >= n else None


async def _checkpoint(pool, seq):
    try:
        return await pool.fetchval("SELECT seq FROM kevin_feed_checkpoints") == seq
    except Exception:  # the table does not exist before the consumer's first poll
        return False


@pytest.mark.slow
async def test_the_nats_relay_carries_proposal_updates(client, banks, pool):
    a, b = banks
    await near_miss(client, a, b)
    _, proposal = await propose(client, a)
    await answer(client, a, proposal["proposal_id"], "withdraw")
    feed = await wait_for(lambda: _sequenced(client, ADMIN, 8))
    prefix, carried = await relayed(pool, len(feed))
    pid = proposal["proposal_id"]
    proposal_ids = [mid for _, mid, body in carried if body["event"] == "proposal"]
    assert sorted(proposal_ids) == sorted(
        f"{who}/proposal/{pid}/{v}" for who in ("BANKA", "BANKB") for v in (1, 2))
    subjects = {subject for subject, mid, _ in carried if "/proposal/" in mid}
    assert subjects == {f"{prefix}.BANKA", f"{prefix}.BANKB"}
