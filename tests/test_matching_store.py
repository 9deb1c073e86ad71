"""The candidate query against real PostgreSQL: it must hand `decide` what it needs (the
same decision as over the whole book) and be driven by the resting index."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from kevin import jsoncodec
from kevin.domain.matching import Matched, decide
from kevin.domain.models import Trade, TradeTerms
from kevin.domain.rules import Rules
from kevin.store import matching as match_store
from kevin.store import matching_queries as q
from kevin.store import trades as store
from kevin.store.trades import NewVersion

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
RULES = [
    Rules(),
    Rules.model_validate({"price_tolerance": {"abs": "0.3"}, "quantity_tolerance": {"abs": "1"}}),
    Rules.model_validate({"price_tolerance": {"bps": "25"}, "settlement_date_window_days": 1,
                          "location": "ignore"}),
    Rules.model_validate({"price_tolerance": {"bps": "0.5"}, "quantity_tolerance": {"abs": "2"}}),
]


def _terms(rng: random.Random, side: str, counterparty: str) -> TradeTerms:
    return TradeTerms(
        counterparty=counterparty, side=side, product="XAU",
        quantity=Decimal(rng.choice(["98", "99", "100", "100.5", "101", "103"])),
        price=Decimal("1000") + Decimal(rng.randint(-40, 40)) / 20,
        currency="USD", trade_date=date(2026, 11, 20 + rng.choice([0, 0, 0, 1])),
        settlement_date=date(2026, 11, 24) + timedelta(days=rng.choice([0, 0, 1, 2])),
        location=rng.choice(["LDN", "LDN", "NYC", None]))


async def _book(pool, rng: random.Random, n: int) -> list[Trade]:
    """BANKB's resting buys (and some noise in other keys), written without matching."""
    written = []
    async with pool.acquire() as conn:
        for i in range(n):
            side, counterparty = ("buy", "BANKA") if i % 5 else ("sell", "BANKA")
            new = NewVersion(participant="BANKB", trade_id=f"B-{i:03d}", version=1,
                             status=rng.choice(["unmatched", "mismatched"]), reason="submitted",
                             terms=_terms(rng, side, counterparty), actor="test",
                             first_submitted_at=T0 + timedelta(seconds=rng.randint(0, 5)))
            trade = await store.insert_version(conn, new)
            assert trade is not None
            written.append(trade)
    return written


@pytest.mark.parametrize("rules_index", range(len(RULES)))
async def test_candidate_query_gives_decide_what_the_whole_book_would(pool, rules_index):
    rules = RULES[rules_index]
    rng = random.Random(rules_index)
    book = await _book(pool, rng, 120)
    agreed = matched = 0
    async with pool.acquire() as conn:
        for i in range(150):
            # Entered the book before some candidates and after others (an amended trade):
            # exercises which price a bps tolerance is taken of.
            entered = T0 + timedelta(seconds=rng.randint(0, 5), microseconds=1)
            probe = Trade(trade_id=f"A-{i}", participant="BANKA", version=1, status="unmatched",
                          reason="submitted", recorded_at=entered, first_submitted_at=entered,
                          **_terms(rng, "sell", "BANKB").model_dump())
            found = await match_store.find_candidates(conn, probe, rules)
            assert len(found) <= 2 * match_store.NEAREST_PER_SIDE
            from_query = decide(probe, found, rules)
            from_book = decide(probe, book, rules)
            assert from_query == from_book, (probe, found)
            agreed += 1
            matched += isinstance(from_book, Matched)
    assert agreed == 150 and 0 < matched < 150  # both outcomes were exercised


async def test_broken_pairs_are_not_candidates(pool):
    rng = random.Random(1)
    async with pool.acquire() as conn:
        new = NewVersion(participant="BANKB", trade_id="B-1", version=1, status="unmatched",
                         reason="submitted", terms=_terms(rng, "buy", "BANKA"), actor="test",
                         first_submitted_at=T0)
        resting = await store.insert_version(conn, new)
        assert resting is not None
        probe = resting.model_copy(update={
            "participant": "BANKA", "trade_id": "A-1", "counterparty": "BANKB", "side": "sell",
            "first_submitted_at": T0 + timedelta(hours=1)})
        assert await match_store.find_candidates(conn, probe, Rules()) == [resting]
        await match_store.record_broken_pair(conn, ("BANKB", "B-1"), ("BANKA", "A-1"),
                                             __import__("uuid").uuid4(), "test")
        assert await match_store.find_candidates(conn, probe, Rules()) == []


