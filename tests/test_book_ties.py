"""Many trades tied at a price: the in-memory book keeps each price level in invariant 7's
order (quantity difference, first submission, trade_id) and walks it from the trade's
quantity outwards, so it finds the best candidate without visiting every tie. It must
still choose exactly what deciding over every resting counterpart chooses, and what the
PostgreSQL book's candidate search (kevin.store.matching_queries) chooses."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kevin.domain.matching import candidate_order, decide
from kevin.domain.memory_book import MemoryBook
from kevin.domain.models import Trade, TradeTerms
from kevin.domain.rules import Rules
from kevin.domain.versions import NewVersion
from kevin.store import database, participants
from kevin.store import trades as store
from kevin.store.book import PostgresBook

T0 = datetime(2026, 11, 20, 9, tzinfo=UTC)
PRICES = ["999.98", "999.99", "1000.00", "1000.01", "1000.03"]
QUANTITIES = ["98", "99", "100", "101", "102"]

RULES = [
    Rules(),
    Rules.model_validate({"price_tolerance": {"abs": "0.01"}}),
    Rules.model_validate({"price_tolerance": {"abs": "0.02"}, "quantity_tolerance": {"abs": "1"},
                          "settlement_date_window_days": 1, "location": "ignore"}),
    Rules.model_validate({"fields": {"price": {"range": {"below": "0.02", "above": "0.01"}},
                                     "quantity": {"pct": "1"}, "location": "ignore"}}),
    Rules.model_validate({"fields": {"price": {"bps": "0.2"},
                                     "quantity": {"range": {"below": "2", "above": "0"}}}}),
    Rules.model_validate({"fields": {"price": "ignore", "quantity": {"abs": "1"}}}),
]


def _terms(side: str, price: str, quantity: str, settlement: int, location: str | None
           ) -> dict[str, Any]:
    return {"counterparty": "BANKA" if side == "buy" else "BANKB", "side": side,
            "product": "XAU", "quantity": quantity, "price": price, "currency": "USD",
            "trade_date": date(2026, 11, 20), "settlement_date": date(2026, 11, settlement),
            "location": location}


resting_trades = st.lists(
    st.tuples(st.sampled_from(PRICES), st.sampled_from(QUANTITIES),
              st.integers(0, 3),  # seconds after T0: ties in first submission too
              st.sampled_from([24, 24, 25]), st.sampled_from(["LDN", "LDN", "NYC"]),
              st.sampled_from(["unmatched", "mismatched"])),
    min_size=0, max_size=60)


def _resting(specs: list[tuple[str, str, int, int, str, str]], ids: list[int]) -> list[Trade]:
    return [Trade.model_validate({
        **_terms("buy", price, quantity, settlement, location),
        "trade_id": f"B-{n}", "participant": "BANKB", "version": 1, "status": status,
        "reason": "submitted", "recorded_at": T0,
        "first_submitted_at": T0 + timedelta(seconds=second)})
        for (price, quantity, second, settlement, location, status), n
        in zip(specs, ids, strict=False)]


def _incoming(price: str, quantity: str, second: int) -> Trade:
    return Trade.model_validate({
        **_terms("sell", price, quantity, 24, "LDN"), "trade_id": "A-1",
        "participant": "BANKA", "version": 1, "status": "unmatched", "reason": "submitted",
        "recorded_at": T0, "first_submitted_at": T0 + timedelta(seconds=second)})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=resting_trades,
       salt=st.integers(1, 1008),
       price=st.sampled_from([*PRICES, "999.97", "1000.02", "1000.05"]),
       quantity=st.sampled_from([*QUANTITIES, "97", "100.5", "103"]),
       second=st.integers(0, 4), rules=st.sampled_from(RULES),
       broken_every=st.integers(0, 5))
def test_the_walk_through_ties_decides_as_every_counterpart_would(
        specs: list[Any], salt: int, price: str, quantity: str, second: int,
        rules: Rules, broken_every: int) -> None:
    # Distinct ids (1009 is prime) whose order as text is not the order of the list.
    resting = _resting(specs, [i * salt % 1009 for i in range(len(specs))])
    trade = _incoming(price, quantity, second)
    broken = {frozenset((("BANKA", "A-1"), ("BANKB", t.trade_id)))
              for i, t in enumerate(resting) if broken_every and i % broken_every == 0}
    book = MemoryBook(resting, broken=broken)
    everyone = [t for t in resting
                if frozenset((("BANKA", "A-1"), ("BANKB", t.trade_id))) not in broken]
    few = book.counterparts(trade, rules)
    assert decide(trade, few, rules) == decide(trade, everyone, rules)
    # Taken in invariant 7's order, so a match ends the walk at the best candidate.
    assert few == sorted(few, key=lambda c: candidate_order(trade, c))


def _level(n: int, price: str) -> list[Trade]:
    """n identical resting buys at one price, first submitted in reverse trade_id order
    a second apart (so neither the trade_id nor the position picks the best)."""
    return _resting([(price, "100", n - i, 24, "LDN", "unmatched") for i in range(n)],
                    list(range(n)))


def test_a_deep_price_level_costs_one_candidate_not_all_of_them() -> None:
    book = MemoryBook(_level(2_000, "1000.00"))
    (best,) = book.counterparts(_incoming("1000.00", "100", 9), Rules())
    assert (best.trade_id, best.first_submitted_at) == ("B-1999", T0 + timedelta(seconds=1))


def test_a_deep_level_out_of_tolerance_gives_the_nearest_three() -> None:
    book = MemoryBook(_level(2_000, "1000.01"))
    found = book.counterparts(_incoming("1000.00", "100", 9), Rules())
    assert [t.trade_id for t in found] == ["B-1999", "B-1998", "B-1997"]


async def test_the_memory_book_chooses_as_the_postgresql_book_among_many_ties(
        pool: asyncpg.Pool) -> None:
    """The same resting trades in PostgreSQL and in memory, many of them tied on price,
    quantity difference and first submission: for every incoming trade and rules the two
    books' candidates decide the same."""
    rng = random.Random(14)
    specs = [(rng.choice(PRICES), rng.choice(QUANTITIES), rng.randrange(3),
              rng.choice([24, 24, 25]), rng.choice(["LDN", "LDN", "NYC"]), "unmatched")
             for _ in range(300)]
    async with database.transaction(pool) as conn:
        for name in ("BANKA", "BANKB"):
            await participants.create(conn, name)
        stored = [await _store(conn, t) for t in _resting(specs, rng.sample(range(10_000), 300))]
    book = MemoryBook(stored)
    compared = 0
    async with database.transaction(pool) as conn:
        postgres = PostgresBook(conn)
        for price in [*PRICES, "999.97", "1000.02"]:
            for quantity in ["97", "99", "100", "101", "103"]:
                trade = _incoming(price, quantity, rng.randrange(4))
                for rules in RULES:
                    ours = decide(trade, book.counterparts(trade, rules), rules)
                    theirs = decide(trade, await postgres.candidates(trade, rules), rules)
                    assert ours == theirs, (price, quantity, rules)
                    compared += 1
    assert compared == 7 * 5 * len(RULES)


async def _store(conn: asyncpg.Connection, trade: Trade) -> Trade:
    written = await store.insert_version(conn, NewVersion(
        participant=trade.participant, trade_id=trade.trade_id, version=1,
        status=trade.status, reason="submitted", actor=trade.participant,
        terms=TradeTerms.model_validate(trade.terms().model_dump()),
        first_submitted_at=trade.first_submitted_at))
    assert written is not None
    return written
