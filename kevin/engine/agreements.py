"""Agreements between participants: matching profiles and proposals, one transaction
per operation.

A proposal's decision and what it does to the trades commit together: accepting a match
writes both legs ``matched`` (reason ``agreed``, the accepted differences kept with the
match); accepting a cancel writes both legs ``cancelled``. The match-key lock is taken
first, as every writer of these trades takes it, so the trades cannot move between the
check and the write; the proposal's own row lock (kevin.store.proposal_queries.DECIDE)
decides between racing deciders.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from kevin.domain.errors import (
    CannotPropose,
    Forbidden,
    NotFound,
    ProposalNotOpen,
)
from kevin.domain.matching import RESTING
from kevin.domain.models import AcceptedDifference, MatchRef, Trade
from kevin.domain.profiles import Profile, ProfileVersion
from kevin.domain.proposals import (
    DECIDED,
    Decision,
    Proposal,
    ProposalKind,
    differences,
)
from kevin.engine.matching import Matcher
from kevin.store import database
from kevin.store import matching as match_store
from kevin.store import profiles as profile_store
from kevin.store import proposals as proposal_store
from kevin.store import trades as trade_store
from kevin.store.book import PostgresBook
from kevin.store.matching import MatchKey

# The actor of versions Kevin writes on its own (a lapse): never a participant's name.
KEVIN_ACTOR = "kevin"


@dataclass(frozen=True)
class ProposalListing:
    proposals: list[Proposal]
    next_after: UUID | None


@dataclass(frozen=True)
class ProfilePage:
    profiles: list[ProfileVersion]
    next_after: str | None


class Agreements:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # --- profiles ----------------------------------------------------------------------

    async def put_profile(self, name: str, profile: Profile, actor: str) -> ProfileVersion:
        async with database.transaction(self.pool) as conn:
            return await profile_store.append_profile(conn, name, profile, actor)

    async def retire_profile(self, name: str, actor: str) -> ProfileVersion:
        async with database.transaction(self.pool) as conn:
            return await profile_store.retire_profile(conn, name, actor)

    async def get_profile(self, name: str, as_of: datetime | None = None) -> ProfileVersion:
        """The profile's version now (or at ``as_of``); NotFound when it did not exist
        then, or was retired."""
        async with database.connection(self.pool) as conn:
            if as_of is None:
                found = await profile_store.latest_profile(conn, name)
            else:
                found = await profile_store.profile_as_of(conn, name, as_of)
        suffix = f" as of {as_of.isoformat()}" if as_of else ""
        if found is None:
            raise NotFound(f"no profile {name}{suffix}", {"name": name})
        if found.retired:
            raise NotFound(f"profile {name} was retired{suffix}",
                           {"name": name, "retired_version": found.version,
                            "retired_at": found.model_dump(mode="json")["recorded_at"]})
        return found

    async def list_profiles(self, after: str, limit: int,
                            as_of: datetime | None = None) -> ProfilePage:
        async with database.connection(self.pool) as conn:
            found = await profile_store.live_profiles(conn, after, limit + 1, as_of)
        more = len(found) > limit
        found = found[:limit]
        return ProfilePage(found, found[-1].name if more else None)

    # --- proposals ---------------------------------------------------------------------

    async def propose(self, participant: str, trade_id: str, kind: ProposalKind,
                      counterparty_trade_id: str, comment: str | None) -> Proposal:
        """Open a proposal on my trade and the counterparty's (see the module)."""
        async with database.transaction(self.pool) as conn:
            ours = await trade_store.latest(conn, participant, trade_id)
            if ours is None:
                raise NotFound(f"no trade {trade_id}", {"trade_id": trade_id})
            theirs = await trade_store.latest(conn, ours.counterparty, counterparty_trade_id)
            if theirs is None:
                raise NotFound(f"{ours.counterparty} has no trade {counterparty_trade_id}",
                               {"counterparty_trade_id": counterparty_trade_id})
            await match_store.lock_match_keys(conn, {_key(ours), _key(theirs)})
            ours, theirs = await _both(conn, (participant, trade_id),
                                       (ours.counterparty, counterparty_trade_id))
            _check_proposable(kind, ours, theirs)
            found = differences(ours, theirs) if kind == "match" else []
            return await proposal_store.open_proposal(conn, kind, ours, theirs, found, comment)

    async def decide(self, participant: str | None, proposal_id: UUID, decision: Decision,
                     comment: str | None) -> Proposal:
        """Accept, reject (the counterparty) or withdraw (the proposer) an open proposal.
        ``participant`` None is the admin, who may read but not decide."""
        async with database.transaction(self.pool) as conn:
            current = await self._visible(conn, participant, proposal_id)
            if participant is None:
                raise Forbidden("only the two participants decide a proposal")
            if decision == "withdraw" and participant != current.proposer:
                raise Forbidden("only the proposer withdraws a proposal")
            if decision != "withdraw" and participant == current.proposer:
                raise Forbidden(f"only the counterparty may {decision} a proposal")
            if current.state != "open":
                raise ProposalNotOpen(f"the proposal is {current.state}",
                                      {"state": current.state, "version": current.version})
            ours = theirs = None
            if decision == "accept":
                ours, theirs = await _both(conn, *_refs(current))
                await match_store.lock_match_keys(conn, {_key(ours), _key(theirs)})
                # Under the locks: the trades as they stand now, and the proposal too (a
                # new version of either trade, committed meanwhile, has lapsed it).
                current = await self._visible(conn, participant, proposal_id)
                ours, theirs = await _both(conn, *_refs(current))
            decided = await proposal_store.decide(conn, current, DECIDED[decision], comment,
                                                  participant)
            if decided is None:
                latest = await proposal_store.latest(conn, proposal_id)
                state = latest.state if latest else "unknown"
                raise ProposalNotOpen(f"the proposal is {state}",
                                      {"state": state,
                                       "version": latest.version if latest else None})
            if ours is not None and theirs is not None:
                await _carry_out(conn, decided, ours, theirs, participant, comment)
            return decided

    async def get_proposal(self, participant: str | None, proposal_id: UUID) -> Proposal:
        async with database.connection(self.pool) as conn:
            return await self._visible(conn, participant, proposal_id)

    async def list_proposals(self, participant: str | None, state: str | None,
                             after: UUID | None, limit: int) -> ProposalListing:
        async with database.connection(self.pool) as conn:
            found = await proposal_store.page(conn, participant, state, after, limit + 1)
        more = len(found) > limit
        found = found[:limit]
        return ProposalListing(found, found[-1].proposal_id if more else None)

    @staticmethod
    async def _visible(conn: asyncpg.Connection, participant: str | None,
                       proposal_id: UUID) -> Proposal:
        """The latest version, if ``participant`` (None: the admin) may see it; a
        proposal between two others reads as unknown."""
        found = await proposal_store.latest(conn, proposal_id)
        if found is None or (participant is not None and not found.involves(participant)):
            raise NotFound(f"no proposal {proposal_id}")
        return found


