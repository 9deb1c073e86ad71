"""Request and response bodies of the matching endpoints: operator overrides and
alleged trades (the rules bodies live in kevin.domain.rules)."""

from __future__ import annotations

from datetime import date
from typing import Annotated
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from kevin.domain.models import (
    Amount,
    ParticipantName,
    Side,
    Trade,
    TradeId,
    UtcText,
)

Comment = Annotated[str, StringConstraints(max_length=2000)]


class Leg(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    participant: ParticipantName
    trade_id: TradeId


class ForceMatch(BaseModel):
    """``POST /v1/admin/matches``: match two live, opposite trades whatever their terms."""

    model_config = ConfigDict(extra="forbid")

    legs: Annotated[list[Leg], Field(min_length=2, max_length=2)]
    comment: Comment | None = None


class BreakMatch(BaseModel):
    """``DELETE /v1/admin/matches/{match_id}``: the reason, kept with both versions."""

    model_config = ConfigDict(extra="forbid")

    comment: Comment | None = None


class MatchLegs(BaseModel):
    """The two trades of a forced or broken match, each at its latest version."""

    match_id: UUID
    legs: list[Trade]


class AllegedTrade(BaseModel):
    """Another participant's trade naming you as counterparty, not matched: their
    trade_id, participant and economic terms — nothing else of theirs (docs/api.md: not their
    version, status, times or attributes)."""

    trade_id: str
    participant: str
    counterparty: str
    side: Side
    product: str
    quantity: Amount
    price: Amount
    currency: str
    trade_date: date
    settlement_date: date
    location: str | None
    # The trade's cut-off (kevin.domain.cutoffs), computed for the instant read.
    cutoff_at: Annotated[AwareDatetime, UtcText] | None = None
    overdue: bool = False

    @classmethod
    def of(cls, trade: Trade) -> AllegedTrade:
        return cls.model_validate(trade.model_dump(include=set(cls.model_fields)))


class AllegedPage(BaseModel):
    trades: list[AllegedTrade]
    next_cursor: str | None

