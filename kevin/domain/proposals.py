"""Proposals: resolving a near-miss, or cancelling a match, by agreement between the two
participants — one proposes, the other accepts or rejects.

Pure values, no I/O. A proposal is append-only like a trade: every state change is a new
version. ``open`` is the only state that changes; a new version of either trade lapses
an open proposal (the database does it, whatever path wrote that version).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, StringConstraints

from kevin.domain.match_models import Comment
from kevin.domain.models import TradeId, UtcText, decimal_text
from kevin.domain.tolerances import TOLERANCE_FIELDS

ProposalKind = Literal["match", "cancel"]
ProposalState = Literal["open", "accepted", "rejected", "withdrawn", "lapsed"]
PROPOSAL_STATES: tuple[ProposalState, ...] = ("open", "accepted", "rejected", "withdrawn",
                                              "lapsed")
Decision = Literal["accept", "reject", "withdraw"]
DECIDED: dict[Decision, ProposalState] = {"accept": "accepted", "reject": "rejected",
                                          "withdraw": "withdrawn"}


class ProposalRequest(BaseModel):
    """``POST /v1/proposals``: propose to match (or cancel the match of) my trade with the
    counterparty's trade."""

    model_config = ConfigDict(extra="forbid")

    trade_id: TradeId
    kind: ProposalKind
    counterparty_trade_id: TradeId
    comment: Comment | None = None


class ProposalAnswer(BaseModel):
    """``POST /v1/proposals/{id}/accept|reject|withdraw``: an optional comment."""

    model_config = ConfigDict(extra="forbid")

    comment: Comment | None = None


class Difference(BaseModel):
    """A compared field on which the two trades differ: ``ours`` is the proposer's."""

    model_config = ConfigDict(frozen=True)

    field: Annotated[str, StringConstraints(max_length=32)]
    ours: str | None
    theirs: str | None


class Proposal(BaseModel):
    """One version of a proposal, as both participants (and the admin) see it."""

    model_config = ConfigDict(frozen=True)

    proposal_id: UUID
    version: int
    kind: ProposalKind
    state: ProposalState
    proposer: str
    trade_id: str
    trade_version: int
    counterparty: str
    counterparty_trade_id: str
    counterparty_trade_version: int
    differences: list[Difference]
    comment: str | None
    actor: str  # who made this version: the proposer, the counterparty, or "kevin" (lapsed)
    created_at: Annotated[AwareDatetime, UtcText]
    recorded_at: Annotated[AwareDatetime, UtcText]

    def involves(self, participant: str) -> bool:
        return participant in (self.proposer, self.counterparty)


class ProposalPage(BaseModel):
    proposals: list[Proposal]
    next_cursor: str | None


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def differences(ours: object, theirs: object) -> list[Difference]:
    """The compared fields (price, quantity, settlement date, location) on which two
    trades differ, ``ours`` first."""
    found = []
    for name in TOLERANCE_FIELDS:
        mine, other = getattr(ours, name), getattr(theirs, name)
        if mine != other:
            found.append(Difference(field=name, ours=_text(mine), theirs=_text(other)))
    return found


def pair_key(first: tuple[str, str], second: tuple[str, str]) -> str:
    """One spelling of a pair of trades (participant, trade_id), whichever proposes:
    participant names and trade ids never contain "/" or "|"."""
    low, high = sorted((first, second))
    return f"{low[0]}/{low[1]}|{high[0]}/{high[1]}"
