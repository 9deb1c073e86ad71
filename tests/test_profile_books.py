"""Property: under random matching profiles, the in-memory book and the PostgreSQL book
decide identically — same statuses, matches, mismatch lists and what decided each."""

from __future__ import annotations

import asyncio
import itertools
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kevin.dburl import to_asyncpg_dsn
from kevin.domain.book import RulesInForce, choose_in_force
from kevin.domain.memory_book import MemoryBook
from kevin.domain.models import Trade, TradeTerms
from kevin.domain.profiles import Profile, ProfileVersion
from kevin.domain.versions import NewVersion, written
from kevin.engine.matching import Matcher
from kevin.store import database, participants
from kevin.store import matching as match_store
from kevin.store import profiles as profile_store
from kevin.store import trades as store
from kevin.store.book import PostgresBook
from kevin.store.matching import MatchKey

pytestmark = pytest.mark.slow

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
_amounts = st.sampled_from(["0", "0.05", "0.30", "1", "2.5"])
AMOUNT_FORMS = st.one_of(
    st.sampled_from(["exact", "ignore"]),
    st.builds(lambda x: {"abs": x}, _amounts),
    st.builds(lambda x: {"bps": x}, st.sampled_from(["1", "5", "30"])),
    st.builds(lambda x, m: {"pct": x, "max_abs": m}, st.sampled_from(["0.01", "0.1"]),
              _amounts),
    st.builds(lambda b, a: {"range": {"below": b, "above": a}}, _amounts, _amounts),
)
PROFILES = st.fixed_dictionaries({
    "price": AMOUNT_FORMS, "quantity": AMOUNT_FORMS,
    "settlement_date": st.sampled_from([{"days": 0}, {"days": 1},
                                        {"business_days": 1, "calendar": "GB"}]),
    "location": st.sampled_from(["exact", "ignore", {"equivalent": [["LDN", "LONDON"]]}]),
})


def state(trade: Trade) -> tuple[Any, ...]:
    return (trade.status, trade.version, trade.reason,
            trade.match.counterparty_trade_id if trade.match else None,
            trade.match.rules if trade.match else None,
            [(m.counterparty_trade_id, [(f.field, f.ours, f.theirs, f.tolerance)
                                        for f in m.fields], m.rules)
             for m in trade.mismatches])


def flow(seed: int, a: str, b: str) -> list[tuple[str, str, TradeTerms]]:
    rng = random.Random(seed)
    out = []
    for i in range(24):
        participant = rng.choice([a, b])
        other = b if participant == a else a
        out.append((participant, f"T-{i}", TradeTerms.model_validate({
            "counterparty": other, "side": "sell" if participant == a else "buy",
            "product": "XAU", "currency": "USD",
            "price": str(Decimal(1000) + Decimal(rng.randrange(-40, 40)) / 100),
            "quantity": rng.choice(["100", "100.5", "101", "103"]),
            "trade_date": "2026-12-23",
            "settlement_date": rng.choice(["2026-12-24", "2026-12-29", "2026-12-30"]),
            "location": rng.choice(["LDN", "LONDON", "NYC"])})))
    return out


async def _postgres(url: str, a: str, b: str, fields: dict[str, Any],
                    trades: list[tuple[str, str, TradeTerms]]) -> dict[str, Trade]:
    pool = await database.create_pool(url, min_size=1, max_size=2)
    try:
        async with database.transaction(pool) as conn:
            for name in (a, b):
                await participants.create(conn, name)
            await profile_store.append_profile(conn, f"{a}-{b}", Profile(
                participants=(a, b), product="*", fields=fields), "test")
        for participant, trade_id, terms in trades:
            async with database.transaction(pool) as conn:
                await match_store.lock_match_keys(conn, [MatchKey.of(participant, terms)])
                created = await store.insert_version(conn, NewVersion(
                    participant=participant, trade_id=trade_id, version=1,
                    status="unmatched", reason="submitted", terms=terms, actor=participant))
                assert created is not None
                book = PostgresBook(conn)
                book.remember(created)
                await Matcher(book, participant).submitted(created)
        async with database.connection(pool) as conn:
            return {trade_id: await store.latest(conn, p, trade_id)  # type: ignore[misc]
                    for p, trade_id, _ in trades}
    finally:
        await pool.close()


async def _memory(a: str, b: str, fields: dict[str, Any],
                  trades: list[tuple[str, str, TradeTerms]]) -> dict[str, Trade]:
    profile = ProfileVersion(name=f"{a}-{b}", version=1, recorded_at=T0, participants=(a, b),
                             product="*", fields=fields)

    def in_force(trade: Trade) -> RulesInForce:
        return choose_in_force(trade, [profile], RulesInForce.exact(trade.product))

    book = MemoryBook(rules=in_force)
    clock = itertools.count()
    for participant, trade_id, terms in trades:
        at = T0 + timedelta(seconds=next(clock))
        trade = written(NewVersion(participant=participant, trade_id=trade_id, version=1,
                                   status="unmatched", reason="submitted", terms=terms,
                                   actor=participant), at, at)
        book.put(trade)
        await Matcher(book, participant).submitted(trade)
    return {trade_id: book.get((p, trade_id)) for p, trade_id, _ in trades}  # type: ignore[misc]


def test_both_books_decide_identically_under_random_profiles(db_url: str) -> None:
    """A sync test on purpose: hypothesis drives the examples, each with its own event
    loop and its own pair of participants in the one database."""
    url = to_asyncpg_dsn(db_url)
    counter = itertools.count()
    seen: set[str] = set()

    @settings(max_examples=25, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(PROFILES, st.integers(min_value=0, max_value=10_000))
    def example(fields: dict[str, Any], seed: int) -> None:
        n = next(counter)
        a, b = f"PA{n}", f"PB{n}"
        trades = flow(seed, a, b)
        in_memory = asyncio.run(_memory(a, b, fields, trades))
        in_postgres = asyncio.run(_postgres(url, a, b, fields, trades))
        for trade_id in in_memory:
            assert state(in_memory[trade_id]) == state(in_postgres[trade_id]), (
                fields, trade_id)
            seen.add(in_memory[trade_id].status)

    example()
    assert {"matched", "mismatched"} <= seen  # the examples exercised both outcomes

