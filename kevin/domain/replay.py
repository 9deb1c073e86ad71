"""Replays, the pure part: what a replay is asked, what it answers, and how a stored
history turns into the starting book and the events to re-run.

A replay re-runs matching from an instant ``since`` under the given rules. Its inputs are
the book as it stood at ``since`` and what people did afterwards — submissions, amends
and cancels by participants, force and break by operators, in the order they happened.
Every other version (matched, mismatched, unmatched, replayed) was an *outcome* of
matching; the replay works those out afresh. No I/O here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, NamedTuple, Protocol
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from kevin.domain.matching import TradeRef, ref
from kevin.domain.models import Instant, Mismatch, Status, Trade, TradeTerms, UtcText, trusted
from kevin.domain.profiles import Profile, ProfileName, ProfileVersion
from kevin.domain.rules import Rules

Product = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._/-]{1,32}$")]

# Versions that are someone's act; everything else is matching's outcome.
PARTICIPANT_REASONS = frozenset({"submitted", "amended", "cancelled"})


class ReplayRequest(BaseModel):
    """``POST /v1/replays``. ``rules`` names the products to replay and the rules to apply
    to each from ``since`` on; with no rules, every product with activity since then is
    replayed under the stored rules in force at each moment."""

    model_config = ConfigDict(extra="forbid")

    since: Instant
    rules: dict[Product, Rules] = Field(default_factory=dict)
    # Matching profiles to replay under, by name: for each pair they name, they replace
    # the pair's stored profiles (precedence as live: pair + product, pair + *, rules).
    profiles: dict[ProfileName, Profile] = Field(default_factory=dict)
    apply: bool = Field(default=False, strict=True)  # lax would take 0 and "no"


class ReplayMatch(BaseModel):
    """Whom a trade is matched with. ``match_id`` and ``counterparty_version`` are known
    once a change is written (applied replays) or for the state before."""

    model_config = ConfigDict(frozen=True)

    counterparty_trade_id: str
    match_id: UUID | None = None
    counterparty_version: int | None = None


class MatchState(BaseModel):
    """A trade's matching state: the part of a version a replay can change."""

    model_config = ConfigDict(frozen=True)

    status: Status
    version: int | None = None  # the stored version; None for a not yet written outcome
    match: ReplayMatch | None = None
    mismatches: list[Mismatch] = Field(default_factory=list)

    @classmethod
    def of(cls, trade: Trade, *, stored: bool = True) -> MatchState:
        # The values of a Trade, valid already: not validated again (trusted).
        match = None
        if trade.match is not None:
            match = trusted(ReplayMatch, {
                "counterparty_trade_id": trade.match.counterparty_trade_id,
                "match_id": trade.match.match_id if stored else None,
                "counterparty_version": (trade.match.counterparty_version
                                         if stored else None)})
        return trusted(cls, {"status": trade.status,
                             "version": trade.version if stored else None,
                             "match": match, "mismatches": list(trade.mismatches)})


# What a version says about matching: its status, whom it is matched with, and its
# mismatch list without what each was decided under (a replay's own rules name themselves
# differently from the stored ones they may equal), each field as (field, ours, theirs,
# tolerance). Match ids and version numbers aside.
Outcome = tuple[str, str | None, list[tuple[str, list[tuple[Any, ...]]]]]


def outcome(trade: Trade) -> Outcome:
    return (trade.status,
            trade.match.counterparty_trade_id if trade.match is not None else None,
            [(m.counterparty_trade_id,
              [(f.field, f.ours, f.theirs, f.tolerance) for f in m.fields])
             for m in trade.mismatches])


def same_outcome(a: Trade, b: Trade) -> bool:
    """Whether two versions of one trade say the same about matching."""
    return outcome(a) == outcome(b)


class ReplayChange(BaseModel):
    participant: str
    trade_id: str
    before: MatchState
    after: MatchState


class ReplayResult(BaseModel):
    replay_id: UUID
    since: Annotated[AwareDatetime, UtcText]
    applied: bool
    products: list[str]
    changes: list[ReplayChange]


class ReplayRecord(BaseModel):
    """A row of the replays table: every replay, dry run (``applied`` false) or applied,
    which rules and profiles it was given, who, when."""

    replay_id: UUID
    since: Annotated[AwareDatetime, UtcText]
    rules: dict[str, Any]
    profiles: dict[str, Any]
    actor: str
    applied: bool
    recorded_at: Annotated[AwareDatetime, UtcText]


# Per product, its stored rules versions oldest first: (recorded_at, version, rules).
RulesTimeline = dict[str, list[tuple[datetime, int, Rules]]]


