"""kevin.domain.versions: the shortcuts a batch takes per line must give what the
general forms give."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

from kevin.domain.models import MatchRef, Mismatch, RulesRef, TradeTerms
from kevin.domain.versions import DecidedBy, NewVersion, next_version, written


def test_first_submitted_is_replace_with_the_first_submission_set() -> None:
    terms = TradeTerms.model_validate({
        "counterparty": "BANKB", "side": "buy", "product": "XAU", "quantity": "100",
        "price": "1000.5", "currency": "USD", "trade_date": "2026-11-20",
        "settlement_date": "2026-11-24"})
    rules = RulesRef(kind="product", name="XAU", version=3)
    # Every field set to something other than its default, so that a field the copy
    # forgot or swapped shows.
    new = NewVersion(
        participant="BANKA", trade_id="B-1", version=2, status="matched", reason="matched",
        terms=terms, actor="admin",
        match=MatchRef(match_id=uuid.uuid4(), counterparty_trade_id="S-1",
                       counterparty_version=2, rules=rules),
        mismatches=[Mismatch(counterparty_trade_id="S-2", fields=[])],
        rules_version=3, comment="why", replay_id=uuid.uuid4(),
        first_submitted_at=datetime(2026, 11, 1, tzinfo=UTC),
        decided_by=DecidedBy("product", "XAU", 3))
    assert all(getattr(new, f.name) != f.default for f in dataclasses.fields(new))
    at = datetime(2026, 11, 30, 12, tzinfo=UTC)
    copied = new.first_submitted(at)
    assert copied == dataclasses.replace(new, first_submitted_at=at)
    assert copied.first_submitted_at == at and new.first_submitted_at != at


def test_next_version_sets_each_field_it_is_given_by_name() -> None:
    """next_version builds its NewVersion positionally: each parameter must land in the
    field of its name, and the rest carry over from the trade or stay unset."""
    terms = TradeTerms.model_validate({
        "counterparty": "BANKB", "side": "buy", "product": "XAU", "quantity": "100",
        "price": "1000.5", "currency": "USD", "trade_date": "2026-11-20",
        "settlement_date": "2026-11-24"})
    first = datetime(2026, 11, 1, tzinfo=UTC)
    trade = written(NewVersion(participant="BANKA", trade_id="B-1", version=1,
                               status="unmatched", reason="submitted", terms=terms,
                               actor="BANKA"), first, first)
    given = {"status": "matched", "reason": "matched", "actor": "admin", "terms": terms,
             "match": MatchRef(match_id=uuid.uuid4(), counterparty_trade_id="S-1",
                               counterparty_version=2),
             "mismatches": [Mismatch(counterparty_trade_id="S-2", fields=[])],
             "rules_version": 3, "comment": "why", "replay_id": uuid.uuid4(),
             "decided_by": DecidedBy("product", "XAU", 3)}
    assert next_version(trade, **given) == NewVersion(
        participant="BANKA", trade_id="B-1", version=2, first_submitted_at=first, **given)
    # Unset: the trade itself as its terms, no match state.
    assert next_version(trade, status="cancelled", reason="cancelled", actor="BANKA") == \
        NewVersion(participant="BANKA", trade_id="B-1", version=2, status="cancelled",
                   reason="cancelled", terms=trade, actor="BANKA", first_submitted_at=first)
