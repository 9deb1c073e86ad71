"""A trade that arrives (MemoryBook.arrive: a batch's line, a replay's submission) is
placed among the resting trades when the book is next asked — also when its writer has
meanwhile replaced it by the same version as recorded (a batch's write-behind gives
each version the recorded_at the database chose)."""

from __future__ import annotations

from datetime import UTC, datetime

from kevin.domain.memory_book import MemoryBook
from kevin.domain.models import Trade, trusted
from kevin.domain.rules import Rules


def _trade(participant: str, counterparty: str, side: str, trade_id: str) -> Trade:
    return Trade.model_validate({
        "trade_id": trade_id, "participant": participant, "counterparty": counterparty,
        "side": side, "product": "XAU", "quantity": "100", "price": "1000", "currency": "USD",
        "trade_date": "2026-11-20", "settlement_date": "2026-11-24", "version": 1,
        "status": "unmatched", "reason": "submitted",
        "recorded_at": datetime(2026, 11, 20, tzinfo=UTC),
        "first_submitted_at": datetime(2026, 11, 20, tzinfo=UTC)})


def test_an_arrived_trade_replaced_by_the_same_version_is_still_placed() -> None:
    book = MemoryBook()
    sell = _trade("BANKA", "BANKB", "sell", "S-1")
    book.arrive(sell)
    recorded = trusted(Trade, {**sell.__dict__, "recorded_at": datetime.now(UTC)})
    book.trades[("BANKA", "S-1")] = recorded  # as BatchBook._written does
    buy = _trade("BANKB", "BANKA", "buy", "B-1")
    book.arrive(buy)
    assert [c.trade_id for c in book.counterparts(buy, Rules())] == ["S-1"]
    assert book.counterparts(buy, Rules())[0] is recorded


def test_an_arrived_trade_replaced_by_its_next_version_is_not_placed_twice() -> None:
    book = MemoryBook()
    sell = _trade("BANKA", "BANKB", "sell", "S-1")
    book.arrive(sell)
    cancelled = trusted(Trade, {**sell.__dict__, "version": 2, "status": "cancelled"})
    book.put(cancelled)
    buy = _trade("BANKB", "BANKA", "buy", "B-1")
    assert list(book.counterparts(buy, Rules())) == []