def profiles_at(history: Sequence[ProfileVersion], instant: datetime
                ) -> list[ProfileVersion]:
    """The profiles live at ``instant``: per name, its last version recorded by then,
    unless that version retired it. ``history`` oldest first."""
    last: dict[str, ProfileVersion] = {}
    for version in history:
        if version.recorded_at > instant:
            continue
        last[version.name] = version
    return [v for v in last.values() if not v.retired]


def rules_at(timeline: RulesTimeline, product: str, instant: datetime
             ) -> tuple[int | None, Rules] | None:
    """The rules version in force for ``product`` at ``instant`` (None: no rules yet)."""
    found = None
    for recorded_at, version, rules in timeline.get(product, ()):
        if recorded_at > instant:
            break
        found = (version, rules)
    return found


# --- from stored history to a starting book and events --------------------------------


class VersionSource(Protocol):
    """How a store builds what a StoredVersion's row holds (``read``, ``outcome``)."""

    def version(self, row: Any) -> Trade: ...

    def outcome(self, row: Any) -> Outcome: ...

    def standing(self, row: Any) -> tuple[str, str | None, bool]: ...


class StoredVersion(NamedTuple):
    """A version as stored, with its writing transaction (from its feed row) and when
    that transaction wrote its first version: the instant it belongs to as a whole.
    Instants in microseconds since the Unix epoch (``microseconds``): every version's
    two are compared, few versions' are ever needed as datetimes. ``read`` builds the
    version as a Trade: a replay needs few versions whole (each trade's latest, the one
    it had at ``since``, the participants' and operators' acts), matching's other
    outcomes only for their place in time, so most are never built."""

    trade_ref: TradeRef
    version: int
    reason: str
    recorded_us: int
    txid: int
    tx_started_us: int
    row: Any  # the stored row, built on demand by ``source``
    source: VersionSource

    def read(self) -> Trade:
        return self.source.version(self.row)

    def outcome(self) -> Outcome:
        """The version's Outcome read straight from what is stored, without building it:
        a replay compares every trade's latest version with its replayed one, and builds
        only those that differ."""
        return self.source.outcome(self.row)

    def standing(self) -> tuple[str, str | None, bool]:
        """The first two parts of its Outcome (status, matched partner's trade_id), and
        whether its mismatch list has entries: what decides most comparisons."""
        return self.source.standing(self.row)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def microseconds(instant: datetime) -> int:
    """An aware instant as microseconds since the Unix epoch (exact)."""
    return (instant - _EPOCH) // _MICROSECOND


def instant(micros: int) -> datetime:
    """``microseconds``' inverse, in UTC."""
    seconds, rest = divmod(micros, 1_000_000)
    return _EPOCH + timedelta(0, seconds, rest)


@dataclass(frozen=True)
class Submitted:
    at: datetime
    trade: Trade  # version 1, as submitted


@dataclass(frozen=True)
class Amended:
    at: datetime
    trade: TradeRef
    terms: TradeTerms


@dataclass(frozen=True)
class Cancelled:
    at: datetime
    trade: TradeRef


@dataclass(frozen=True)
class Forced:
    at: datetime
    legs: tuple[TradeRef, TradeRef]
    comment: str | None


@dataclass(frozen=True)
class Broken:
    at: datetime
    legs: tuple[TradeRef, TradeRef]
    comment: str | None


Event = Submitted | Amended | Cancelled | Forced | Broken


@dataclass
class History:
    """The starting book (each trade as it stood at ``since``), the events after it in
    the order they happened, each trade's latest version as stored (``built``: those
    already built for the book or an event) and the pairs broken by ``since``."""

    book: dict[TradeRef, Trade] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    latest: dict[TradeRef, StoredVersion] = field(default_factory=dict)
    built: dict[TradeRef, Trade] = field(default_factory=dict)
    broken_before: set[frozenset[TradeRef]] = field(default_factory=set)

    def latest_trade(self, trade_ref: TradeRef) -> Trade:
        found = self.built.get(trade_ref)
        return found if found is not None else self.latest[trade_ref].read()

    def latest_trades(self) -> list[Trade]:
        return [self.latest_trade(trade_ref) for trade_ref in self.latest]


# The versions that are someone's act, read whole (cancelled needs only its instant).
_ACTS = frozenset({"submitted", "amended", "forced", "broken"})


def _version(stored: StoredVersion) -> int:
    return stored.version


def _written_first(leg: Trade) -> tuple[datetime, str, str]:
    """The order of an operator act's two legs: the leg written first, then by trade
    (two legs written at one instant), whatever order the history was read in."""
    return leg.recorded_at, leg.participant, leg.trade_id


