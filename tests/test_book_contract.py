"""One suite of matching scenarios, run against every book the matcher can run over:
the PostgreSQL book (live submissions), the batch's book (PostgreSQL read into memory as
needed, written at the end) and the in-memory book (replays, what-if runs).
The same scenarios must end in the same states on each (docs/design.md, "Matching, written
once"); the randomised flow at the end runs on both books side by side and compares
every trade's final state."""

from __future__ import annotations

import itertools
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol, TypeVar

import asyncpg
import pytest

from kevin.domain.book import RulesInForce
from kevin.domain.matching import TradeRef
from kevin.domain.memory_book import MemoryBook
from kevin.domain.models import Trade, TradeSubmission, TradeTerms
from kevin.domain.rules import Rules
from kevin.domain.versions import NewVersion, written
from kevin.engine.batch import submit_batch
from kevin.engine.matching import Matcher
from kevin.store import database, participants
from kevin.store import matching as match_store
from kevin.store import trades as store
from kevin.store.book import PostgresBook
from kevin.store.matching import MatchKey

T = TypeVar("T")
Op = Callable[[Matcher], Awaitable[T]]
T0 = datetime(2026, 11, 20, 9, tzinfo=UTC)


def terms(participant: str, side: str, price: str, quantity: str = "100",
          **more: Any) -> TradeTerms:
    return TradeTerms.model_validate({
        "counterparty": "BANKB" if participant == "BANKA" else "BANKA", "side": side,
        "product": "XAU", "quantity": quantity, "price": price, "currency": "USD",
        "trade_date": "2026-11-20", "settlement_date": "2026-11-24", "location": "LDN",
        **more})


class Desk(Protocol):
    """A book with what a test needs around it: submit, run an operation, read back."""

    async def submit(self, participant: str, trade_id: str, terms: TradeTerms) -> Trade: ...
    async def run(self, operation: Op[T]) -> T: ...
    async def latest(self, participant: str, trade_id: str) -> Trade: ...
    async def set_rules(self, product: str, rules: Rules) -> None: ...


class PostgresDesk:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def submit(self, participant: str, trade_id: str, terms: TradeTerms) -> Trade:
        new = NewVersion(participant=participant, trade_id=trade_id, version=1,
                         status="unmatched", reason="submitted", terms=terms, actor=participant)
        async with database.transaction(self.pool) as conn:
            await match_store.lock_match_keys(conn, [MatchKey.of(participant, terms)])
            created = await store.insert_version(conn, new)
            assert created is not None
            book = PostgresBook(conn)
            book.remember(created)
            return await Matcher(book, participant).submitted(created)

    async def run(self, operation: Op[T]) -> T:
        async with database.transaction(self.pool) as conn:
            # Every key of the two participants: the scenarios stay within them.
            await match_store.lock_match_keys(conn, [MatchKey("XAU", "USD", ("BANKA", "BANKB"))])
            return await operation(Matcher(PostgresBook(conn), "OPS"))

    async def latest(self, participant: str, trade_id: str) -> Trade:
        async with database.connection(self.pool) as conn:
            found = await store.latest(conn, participant, trade_id)
        assert found is not None
        return found

    async def set_rules(self, product: str, rules: Rules) -> None:
        async with database.transaction(self.pool) as conn:
            await match_store.append_rules(conn, product, rules, "OPS")


class BatchDesk(PostgresDesk):
    """Submissions through the batch path (its book: kevin.store.batch_book), one line
    per batch; the other operations as live."""

    async def submit(self, participant: str, trade_id: str, terms: TradeTerms) -> Trade:
        line = TradeSubmission.model_validate({**terms.model_dump(), "trade_id": trade_id})
        (outcome,) = await submit_batch(self.pool, participant, [line])
        assert outcome.result == "created" and outcome.trade is not None
        return outcome.trade


class MemoryDesk:
    def __init__(self) -> None:
        self.rules: dict[str, tuple[int, Rules]] = {}
        self.book = MemoryBook(rules=self._in_force)
        self.clock = itertools.count()

    def _in_force(self, trade: Trade) -> RulesInForce:
        found = self.rules.get(trade.product)
        if found is None:
            return RulesInForce.exact(trade.product)
        return RulesInForce.product_rules(trade.product, *found)

    async def submit(self, participant: str, trade_id: str, terms: TradeTerms) -> Trade:
        at = T0 + timedelta(seconds=next(self.clock))
        trade = written(NewVersion(participant=participant, trade_id=trade_id, version=1,
                                   status="unmatched", reason="submitted", terms=terms,
                                   actor=participant), at, at)
        self.book.put(trade)
        return await Matcher(self.book, participant).submitted(trade)

    async def run(self, operation: Op[T]) -> T:
        return await operation(Matcher(self.book, "OPS"))

    async def latest(self, participant: str, trade_id: str) -> Trade:
        found = self.book.get((participant, trade_id))
        assert found is not None
        return found

    async def set_rules(self, product: str, rules: Rules) -> None:
        version = self.rules.get(product, (0, rules))[0] + 1
        self.rules[product] = (version, rules)


