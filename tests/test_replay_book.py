"""The replay's in-memory book hands ``decide`` a few candidates instead of every resting
counterpart, as the live candidate query does: the decision must be the same."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from kevin.domain.matching import decide
from kevin.domain.memory_book import MemoryBook
from kevin.domain.models import Trade
from kevin.domain.rules import Rules

T0 = datetime(2026, 11, 20, tzinfo=UTC)


def _trade(rng: random.Random, i: int, participant: str, side: str) -> Trade:
    counterparty = "BANKB" if participant == "BANKA" else "BANKA"
    return Trade.model_validate({
        "trade_id": f"{participant[-1]}-{i}", "participant": participant, "version": 1,
        "status": rng.choice(["unmatched", "mismatched", "unmatched", "cancelled"]),
        "reason": "submitted", "counterparty": counterparty, "side": side,
        "product": "XAU", "currency": rng.choice(["USD", "USD", "USD", "EUR"]),
        "quantity": str(rng.choice([100, 100, 101, 105])),
        "price": str(Decimal(1000) + Decimal(rng.randrange(-400, 400)) / 100),
        "trade_date": date(2026, 11, rng.choice([19, 20, 20, 20])),
        "settlement_date": date(2026, 11, rng.choice([23, 24, 25])),
        "location": rng.choice(["LDN", "NYC", None]),
        "recorded_at": T0, "first_submitted_at": T0 + timedelta(seconds=rng.randrange(60)),
    })


RULES = [
    Rules(),
    Rules.model_validate({"price_tolerance": {"abs": "0.50"}}),
    Rules.model_validate({"price_tolerance": {"abs": "2"}, "quantity_tolerance": {"abs": "1"},
                          "settlement_date_window_days": 1, "location": "ignore"}),
    Rules.model_validate({"price_tolerance": {"bps": "5"}, "location": "ignore"}),
    Rules.model_validate({"price_tolerance": {"bps": "20000"}}),
]


@pytest.mark.parametrize("seed", range(12))
def test_the_books_candidates_decide_as_all_counterparts_would(seed):
    rng = random.Random(seed)
    trades = []
    for i in range(rng.choice([5, 40, 300])):
        participant = rng.choice(["BANKA", "BANKB"])
        side = "sell" if participant == "BANKA" else "buy"
        trades.append(_trade(rng, i, participant, side))
    broken = {frozenset(((t.participant, t.trade_id), (u.participant, u.trade_id)))
              for t, u in zip(trades, reversed(trades), strict=True) if rng.random() < 0.05}
    book = MemoryBook(trades, broken=broken)

    def eligible_for(trade: Trade):
        return lambda c: (c.trade_date == trade.trade_date and frozenset(
            ((c.participant, c.trade_id), (trade.participant, trade.trade_id))) not in broken)

    for trade in rng.sample(trades, min(60, len(trades))):
        for rules in RULES:
            everyone = [c for c in trades if eligible_for(trade)(c)
                        and c.status in ("unmatched", "mismatched")]
            few = book.counterparts(trade, rules)
            assert len(few) <= len(everyone)
            assert decide(trade, few, rules) == decide(trade, everyone, rules), (seed, rules)


async def test_a_long_replay_is_not_one_runaway_transaction():
    """Live matching caps evaluations per transaction (a safety net); a replay of more
    events than that cap is many transactions' worth, not one."""
    from kevin.domain.replay import History, Submitted
    from kevin.engine.matching import MAX_EVALUATIONS
    from kevin.engine.replay import simulate

    rng = random.Random(1)
    events = []
    for i in range(MAX_EVALUATIONS + 10):
        trade = _trade(rng, i, "BANKA", "sell").model_copy(
            update={"status": "unmatched", "recorded_at": T0 + timedelta(microseconds=i)})
        events.append(Submitted(trade.recorded_at, trade))
    replayed = await simulate(History(events=events), {"XAU": Rules()}, {})
    assert len(replayed) == MAX_EVALUATIONS + 10
    assert {t.status for t in replayed.values()} == {"unmatched"}


@pytest.mark.parametrize("seed", range(4))
def test_the_verdicts_the_walk_hands_on_are_decides_own(seed):
    """The book's walk tests each candidate it takes and hands its verdicts to ``decide``,
    which takes them as they are: they must be what ``decide`` would find itself. So
    must the candidates be distinct counterparts of the trade, which ``decide`` does not
    check again either."""
    from kevin.domain.matching import is_counterpart, out_of_tolerance, ref

    rng = random.Random(seed)
    trades = [_trade(rng, i, participant, "sell" if participant == "BANKA" else "buy")
              for i in range(200) for participant in [rng.choice(["BANKA", "BANKB"])]]
    book = MemoryBook(trades)
    handed = 0
    for trade in rng.sample(trades, 60):
        for rules in RULES:
            few = book.counterparts(trade, rules)
            assert set(few.failing) == {ref(c) for c in few}
            assert len(set(few.failing)) == len(few)
            assert all(is_counterpart(trade, c) for c in few)
            for candidate in few:
                assert few.failing[ref(candidate)] == out_of_tolerance(trade, candidate, rules)
                handed += 1
            assert decide(trade, few, rules) == decide(trade, list(few), rules)
    assert handed > 0


@pytest.mark.parametrize("seed", range(4))
async def test_a_trade_placed_on_arrival_or_when_asked_replays_the_same(seed, monkeypatch):
    """A replay's submission is placed among the resting trades only when the book is
    next asked (``MemoryBook.arrive``); placed at once (``put``), the replay must end the
    same, every version alike."""
    from kevin.domain.replay import History, Submitted
    from kevin.engine.replay import simulate

    rng = random.Random(seed)
    events = []
    for i in range(400):
        participant = rng.choice(["BANKA", "BANKB"])
        trade = _trade(rng, i, participant, "sell" if participant == "BANKA" else "buy")
        trade = trade.model_copy(update={"status": "unmatched",
                                          "recorded_at": T0 + timedelta(milliseconds=i)})
        events.append(Submitted(trade.recorded_at, trade))
    rules = {"XAU": rng.choice(RULES[1:])}
    deferred = await simulate(History(events=events), rules, {})
    monkeypatch.setattr(MemoryBook, "arrive", MemoryBook.put)
    at_once = await simulate(History(events=events), rules, {})
    assert _outcomes(deferred) == _outcomes(at_once)
    assert {t.status for t in deferred.values()} >= {"matched", "mismatched"}


def _outcomes(replayed):
    """Every trade's replayed version but its match's id (a new one per run)."""
    return {r: t.model_copy(update={"match": t.match and t.match.model_copy(
        update={"match_id": None})}) for r, t in replayed.items()}