def split_history(
    versions: Iterable[StoredVersion], since: datetime,
    broken_pairs: Iterable[tuple[TradeRef, TradeRef]] = (),
) -> History:
    """Cut the stored history at ``since``. ``versions`` may come in any order.

    The cut is by transaction, not by version: a transaction that began at or before
    ``since`` belongs wholly to the starting book, one that began after it wholly to the
    replay. So an instant between a submission and the match it caused (same transaction)
    never leaves a half-settled trade in the book.
    """
    since_us = microseconds(since)
    by_trade: dict[TradeRef, list[StoredVersion]] = defaultdict(list)
    for stored in versions:
        by_trade[stored.trade_ref].append(stored)
    history = History()
    # The events in the order they happened (instant, then trade, then as stored), each
    # with its sort key: (at in microseconds, trade_ref of its first trade, count, event).
    keyed: list[tuple[int, TradeRef, int, Event]] = []
    forced: dict[UUID, list[Trade]] = defaultdict(list)
    broken: dict[int, list[Trade]] = defaultdict(list)
    for trade_ref, stored_versions in by_trade.items():
        if len(stored_versions) > 1:
            stored_versions.sort(key=_version)
        last = stored_versions[-1]
        last_trade = None  # the last version, once built
        at_since = None  # the last version whose transaction began by ``since``
        for stored in stored_versions:
            if stored.tx_started_us <= since_us:
                at_since = stored
                continue
            reason = stored.reason
            if reason == "cancelled":
                keyed.append((stored.recorded_us, trade_ref, len(keyed),
                              Cancelled(instant(stored.recorded_us), trade_ref)))
            elif reason in _ACTS:
                trade = stored.read()
                if stored is last:
                    last_trade = trade
                if reason == "submitted":
                    keyed.append((stored.recorded_us, trade_ref, len(keyed),
                                  Submitted(trade.recorded_at, trade)))
                elif reason == "amended":
                    keyed.append((stored.recorded_us, trade_ref, len(keyed),
                                  Amended(trade.recorded_at, trade_ref, trade.terms())))
                elif reason == "forced" and trade.match is not None:
                    forced[trade.match.match_id].append(trade)
                elif reason == "broken":
                    broken[stored.txid].append(trade)
        if at_since is last:
            history.book[trade_ref] = last_trade = last.read()
        elif at_since is not None:
            history.book[trade_ref] = at_since.read()
        history.latest[trade_ref] = last
        if last_trade is not None:
            history.built[trade_ref] = last_trade
    for legs in forced.values():
        if len(legs) == 2:
            legs.sort(key=_written_first)
            keyed.append((microseconds(legs[0].recorded_at), ref(legs[0]), len(keyed), Forced(
                legs[0].recorded_at, (ref(legs[0]), ref(legs[1])), legs[0].comment)))
    broken_after = set()
    for legs in broken.values():
        if len(legs) == 2:
            legs.sort(key=_written_first)
            pair = (ref(legs[0]), ref(legs[1]))
            broken_after.add(frozenset(pair))
            keyed.append((microseconds(legs[0].recorded_at), pair[0], len(keyed),
                          Broken(legs[0].recorded_at, pair, legs[0].comment)))
    history.broken_before = {frozenset(pair) for pair in broken_pairs} - broken_after
    keyed.sort()
    history.events = [item[3] for item in keyed]
    return history


def changes(history: History, after: Mapping[TradeRef, Trade]) -> list[tuple[Trade, Trade]]:
    """(current, replayed) for every trade whose matching state the replay changes, in
    (participant, trade_id) order. A current version is built only if it differs."""
    differing = []
    latest, built = history.latest, history.built
    for trade_ref, replayed in after.items():
        stored = latest.get(trade_ref)
        if stored is None:
            continue
        current = built.get(trade_ref)
        was: tuple[str, str | None, bool]
        # The outcomes compared in the order they usually differ or agree: status, then
        # partner, and the mismatch lists (built) only when one of them has entries.
        if current is not None:
            match = current.match
            was = (current.status, match.counterparty_trade_id if match is not None else None,
                   bool(current.mismatches))
        else:
            was = stored.standing()
        match = replayed.match
        if (was[0] != replayed.status
                or was[1] != (match.counterparty_trade_id if match is not None else None)
                or ((was[2] or replayed.mismatches)
                    and (outcome(current) if current is not None else stored.outcome())
                    != outcome(replayed))):
            differing.append((trade_ref, current, stored, replayed))
    # Sorted once found: a few trades change, and every trade's ref sorted cost more.
    differing.sort(key=_first)
    return [(current if current is not None else stored.read(), replayed)
            for _, current, stored, replayed in differing]


def _first(item: tuple[TradeRef, Any, Any, Any]) -> TradeRef:
    return item[0]