@pytest.fixture
async def postgres_desk(pool: asyncpg.Pool) -> PostgresDesk:
    async with database.transaction(pool) as conn:
        for name in ("BANKA", "BANKB"):
            await participants.create(conn, name)
    return PostgresDesk(pool)


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.slow),
                        pytest.param("batch", marks=pytest.mark.slow), "memory"])
def desk(request: pytest.FixtureRequest) -> Desk:
    """Each scenario once per book. The in-memory book needs no database, so its runs
    are part of the quick loop (`pytest -m "not slow"`). A plain fixture: it asks for the
    database's only when needed, which an async fixture could not do from its loop."""
    if request.param == "memory":
        return MemoryDesk()
    postgres_desk: PostgresDesk = request.getfixturevalue("postgres_desk")
    return BatchDesk(postgres_desk.pool) if request.param == "batch" else postgres_desk


def state(trade: Trade) -> tuple[Any, ...]:
    """What matching decided about a trade (match ids and instants aside)."""
    return (trade.status, trade.version, trade.reason,
            trade.match.counterparty_trade_id if trade.match else None,
            trade.match.counterparty_version if trade.match else None,
            [(m.counterparty_trade_id, [(f.field, f.ours, f.theirs, f.tolerance)
                                        for f in m.fields]) for m in trade.mismatches],
            trade.rules_version)


# --- the scenarios ---------------------------------------------------------------------


async def test_a_trade_with_no_counterpart_rests(desk: Desk) -> None:
    sell = await desk.submit("BANKA", "A-1", terms("BANKA", "sell", "1000"))
    assert (sell.status, sell.version) == ("unmatched", 1)


async def test_opposite_sides_with_equal_terms_match_and_name_each_other(desk: Desk) -> None:
    await desk.submit("BANKA", "A-1", terms("BANKA", "sell", "1000"))
    buy = await desk.submit("BANKB", "B-1", terms("BANKB", "buy", "1000"))
    sell = await desk.latest("BANKA", "A-1")
    assert buy.status == sell.status == "matched"
    assert buy.match and sell.match and buy.match.match_id == sell.match.match_id
    assert (buy.match.counterparty_trade_id, buy.match.counterparty_version) == ("A-1", 2)
    assert (sell.match.counterparty_trade_id, sell.match.counterparty_version) == ("B-1", 2)


async def test_the_best_candidate_wins_by_invariant_7(desk: Desk) -> None:
    await desk.set_rules("XAU", Rules.model_validate(
        {"price_tolerance": {"abs": "1"}, "quantity_tolerance": {"abs": "5"}}))
    await desk.submit("BANKA", "A-far", terms("BANKA", "sell", "1000.90"))
    await desk.submit("BANKA", "A-qty", terms("BANKA", "sell", "1000.10", "103"))
    await desk.submit("BANKA", "A-first", terms("BANKA", "sell", "999.90"))
    await desk.submit("BANKA", "A-later", terms("BANKA", "sell", "1000.10"))
    buy = await desk.submit("BANKB", "B-1", terms("BANKB", "buy", "1000"))
    assert buy.match is not None and buy.match.counterparty_trade_id == "A-first"
    assert buy.rules_version == 1


async def test_a_mismatch_names_the_nearest_three_and_they_name_it_back(desk: Desk) -> None:
    for i, price in enumerate(["990", "1003", "1001", "998", "1010"]):
        await desk.submit("BANKA", f"A-{i}", terms("BANKA", "sell", price))
    buy = await desk.submit("BANKB", "B-1", terms("BANKB", "buy", "1000"))
    assert buy.status == "mismatched"
    assert [m.counterparty_trade_id for m in buy.mismatches] == ["A-2", "A-3", "A-1"]
    for trade_id in ("A-2", "A-3", "A-1"):
        sell = await desk.latest("BANKA", trade_id)
        assert sell.status == "mismatched"
        assert [m.counterparty_trade_id for m in sell.mismatches] == ["B-1"]
    assert (await desk.latest("BANKA", "A-0")).status == "unmatched"