def _key(trade: Trade) -> MatchKey:
    return MatchKey.of(trade.participant, trade.terms())


def _refs(proposal: Proposal) -> tuple[tuple[str, str], tuple[str, str]]:
    return ((proposal.proposer, proposal.trade_id),
            (proposal.counterparty, proposal.counterparty_trade_id))


async def _both(conn: asyncpg.Connection, ours: tuple[str, str],
                theirs: tuple[str, str]) -> tuple[Trade, Trade]:
    found = [await trade_store.latest(conn, *ref) for ref in (ours, theirs)]
    if found[0] is None or found[1] is None:  # trades are never deleted
        raise NotFound("no such trade")
    return found[0], found[1]


def _check_proposable(kind: ProposalKind, ours: Trade, theirs: Trade) -> None:
    """409 with the reason when the two trades cannot be the subject of this proposal."""
    legs = [{"participant": t.participant, "trade_id": t.trade_id, "version": t.version,
             "status": t.status} for t in (ours, theirs)]
    for trade in (ours, theirs):
        if trade.status == "cancelled":
            raise CannotPropose(f"trade {trade.trade_id} of {trade.participant} is cancelled",
                                {"reason": "not_live", "legs": legs})
    mirrored = (theirs.counterparty == ours.participant and theirs.side != ours.side
                and (theirs.product, theirs.currency, theirs.trade_date)
                == (ours.product, ours.currency, ours.trade_date))
    if not mirrored:
        raise CannotPropose("the trades are not mirrored: the other must name you, take the "
                            "opposite side, and agree on product, currency and trade date",
                            {"reason": "not_mirrored", "legs": legs})
    if kind == "match":
        for trade in (ours, theirs):
            if trade.status not in RESTING:
                raise CannotPropose(
                    f"trade {trade.trade_id} of {trade.participant} is already matched",
                    {"reason": "already_matched", "legs": legs})
        return
    together = (ours.match is not None and theirs.match is not None
                and ours.match.match_id == theirs.match.match_id)
    if not together:
        raise CannotPropose("a cancel proposal is for two trades matched with each other",
                            {"reason": "not_matched", "legs": legs})


async def _carry_out(conn: asyncpg.Connection, accepted: Proposal, ours: Trade, theirs: Trade,
                     actor: str, comment: str | None) -> None:
    """What an accepted proposal does to its two trades (still at the proposal's
    versions: a newer one would have lapsed it)."""
    if accepted.kind == "cancel":
        await trade_store.append_versions(conn, [
            trade_store.next_version(leg, actor=actor, status="cancelled", reason="cancelled",
                                     comment=comment) for leg in (ours, theirs)])
        return
    # The match_id is the proposal's id: the agreement and the match name each other.
    legs = []
    for leg, other in ((ours, theirs), (theirs, ours)):
        accepted_here = differences(leg, other)
        legs.append(trade_store.next_version(
            leg, actor=actor, status="matched", reason="agreed", comment=comment,
            match=MatchRef(match_id=accepted.proposal_id,
                           counterparty_trade_id=other.trade_id,
                           counterparty_version=other.version + 1,
                           accepted_differences=[
                               AcceptedDifference(field=d.field, ours=d.ours, theirs=d.theirs)
                               for d in accepted_here] or None)))
    await trade_store.append_versions(conn, legs)
    # Trades whose mismatch lists named either leg look again (as after any match).
    await Matcher(PostgresBook(conn), actor).settle(changed=[ours, theirs])
