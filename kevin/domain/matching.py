"""The matching decision: a pure, deterministic function of values.

``decide(trade, candidates, rules)`` is the one place that says whether a trade matches,
mismatches or rests. Live matching (kevin.engine.matching) and replay both call it, so
they cannot disagree. It does no I/O and reads no clock: the same inputs always give the
same decision, whatever order the candidates come in (but ``Candidates``, which vouch
for their own order).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

from kevin.domain.models import Mismatch, MismatchField, Trade, trusted
from kevin.domain.rules import EXACT, Rules

RESTING = frozenset({"unmatched", "mismatched"})
MAX_MISMATCHES = 3

# The fields compared under tolerance, in the order a mismatch lists them.
TOLERANCE_FIELDS = ("price", "quantity", "settlement_date", "location")

TradeRef = tuple[str, str]  # (participant, trade_id)

_NEVER = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Matched:
    """The trade matches ``candidate``, the best one within tolerance."""

    candidate: Trade


@dataclass(frozen=True)
class Mismatched:
    """No candidate is within tolerance; ``mismatches`` explains the nearest (at most 3,
    nearest first); ``candidates`` are those trades, in the same order."""

    mismatches: tuple[Mismatch, ...]
    candidates: tuple[Trade, ...]


@dataclass(frozen=True)
class Unmatched:
    """Nothing agrees with the trade even on its key fields and trade date: it rests."""


Decision = Matched | Mismatched | Unmatched
UNMATCHED = Unmatched()


class Candidates(list[Trade]):
    """Candidates as a book found them walking its trades in invariant 7's order
    (``candidate_order``), in that order, with what it knows of each: ``failing`` maps a
    candidate's (participant, trade_id) to ``out_of_tolerance(trade, candidate, rules)``
    for the trade and rules they were found for. The in-memory book
    (kevin.domain.memory_book) hands its walk on so, and ``decide`` neither sorts them
    nor tests again a candidate the walk tested; one without a verdict is tested as
    usual. They vouch for being distinct counterparts of the trade (``is_counterpart``,
    never a pair an operator broke): a walk takes each from the resting trades of the
    segment opposite the trade's, once, so ``decide`` does not filter them again."""

    __slots__ = ("failing",)

    def __init__(self) -> None:
        self.failing: dict[TradeRef, list[str]] = {}  # empty as list() made it


class HasRef(Protocol):
    """A trade, or a version of one about to be written: whose and which trade."""

    @property
    def participant(self) -> str: ...
    @property
    def trade_id(self) -> str: ...


def ref(trade: HasRef) -> TradeRef:
    return trade.participant, trade.trade_id


def is_counterpart(trade: Trade, candidate: Trade) -> bool:
    """Key fields agree: same product, currency and trade date, mirrored participants,
    opposite sides, and the candidate is live and resting. Only such a trade can match
    (within tolerance) or mismatch (outside it)."""
    return (
        candidate.status in RESTING
        and candidate.participant == trade.counterparty
        and candidate.counterparty == trade.participant
        and candidate.side != trade.side
        and candidate.product == trade.product
        and candidate.currency == trade.currency
        and candidate.trade_date == trade.trade_date
    )


def resting_of(trade: Trade, candidate: Trade) -> tuple[Trade, Trade]:
    """(resting, other): of the two, the one that entered the book first (earliest first
    submission, then participant and trade_id) rests; relative and asymmetric tolerances
    are seen from it, a bps tolerance taken of its price. When a new trade meets the book
    the candidate always rests; defining it per pair means re-evaluating either side
    later gives the same answer."""
    # The earlier by (first submission, participant, trade_id); asked for every candidate
    # weighed, so compared field by field rather than as two tuples through min().
    ours, theirs = trade.first_submitted_at or _NEVER, candidate.first_submitted_at or _NEVER
    if ours < theirs or (ours == theirs and (trade.participant, trade.trade_id)
                         <= (candidate.participant, candidate.trade_id)):
        return trade, candidate
    return candidate, trade


