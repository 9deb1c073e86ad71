"""The feed's values: one update per trade version, one per participant of each
proposal version, and one per recipient of each overdue notice, as SSE events and JSON
pages carry them."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict

from kevin.domain.models import MatchRef, Reason, Status, Trade, UtcText
from kevin.domain.proposals import Proposal


class FeedUpdate(BaseModel):
    """A new version of a trade, at its place ``seq`` on the feed."""

    model_config = ConfigDict(frozen=True)

    seq: int
    event: Reason  # why the version exists: the version's `reason`
    trade_id: str
    participant: str
    version: int
    status: Status
    match: MatchRef | None
    trade: Trade
    recorded_at: Annotated[AwareDatetime, UtcText]

    @classmethod
    def of(cls, seq: int, trade: Trade) -> FeedUpdate:
        return cls(
            seq=seq, event=trade.reason, trade_id=trade.trade_id,
            participant=trade.participant, version=trade.version, status=trade.status,
            match=trade.match, trade=trade, recorded_at=trade.recorded_at,
        )

    def body(self) -> dict[str, Any]:
        """The JSON-ready body (decimals as strings, times in UTC)."""
        return self.model_dump(mode="python")


class ProposalUpdate(BaseModel):
    """A new version of a proposal, on the feed of each of its two participants (event
    ``proposal``): ``participant`` is whose feed it is on."""

    model_config = ConfigDict(frozen=True)

    seq: int
    event: Literal["proposal"] = "proposal"
    participant: str
    proposal_id: str
    version: int
    state: str
    proposal: Proposal
    recorded_at: Annotated[AwareDatetime, UtcText]

    @classmethod
    def of(cls, seq: int, participant: str, proposal: Proposal) -> ProposalUpdate:
        return cls(seq=seq, participant=participant, proposal_id=str(proposal.proposal_id),
                   version=proposal.version, state=proposal.state, proposal=proposal,
                   recorded_at=proposal.recorded_at)

    def body(self) -> dict[str, Any]:
        return self.model_dump(mode="python")


class OverdueNotice(BaseModel):
    """A trade whose cut-off passed while it was unmatched or mismatched (a chaser): one
    per trade and trade date, recorded once whatever the number of scanners."""

    model_config = ConfigDict(frozen=True)

    notice_id: int
    trade_participant: str  # whose trade it is
    trade_id: str
    version: int  # the trade's version that was open when the notice was recorded
    status: Literal["unmatched", "mismatched"]
    counterparty: str
    product: str
    trade_date: date
    cutoff_at: Annotated[AwareDatetime, UtcText]
    recorded_at: Annotated[AwareDatetime, UtcText]


class OverdueUpdate(OverdueNotice):
    """An overdue notice (event ``overdue``) on the feed of the trade's participant and on
    its counterparty's (for whom the trade is alleged): ``participant`` is whose feed it
    is on. Apply idempotently on ``notice_id``."""

    seq: int
    event: Literal["overdue"] = "overdue"
    participant: str

    @classmethod
    def of(cls, seq: int, participant: str, notice: OverdueNotice) -> OverdueUpdate:
        return cls(seq=seq, participant=participant, **notice.model_dump())

    def body(self) -> dict[str, Any]:
        return self.model_dump(mode="python")


AnyUpdate = FeedUpdate | ProposalUpdate | OverdueUpdate


class StubInfo(BaseModel):
    """Why a relayed update is a stub, and where its body is."""

    reason: Literal["too_large"]
    size: int  # bytes of the full update as JSON
    limit: int | None  # the largest message the stream and server take, when known
    fetch: str  # the path to read the body from Kevin


class RelayStub(BaseModel):
    """What ``kevin relay nats`` publishes in place of an update too large for the
    transport: the update's own fields without its body (``trade``, or ``proposal``),
    and ``stub``. Header ``Kevin-Stub: too_large``; ``Nats-Msg-Id`` and ``Kevin-Seq``
    as for the update itself."""

    model_config = ConfigDict(extra="allow")

    seq: int
    event: str
    participant: str
    version: int
    trade_id: str | None = None
    proposal_id: str | None = None
    notice_id: int | None = None
    recorded_at: Annotated[AwareDatetime, UtcText]
    stub: StubInfo


class FeedPage(BaseModel):
    """``GET /v1/feed`` as JSON: updates after ``after``; ``last_seq`` is where to resume
    (the last update's seq, or ``after`` itself when the page is empty)."""

    updates: list[FeedUpdate | ProposalUpdate | OverdueUpdate]
    last_seq: int
