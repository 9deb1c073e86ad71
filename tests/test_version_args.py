"""kevin.store.trades.version_args builds a version's row by hand (a bulk write builds
tens of thousands): it must say what the models themselves would."""

from __future__ import annotations

import uuid

from kevin.domain.models import MatchRef, RulesRef, TradeTerms
from kevin.domain.versions import NewVersion
from kevin.store import queries as q
from kevin.store import trades


def test_a_matched_version_row_holds_every_column_as_the_models_dump_it() -> None:
    terms = TradeTerms.model_validate({
        "counterparty": "BANKB", "side": "buy", "product": "XAU", "quantity": "100",
        "price": "1000.5", "currency": "USD", "trade_date": "2026-11-20",
        "settlement_date": "2026-11-24", "location": "LDN", "attributes": {"desk": "fx"}})
    rules = RulesRef(kind="product", name="XAU", version=3)
    match = MatchRef(match_id=uuid.uuid4(), counterparty_trade_id="S-1",
                     counterparty_version=2, rules=rules)
    new = NewVersion(participant="BANKA", trade_id="B-1", version=2, status="matched",
                     reason="matched", terms=terms, actor="BANKA", match=match,
                     rules_version=3)
    cache: dict[int, object] = {}
    row = dict(zip((name for name, _ in q.VERSION_COLUMNS), trades.version_args(new, cache),
                   strict=True))
    assert row == {
        **terms.__dict__, "participant": "BANKA", "trade_id": "B-1", "version": 2,
        "status": "matched", "reason": "matched", "match_id": match.match_id,
        "match_counterparty_trade_id": "S-1", "match_counterparty_version": 2,
        "mismatches": [{"counterparty_trade_id": "S-1", "fields": [],
                        "rules": rules.model_dump()}],
        "rules_version": 3, "comment": None, "replay_id": None, "actor": "BANKA",
        "first_submitted_at": None}
    # The cache answers the next version of the same terms with the same column value.
    assert trades.version_args(new, cache) == trades.version_args(new)