def out_of_tolerance(trade: Trade, candidate: Trade, rules: Rules) -> list[str]:
    """The tolerance fields on which ``trade`` and ``candidate`` differ by more than the
    rules allow, in TOLERANCE_FIELDS order; empty means they match."""
    return rules.tolerances.failing(*resting_of(trade, candidate))


def candidate_order(trade: Trade, candidate: Trade) -> tuple[Decimal, Decimal, datetime, str]:
    """docs/design.md invariant 7: smallest price difference, then smallest quantity
    difference, then earliest first submission, then trade_id (``tie_break``)."""
    return (
        EXACT.abs(EXACT.subtract(trade.price, candidate.price)),
        EXACT.abs(EXACT.subtract(trade.quantity, candidate.quantity)),
        *tie_break(candidate),
    )


def tie_break(candidate: Trade) -> tuple[datetime, str]:
    """The last two keys of invariant 7, which depend on the candidate alone: its first
    submission (none: first), then its trade_id."""
    return candidate.first_submitted_at or _NEVER, candidate.trade_id


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, Decimal):
        return format(value, "f")
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def explain(trade: Trade, resting: Trade, rules: Rules, fields: Iterable[str]) -> Mismatch:
    """One mismatch entry, from ``trade``'s point of view (ours) against ``resting``."""
    # Built from values of validated trades and rules: not validated again (trusted).
    base = resting_of(trade, resting)[0]
    return trusted(Mismatch, {
        "counterparty_trade_id": resting.trade_id,
        "fields": [trusted(MismatchField, {
            "field": name, "ours": _text(getattr(trade, name)),
            "theirs": _text(getattr(resting, name)),
            "tolerance": rules.tolerances.text(name, base)}) for name in fields],
        "rules": None,
    })


def _distinct(trades: list[Trade]) -> list[Trade]:
    """The same trade passed twice counts once: the first in order."""
    seen: set[TradeRef] = set()
    out = []
    for trade in trades:
        trade_ref = ref(trade)
        if trade_ref not in seen:
            seen.add(trade_ref)
            out.append(trade)
    return out


def decide(
    trade: Trade,
    candidates: Iterable[Trade],
    rules: Rules,
    *,
    never_match: Collection[TradeRef] = (),
) -> Decision:
    """Decide what becomes of ``trade`` given the resting ``candidates`` and the rules of
    its product.

    - ``candidates`` may be any trades (order does not matter); those that are not a
      counterpart (see ``is_counterpart``) are ignored, as is the trade itself.
    - ``never_match``: (participant, trade_id) of trades this one must never be paired
      with automatically (pairs an operator broke); they are neither matched nor listed.
    - ``candidates`` given as ``Candidates``: their order, the verdicts they carry and
      that they are distinct counterparts are taken as they are (reached for this trade
      under these rules), not recomputed.
    - Returns ``Matched(best)`` if any candidate is within tolerance on every field
      (inclusive), the best by invariant 7; else ``Mismatched`` with the nearest (same
      order) at most three, each listing the fields outside tolerance with both values
      and the tolerance; else ``UNMATCHED``.
    """
    if isinstance(candidates, Candidates) and not never_match:
        # Distinct counterparts in invariant 7's order, each with its verdict, already.
        eligible: list[Trade] = candidates
        known = candidates.failing
    else:
        excluded = set(never_match) | {ref(trade)}
        eligible = [c for c in candidates if ref(c) not in excluded and is_counterpart(trade, c)]
        if isinstance(candidates, Candidates):
            known = candidates.failing  # and they come in invariant 7's order already
        else:
            known = {}
            eligible.sort(key=lambda c: candidate_order(trade, c))
        eligible = _distinct(eligible)
    outside: list[tuple[Trade, list[str]]] = []
    for candidate in eligible:
        candidate_ref = ref(candidate)
        fields = known.get(candidate_ref)
        if fields is None:
            fields = out_of_tolerance(trade, candidate, rules)
        if not fields:
            return Matched(candidate)
        outside.append((candidate, fields))
    if not outside:
        return UNMATCHED
    nearest = outside[:MAX_MISMATCHES]
    return Mismatched(
        mismatches=tuple(explain(trade, c, rules, fields) for c, fields in nearest),
        candidates=tuple(c for c, _ in nearest),
    )