async def test_a_trade_named_in_a_list_that_matches_elsewhere_refreshes_it(desk: Desk) -> None:
    await desk.submit("BANKA", "A-1", terms("BANKA", "sell", "1000"))
    await desk.submit("BANKB", "B-1", terms("BANKB", "buy", "1001"))
    assert (await desk.latest("BANKA", "A-1")).status == "mismatched"
    await desk.submit("BANKB", "B-2", terms("BANKB", "buy", "1000"))
    assert (await desk.latest("BANKA", "A-1")).status == "matched"
    b1 = await desk.latest("BANKB", "B-1")
    assert (b1.status, b1.mismatches, b1.reason) == ("unmatched", [], "unmatched")


async def test_amend_cancel_force_and_break(desk: Desk) -> None:
    await desk.submit("BANKA", "A-1", terms("BANKA", "sell", "1000"))
    b1 = await desk.submit("BANKB", "B-1", terms("BANKB", "buy", "1001"))
    assert b1.status == "mismatched"
    # Amended onto the sell's price: they match.
    amended = await desk.run(lambda m: m.amend(b1, terms("BANKB", "buy", "1000")))
    assert amended.status == "matched"
    # Broken: both rest and never match each other again, even re-evaluated.
    a1 = await desk.latest("BANKA", "A-1")
    legs = [a1, amended]
    released = await desk.run(lambda m: m.break_match(legs, "wrong"))
    assert [t.status for t in released] == ["unmatched", "unmatched"]
    await desk.submit("BANKA", "A-2", terms("BANKA", "sell", "1000"))
    assert (await desk.latest("BANKB", "B-1")).match.counterparty_trade_id == "A-2"  # type: ignore[union-attr]
    # Cancelled: its counterparty goes back and meets the one left (broken: it rests).
    a2 = await desk.latest("BANKA", "A-2")
    cancelled = await desk.run(lambda m: m.cancel(a2))
    assert cancelled.status == "cancelled"
    assert (await desk.latest("BANKB", "B-1")).status == "unmatched"
    # Forced whatever the terms.
    a1, b1 = await desk.latest("BANKA", "A-1"), await desk.latest("BANKB", "B-1")
    first, second = await desk.run(lambda m: m.force(a1, b1, "agreed by phone"))
    assert first.status == second.status == "matched" and first.reason == "forced"


# --- both books side by side ---------------------------------------------------------


async def _random_flow(desk: Desk, seed: int) -> list[TradeRef]:
    rng = random.Random(seed)
    await desk.set_rules("XAU", Rules.model_validate(
        {"price_tolerance": {"abs": "0.30"}, "quantity_tolerance": {"abs": "1"}}))
    made: list[TradeRef] = []
    for i in range(60):
        roll = rng.random()
        live = [r for r in made]
        if roll < 0.8 or not live:
            participant = rng.choice(["BANKA", "BANKB"])
            side = "sell" if participant == "BANKA" else "buy"
            price = str(Decimal(1000) + Decimal(rng.randrange(0, 300)) / 100)
            trade_terms = terms(participant, side, price, rng.choice(["100", "101", "103"]),
                                settlement_date=rng.choice(["2026-11-24", "2026-11-25"]))
            await desk.submit(participant, f"{participant[-1]}-{i}", trade_terms)
            made.append((participant, f"{participant[-1]}-{i}"))
            continue
        current = await desk.latest(*rng.choice(live))
        if current.status == "cancelled":
            continue
        if roll < 0.9:
            new_price = str(current.price + Decimal(rng.randrange(-50, 50)) / 100)
            new_terms = current.terms().model_copy(update={"price": Decimal(new_price)})
            await desk.run(lambda m, c=current, t=new_terms: m.amend(c, t))
        else:
            await desk.run(lambda m, c=current: m.cancel(c))
    return made


@pytest.mark.parametrize(("seed", "book"), [(1, "postgres"), (2, "postgres"), (3, "postgres"),
                                            (1, "batch"), (2, "batch")])
async def test_a_random_flow_ends_the_same_on_every_book(postgres_desk: PostgresDesk,
                                                         seed: int, book: str) -> None:
    memory = MemoryDesk()
    stored = postgres_desk if book == "postgres" else BatchDesk(postgres_desk.pool)
    made = await _random_flow(memory, seed)
    assert made == await _random_flow(stored, seed)
    statuses = set()
    for trade_ref in made:
        ours, theirs = await memory.latest(*trade_ref), await stored.latest(*trade_ref)
        assert state(ours) == state(theirs), trade_ref
        statuses.add(ours.status)
    assert {"matched", "mismatched"} <= statuses  # the flow exercised what it should