@pytest.mark.breaks_invariants  # forges rows the check refuses
async def test_the_candidate_queries_walk_the_resting_index(pool):
    """With a deep book the planner must range-scan ix_trades_resting (no Seq Scan, no
    full sort of the key), for the match query and the nearest-for-mismatch query."""
    async with pool.acquire() as conn:
        await conn.execute("""
            INSERT INTO trades (participant, trade_id, version, latest, status, reason,
                counterparty, side, product, quantity, price, currency, trade_date,
                settlement_date, location, actor, first_submitted_at)
            SELECT 'BANKB', 'B-' || g, 1, true, 'unmatched', 'submitted', 'BANKA', 'buy',
                'XAU', 100, 900 + (g % 20000) / 100.0, 'USD', '2026-11-20', '2026-11-24',
                'LDN', 'test', now()
            FROM generate_series(1, 20000) g
        """)
        await conn.execute("ANALYZE trades")
        probe = Trade(trade_id="A-1", participant="BANKA", version=1, status="unmatched",
                      reason="submitted", recorded_at=T0, first_submitted_at=T0 + timedelta(1),
                      counterparty="BANKB", side="sell", product="XAU", quantity=Decimal(100),
                      price=Decimal("1000.25"), currency="USD", trade_date=date(2026, 11, 20),
                      settlement_date=date(2026, 11, 24), location="LDN")
        rules = Rules.model_validate({"price_tolerance": {"bps": "5"}})
        values = match_store.candidate_values(probe, rules)
        args = q.CANDIDATE_SEARCH.args(values)
        queries = [(q.CANDIDATES, args),  # what runs live
                   (q.MATCH_CANDIDATES, args),
                   (q.NEAREST_CANDIDATES, q.NEAREST_SEARCH.args(values))]
        # A prepared statement may switch to a generic plan after five runs: check both.
        for mode, (sql, params) in itertools.product(
                ("force_custom_plan", "force_generic_plan"), queries):
            await conn.execute(f"SET plan_cache_mode = {mode}")
            plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *params)
            text = jsoncodec.dumps(plan).decode()
            assert "ix_trades_resting" in text, (mode, text)
            assert "Seq Scan" not in text, (mode, text)
            # Walks the index from our price outwards and stops: never sorts the whole key.
            # (The match query's tolerance range is small, so a plain sort there is fine.)
            if sql is q.NEAREST_CANDIDATES:
                assert '"Node Type": "Sort"' not in text, (mode, text)


@pytest.mark.breaks_invariants  # forges rows the check refuses
async def test_finding_who_points_at_a_trade_uses_the_mismatch_index(pool):
    """20,000 mismatched trades of one participant: the re-evaluation lookup must probe
    the GIN index on mismatch targets, not walk that participant's trades."""
    async with pool.acquire() as conn:
        await conn.execute("""
            INSERT INTO trades (participant, trade_id, version, latest, status, reason,
                counterparty, side, product, quantity, price, currency, trade_date,
                settlement_date, location, actor, first_submitted_at, mismatches)
            SELECT 'BANKB', 'B-' || g, 1, true, 'mismatched', 'mismatched', 'BANKA', 'buy',
                'XAU', 100, 900 + g / 100.0, 'USD', '2026-11-20', '2026-11-24', 'LDN', 'test',
                now(), jsonb_build_array(jsonb_build_object(
                    'counterparty_trade_id', 'A-' || g, 'fields', '[]'::jsonb))
            FROM generate_series(1, 20000) g
        """)
        await conn.execute("ANALYZE trades")
        target = Trade(trade_id="A-777", participant="BANKA", version=1, status="unmatched",
                       reason="submitted", recorded_at=T0, counterparty="BANKB", side="sell",
                       product="XAU", quantity=Decimal(100), price=Decimal(1000),
                       currency="USD", trade_date=date(2026, 11, 20),
                       settlement_date=date(2026, 11, 24))
        found = await match_store.naming(conn, target)
        assert [t.trade_id for t in found] == ["B-777"]
        # A prepared statement may switch to a generic plan after five runs: check both.
        for mode in ("force_custom_plan", "force_generic_plan"):
            await conn.execute(f"SET plan_cache_mode = {mode}")
            plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {q.NAMING}", "BANKB",
                                       "BANKA", "A-777")
            assert "ix_trades_mismatch_targets" in jsoncodec.dumps(plan).decode(), (mode, plan)
