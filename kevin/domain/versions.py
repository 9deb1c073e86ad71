"""A version about to be written: what matching decides and every book appends.

Pure values. How a version becomes a row (column order, JSON) is the store's business
(kevin.store.trades.version_args); an in-memory book turns it into a ``Trade`` at once
(``written``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from uuid import UUID

from kevin.domain.models import (
    MatchRef,
    Mismatch,
    Reason,
    RulesRef,
    Status,
    Trade,
    TradeTerms,
    trusted,
)


@dataclass(frozen=True)
class DecidedBy:
    """What decided a match or a mismatch: ``kind`` is ``exact`` (no rules),
    ``product`` (a product's rules, ``name`` the product), ``profile`` (a matching
    profile, ``name`` the profile) or ``replay`` (a replay's own rules); ``version`` the
    version of that definition."""

    kind: str
    name: str
    version: int | None

    def as_json(self) -> dict[str, object]:
        return {"kind": self.kind, "name": self.name, "version": self.version}

    def as_ref(self) -> RulesRef:
        return _rules_ref(self.kind, self.name, self.version)


@lru_cache(maxsize=1024)
def _rules_ref(kind: str, name: str, version: int | None) -> RulesRef:
    """One RulesRef (frozen) per definition: every match and mismatch names one."""
    return RulesRef.model_validate({"kind": kind, "name": name, "version": version})


@dataclass(slots=True)
class NewVersion:
    """Everything needed to write one version of a trade. Never changed once made (no
    writer assigns to one); not a frozen dataclass, whose ``__init__`` sets each of its
    14 fields through ``object.__setattr__`` — 2.96 µs against 0.42 µs, and matching
    makes one for every version it writes."""

    participant: str
    trade_id: str
    version: int
    status: Status
    reason: Reason
    terms: TradeTerms  # or the Trade it derives from, read as its terms (next_version)
    actor: str
    match: MatchRef | None = None
    mismatches: Sequence[Mismatch] = ()
    rules_version: int | None = None
    comment: str | None = None
    replay_id: UUID | None = None
    first_submitted_at: datetime | None = None
    # Carried for the books that record it; the trades table keeps ``rules_version``.
    decided_by: DecidedBy | None = None

    def first_submitted(self, at: datetime) -> NewVersion:
        """This version with ``first_submitted_at`` set: ``dataclasses.replace``'s result
        without its walk over the fields (0.4 against 2 µs; a batch asks it for every
        line). tests/test_versions.py holds it to ``replace`` field by field."""
        return NewVersion(self.participant, self.trade_id, self.version, self.status,
                          self.reason, self.terms, self.actor, self.match, self.mismatches,
                          self.rules_version, self.comment, self.replay_id, at,
                          self.decided_by)


def next_version(derived_from: Trade, *, status: Status, reason: Reason, actor: str,
                 terms: TradeTerms | None = None, match: MatchRef | None = None,
                 mismatches: Sequence[Mismatch] = (), rules_version: int | None = None,
                 comment: str | None = None, replay_id: UUID | None = None,
                 decided_by: DecidedBy | None = None) -> NewVersion:
    """Version n+1 of a trade: unspecified fields carry over from ``derived_from`` except
    the match state, which each version states anew. (Named parameters, not a dict of
    changes taken apart: matching makes one for every version it writes.)"""
    if terms is None:
        # A Trade is its own terms (a TradeTerms) to whatever reads them by name, as every
        # writer does (``written`` sets each other field anew), so none is built for each
        # version matching writes. Not a subclass of Trade (AgedTrade), whose further
        # fields ``written`` would carry into the new version.
        terms = derived_from if type(derived_from) is Trade else derived_from.terms()
    return NewVersion(derived_from.participant, derived_from.trade_id,
                      derived_from.version + 1, status, reason, terms, actor, match,
                      mismatches, rules_version, comment, replay_id,
                      derived_from.first_submitted_at, decided_by)


def written(new: NewVersion, first_submitted_at: datetime | None,
            recorded_at: datetime) -> Trade:
    """The Trade a NewVersion becomes once written, given what the writer chose for the
    two instants (a database its clock; an in-memory book the event's time)."""
    return trusted(Trade, {
        **new.terms.__dict__, "trade_id": new.trade_id, "participant": new.participant,
        "version": new.version, "status": new.status, "match": new.match,
        "mismatches": list(new.mismatches), "reason": new.reason, "comment": new.comment,
        "recorded_at": recorded_at, "actor": new.actor,
        "first_submitted_at": first_submitted_at, "rules_version": new.rules_version,
        "replay_id": new.replay_id,
    })
