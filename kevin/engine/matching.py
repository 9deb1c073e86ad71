"""Matching: decide, write both sides, keep mismatch lists fresh — over any book.

``Matcher`` reads and writes only through a ``kevin.domain.book.Book``: the PostgreSQL
book of a live submission or a batch (kevin.store.book), or an in-memory book (replays,
what-if runs, tests). Over PostgreSQL the caller holds the match-key locks of every key
involved (kevin.store.matching.lock_match_keys) for the whole transaction, so nothing
else changes the matching state of these keys meanwhile: every decision sees the latest
committed state, and two concurrent submissions of opposite sides can neither both rest
nor both match something else (docs/design.md invariant 4, also across `kevin serve`
processes).

The decisions themselves come from the pure ``kevin.domain.matching.decide``.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from uuid import UUID, uuid4

import structlog

from kevin.domain.book import Book, RulesInForce
from kevin.domain.errors import CannotMatch, VersionConflict
from kevin.domain.matching import RESTING, Matched, Mismatched, TradeRef, decide, ref
from kevin.domain.models import (
    ECONOMIC_FIELDS,
    MatchRef,
    Mismatch,
    Reason,
    RulesRef,
    Trade,
    TradeTerms,
    trusted,
)
from kevin.domain.versions import next_version

log = structlog.get_logger(__name__)

# A safety net, not a limit anyone should reach: each evaluation either writes nothing,
# or removes two trades from the book, or rewrites a mismatch list once per cause.
MAX_EVALUATIONS = 10_000
# Under the key lock no other Kevin writer can move these trades; a conflict would mean
# a writer that skipped the lock, so retry from fresh reads a few times, then give up.
CONFLICT_RETRIES = 3


class Matcher:
    """Runs matching over ``book`` on behalf of ``actor`` (one transaction's worth).

    ``settle(primaries, changed)`` evaluates each primary trade (new, amended, or back in
    the book after a break) and refreshes the mismatch lists it names; trades whose
    mismatch lists named a trade in ``changed`` (or one that matched here) are
    re-evaluated so that no trade points at a stale candidate.
    """

    def __init__(self, book: Book, actor: str, *,
                 new_match_id: Callable[[], UUID] = uuid4) -> None:
        self.book = book
        self.actor = actor
        # uuid4; a replay counts its own, never stored (kevin.engine.replay.replay_ids).
        self.new_match_id = new_match_id
        self._queue: deque[TradeRef] = deque()
        self._primary: dict[TradeRef, bool] = {}
        self._evaluations = 0

    # --- writing -----------------------------------------------------------------------

    async def append(self, derived_from: Trade, *, status: str, reason: Reason,
                     **changes: Any) -> Trade:
        (written,) = await self.append_all([(derived_from, {"status": status,
                                                            "reason": reason, **changes})])
        return written

    async def append_all(self, changes: Sequence[tuple[Trade, dict[str, Any]]]) -> list[Trade]:
        """``append`` for several trades at once (one statement in PostgreSQL), in order."""
        written = await self.book.append_versions([
            next_version(derived_from, actor=self.actor, **fields)
            for derived_from, fields in changes])
        return written

    async def match(self, trade: Trade, other: Trade, *, reason: Reason,
                    comment: str | None = None, match_id: UUID | None = None,
                    in_force: RulesInForce | None = None) -> tuple[Trade, Trade]:
        """Write both sides matched: one match_id, each naming the other's new version.
        ``in_force``: the rules that decided the match (None: an operator forced it)."""
        match_id = match_id or self.new_match_id()
        decided_by = _decided_by(in_force)
        rules = in_force.decided_by.as_ref() if in_force is not None else None
        first, second = await self.append_all([
            (trade, {"status": "matched", "reason": reason, "comment": comment, **decided_by,
                     "match": _match_ref(match_id, other, rules)}),
            (other, {"status": "matched", "reason": reason, "comment": comment, **decided_by,
                     "match": _match_ref(match_id, trade, rules)}),
        ])
        await self.recheck_trades_naming(trade, other)
        return first, second

    async def unmatch(self, leg: Trade, *, reason: Reason, comment: str | None = None) -> Trade:
        """Take a matched leg back into the book (its counterparty is dealt with apart)."""
        return await self.append(leg, status="unmatched", reason=reason, comment=comment)

    # --- the work list -----------------------------------------------------------------

    def enqueue(self, trade_ref: TradeRef, *, primary: bool) -> None:
        if trade_ref in self._primary:
            self._primary[trade_ref] = self._primary[trade_ref] or primary
            return
        self._primary[trade_ref] = primary
        self._queue.append(trade_ref)

    async def recheck_trades_naming(self, *trades: Trade) -> None:
        """These versions no longer stand in the book as they were (matched, amended,
        cancelled): re-evaluate every trade whose mismatch list names them."""
        for naming in await self.book.naming(trades):
            self.enqueue(ref(naming), primary=False)

    async def settle(self, primaries: Sequence[Trade] = (), changed: Sequence[Trade] = ()) -> None:
        """Evaluate until nothing is left to re-evaluate."""
        for trade in primaries:
            self.enqueue(ref(trade), primary=True)
        if changed:  # (no trade names none: not asked, a submission's every time)
            await self.recheck_trades_naming(*changed)
        while self._queue:
            trade_ref = self._queue.popleft()
            primary = self._primary.pop(trade_ref)
            self._evaluations += 1
            if self._evaluations > MAX_EVALUATIONS:
                raise RuntimeError("matching did not settle; refusing to loop on")
            await self._evaluate_with_retry(trade_ref, primary)

    async def _evaluate_with_retry(self, trade_ref: TradeRef, primary: bool) -> None:
        if not self.book.undoes_evaluations:
            await self._evaluate(trade_ref, primary)
            return
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                async with self.book.evaluation():  # a lost race undoes only this
                    await self._evaluate(trade_ref, primary)
                return
            except VersionConflict:
                log.warning("matching lost a version race; re-reading", trade=trade_ref,
                            attempt=attempt)
                if attempt == CONFLICT_RETRIES:
                    raise

    async def _evaluate(self, trade_ref: TradeRef, primary: bool) -> None:
        trade = await self.book.latest(trade_ref)
        if trade is None or trade.status not in RESTING:
            return
        in_force = await self.book.rules_in_force(trade)
        candidates = await self.book.candidates(trade, in_force.rules)
        decision = decide(trade, candidates, in_force.rules)
        if isinstance(decision, Matched):
            await self.match(trade, decision.candidate, reason="matched", in_force=in_force)
        elif isinstance(decision, Mismatched):
            # Each entry names what it was compared under (the rules in force).
            rules = in_force.decided_by.as_ref()
            mismatches = [trusted(Mismatch, {**m.__dict__, "rules": rules})
                          for m in decision.mismatches]
            if trade.status != "mismatched" or trade.mismatches != mismatches:
                await self.append(trade, status="mismatched", reason="mismatched",
                                  mismatches=mismatches, **_decided_by(in_force))
            if primary:  # the other sides learn about this trade too
                for candidate in decision.candidates:
                    self.enqueue(ref(candidate), primary=False)
        elif trade.status == "mismatched":  # its candidates are gone: it simply rests
            await self.append(trade, status="unmatched", reason="unmatched",
                              **_decided_by(in_force))

    # --- the operations that start matching ------------------------------------------

    async def submitted(self, trade: Trade) -> Trade:
        """A new trade (in the book already): match it (or record why not). Returns its
        latest version."""
        await self.settle([trade])
        return await self._latest_version_of(trade)

    async def amend(self, current: Trade, terms: TradeTerms) -> Trade:
        """Write the amended version and match what it changes. Returns its latest version.

        - matched, economic fields changed: the match breaks; the counterparty gets an
          ``unmatched`` version and both go back through matching;
        - matched, only attributes changed: the match stands; the counterparty gets a
          version naming the amended one, so both still point at each other's latest;
        - otherwise: an economic change re-runs matching for it and for every trade
          whose mismatch list named it; an attributes-only change keeps its state.
        """
        economic = economic_change(current.terms(), terms)
        if current.status == "matched":
            assert current.match is not None
            other = await self._counterparty(current)
            if not economic:
                amended = await self.append(
                    current, status="matched", reason="amended", terms=terms,
                    rules_version=current.rules_version, comment=current.comment,
                    match=current.match.model_copy(
                        update={"counterparty_version": other.version + 1}))
                await self.append(
                    other, status="matched", reason="matched",
                    rules_version=other.rules_version, comment=other.comment,
                    match=other.match.model_copy(  # type: ignore[union-attr]
                        update={"counterparty_version": amended.version}))
                return amended
            amended = await self.append(current, status="unmatched", reason="amended",
                                        terms=terms)
            released = await self.unmatch(other, reason="unmatched")
            await self.settle([amended, released])
            return await self._latest_version_of(amended)
        if not economic:
            return await self.append(current, status=current.status, reason="amended",
                                     terms=terms, mismatches=current.mismatches,
                                     rules_version=current.rules_version)
        amended = await self.append(current, status="unmatched", reason="amended", terms=terms)
        await self.settle([amended], changed=[current])
        return await self._latest_version_of(amended)

    async def cancel(self, current: Trade) -> Trade:
        """Cancel; a matched counterparty goes back into the book and through matching."""
        cancelled = await self.append(current, status="cancelled", reason="cancelled")
        if current.status == "matched":
            released = await self.unmatch(await self._counterparty(current), reason="unmatched")
            await self.settle([released])
        else:
            await self.settle(changed=[current])
        return cancelled

    async def force(self, first: Trade, second: Trade, comment: str | None) -> tuple[Trade, Trade]:
        """An operator matches two live, opposite trades of mirrored participants,
        whatever their terms. Both get a ``forced`` version carrying the comment."""
        for leg in (first, second):
            if leg.status not in RESTING:
                raise CannotMatch(f"trade {leg.trade_id} of {leg.participant} is {leg.status}",
                                  {"participant": leg.participant, "trade_id": leg.trade_id,
                                   "status": leg.status})
        if (first.counterparty != second.participant or second.counterparty != first.participant
                or first.side == second.side):
            raise CannotMatch("the legs must be opposite sides of mirrored participants",
                              {"legs": [{"participant": leg.participant, "side": leg.side,
                                         "counterparty": leg.counterparty}
                                        for leg in (first, second)]})
        legs = await self.match(first, second, reason="forced", comment=comment)
        await self.settle()
        return await self._latest_version_of(legs[0]), await self._latest_version_of(legs[1])

    async def break_match(self, legs: Sequence[Trade], comment: str | None) -> list[Trade]:
        """An operator breaks a live match: both legs go back to ``unmatched`` (reason
        ``broken``), the pair is recorded so it is never matched automatically again, and
        each leg goes back through matching (with anyone else)."""
        first, second = legs
        assert first.match is not None
        released = [await self.unmatch(leg, reason="broken", comment=comment) for leg in legs]
        await self.book.record_broken_pair(first, second, first.match.match_id, comment)
        await self.settle(released)
        return [await self._latest_version_of(leg) for leg in legs]

    async def _counterparty(self, trade: Trade) -> Trade:
        assert trade.match is not None
        other = await self.book.latest((trade.counterparty, trade.match.counterparty_trade_id))
        if other is None or other.match is None or other.match.match_id != trade.match.match_id:
            # Invariant 4 says this cannot be; refuse rather than write half a break.
            raise RuntimeError(f"match {trade.match.match_id} has no live counterparty")
        return other

    async def _latest_version_of(self, trade: Trade) -> Trade:
        latest = await self.book.latest(ref(trade))
        assert latest is not None
        return latest


def random_ids(count: int = 256) -> Callable[[], UUID]:
    """Match ids as uuid4 makes them (version 4, 122 random bits from ``os.urandom``),
    the randomness drawn for ``count`` at a time: uuid4's system call per id was 4 µs of
    a batch's matched line, against 1.3 µs for an id from the pool."""
    def ids() -> Iterator[UUID]:
        while True:
            pool = os.urandom(16 * count)
            for at in range(0, 16 * count, 16):
                yield UUID(bytes=pool[at:at + 16], version=4)

    return ids().__next__


def _match_ref(match_id: UUID, other: Trade, rules: RulesRef | None) -> MatchRef:
    """A leg's match with ``other``, about to get its next version. Made of validated
    values: not validated again (trusted)."""
    return trusted(MatchRef, {"match_id": match_id, "counterparty_trade_id": other.trade_id,
                              "counterparty_version": other.version + 1,
                              "accepted_differences": None, "rules": rules})


def _decided_by(in_force: RulesInForce | None) -> dict[str, Any]:
    """What a version records of the rules that decided it."""
    if in_force is None:
        return {}
    return {"rules_version": in_force.rules_version, "decided_by": in_force.decided_by}


def economic_change(current: TradeTerms, new: TradeTerms) -> bool:
    """Whether an amendment touches what matching looks at (attributes never matter)."""
    return any(getattr(current, name) != getattr(new, name) for name in ECONOMIC_FIELDS)
