"""Matching inside one transaction: decide, write both sides, keep mismatch lists fresh.

The caller holds the match-key locks of every key involved (kevin.store.matching
.lock_match_keys) for the whole transaction, so nothing else changes the matching state
of these keys meanwhile: every decision here sees the latest committed state, and two
concurrent submissions of opposite sides can neither both rest nor both match something
else (DESIGN.md invariant 4, also across `kevin serve` processes).

The decisions themselves come from the pure ``kevin.domain.matching.decide``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import structlog

from kevin.domain.errors import CannotMatch, VersionConflict
from kevin.domain.matching import RESTING, Matched, Mismatched, TradeRef, decide, ref
from kevin.domain.models import ECONOMIC_FIELDS, MatchRef, Reason, Trade, TradeTerms
from kevin.domain.rules import EXACT_RULES, Rules, RulesVersion
from kevin.store import matching as match_store
from kevin.store import trades as store

log = structlog.get_logger(__name__)

# A safety net, not a limit anyone should reach: each evaluation either writes nothing,
# or removes two trades from the book, or rewrites a mismatch list once per cause.
MAX_EVALUATIONS = 10_000
# Under the key lock no other Kevin writer can move these trades; a conflict would mean
# a writer that skipped the lock, so retry from fresh reads a few times, then give up.
CONFLICT_RETRIES = 3


class Matcher:
    """Runs matching for one transaction (``conn``), on behalf of ``actor``.

    ``settle(primaries, changed)`` evaluates each primary trade (new, amended, or back in
    the book after a break) and refreshes the mismatch lists it names; trades whose
    mismatch lists named a trade in ``changed`` (or one that matched here) are
    re-evaluated so that no trade points at a stale candidate.
    """

    def __init__(self, conn: asyncpg.Connection, actor: str, *, savepoints: bool = True) -> None:
        self.conn = conn
        self.actor = actor
        # With savepoints, each evaluation that loses a version race is retried alone.
        # Without (a new submission's fast path: two round trips fewer per evaluation),
        # VersionConflict ends the transaction and the caller retries all of it.
        self.savepoints = savepoints
        self._rules: dict[str, tuple[int | None, Rules]] = {}
        self._latest: dict[TradeRef, Trade] = {}
        self._queue: deque[TradeRef] = deque()
        self._primary: dict[TradeRef, bool] = {}
        self._evaluations = 0

    # --- reading ---------------------------------------------------------------------

    async def rules_for(self, product: str) -> tuple[int | None, Rules]:
        """The product's latest rules and their version; (None, exact) if it has none."""
        if product not in self._rules:
            found = await match_store.latest_rules(self.conn, product)
            self._rules[product] = (found.version, found.rules()) if found else (None,
                                                                                 EXACT_RULES)
        return self._rules[product]

    async def find_candidates(self, trade: Trade, rules: Rules) -> list[Trade]:
        """The resting counterparts ``decide`` needs (a replay answers from memory)."""
        return await match_store.find_candidates(self.conn, trade, rules)

    async def pointing_at(self, trade: Trade) -> list[Trade]:
        """Live mismatched trades whose mismatch list names ``trade``."""
        return await match_store.pointing_at(self.conn, trade)

    async def pointing_at_all(self, trades: Sequence[Trade]) -> list[Trade]:
        """``pointing_at`` for each of ``trades``, in that order (one round trip)."""
        return await match_store.pointing_at_any(self.conn, trades)

    async def record_broken_pair(self, first: Trade, second: Trade, match_id: UUID,
                                 comment: str | None) -> None:
        """Remember that an operator broke this pair: never match it automatically again."""
        await match_store.record_broken_pair(self.conn, ref(first), ref(second), match_id,
                                             comment)

    def know_rules(self, product: str, found: RulesVersion | None) -> None:
        """Rules the caller already read in this transaction (lock_match_key_and_rules)."""
        self._rules[product] = (found.version, found.rules()) if found else (None, EXACT_RULES)

    async def latest(self, trade_ref: TradeRef) -> Trade | None:
        if trade_ref not in self._latest:
            found = await store.latest(self.conn, *trade_ref)
            if found is None:
                return None
            self._latest[trade_ref] = found
        return self._latest[trade_ref]

    # --- writing ---------------------------------------------------------------------

    async def append(self, derived_from: Trade, *, status: str, reason: Reason,
                     **changes: object) -> Trade:
        written = await store.append_version(
            self.conn, derived_from, status=status, reason=reason, actor=self.actor,
            **changes)
        self._latest[ref(written)] = written
        return written

    async def append_all(self, changes: Sequence[tuple[Trade, dict[str, Any]]]) -> list[Trade]:
        """``append`` for several trades at once, in one statement, in the order given."""
        written = await store.append_versions(self.conn, [
            store.next_version(derived_from, actor=self.actor, **fields)
            for derived_from, fields in changes])
        for trade in written:
            self._latest[ref(trade)] = trade
        return written

    async def match(self, trade: Trade, other: Trade, *, reason: Reason,
                    rules_version: int | None = None, comment: str | None = None,
                    match_id: UUID | None = None) -> tuple[Trade, Trade]:
        """Write both sides matched: one match_id, each naming the other's new version."""
        match_id = match_id or uuid4()
        # Both legs at once (one round trip); each names the other's new version.
        first, second = await self.append_all([
            (trade, {"status": "matched", "reason": reason, "rules_version": rules_version,
                     "comment": comment,
                     "match": MatchRef(match_id=match_id, counterparty_trade_id=other.trade_id,
                                       counterparty_version=other.version + 1)}),
            (other, {"status": "matched", "reason": reason, "rules_version": rules_version,
                     "comment": comment,
                     "match": MatchRef(match_id=match_id, counterparty_trade_id=trade.trade_id,
                                       counterparty_version=trade.version + 1)}),
        ])
        await self.changed(trade, other)
        return first, second

    async def unmatch(self, leg: Trade, *, reason: Reason, comment: str | None = None) -> Trade:
        """Take a matched leg back into the book (its counterparty is dealt with apart)."""
        return await self.append(leg, status="unmatched", reason=reason, comment=comment)

    # --- the work list ---------------------------------------------------------------

    def enqueue(self, trade_ref: TradeRef, *, primary: bool) -> None:
        if trade_ref in self._primary:
            self._primary[trade_ref] = self._primary[trade_ref] or primary
            return
        self._primary[trade_ref] = primary
        self._queue.append(trade_ref)

    async def changed(self, *trades: Trade) -> None:
        """These versions no longer stand in the book as they were (matched, amended,
        cancelled): re-evaluate every trade whose mismatch list names them."""
        for pointing in await self.pointing_at_all(trades):
            self._latest.setdefault(ref(pointing), pointing)
            self.enqueue(ref(pointing), primary=False)

    async def settle(self, primaries: Sequence[Trade] = (), changed: Sequence[Trade] = ()) -> None:
        for trade in primaries:
            self._latest[ref(trade)] = trade
            self.enqueue(ref(trade), primary=True)
        await self.changed(*changed)
        while self._queue:
            trade_ref = self._queue.popleft()
            primary = self._primary.pop(trade_ref)
            self._evaluations += 1
            if self._evaluations > MAX_EVALUATIONS:
                raise RuntimeError("matching did not settle; refusing to loop on")
            await self._evaluate_with_retry(trade_ref, primary)

    async def _evaluate_with_retry(self, trade_ref: TradeRef, primary: bool) -> None:
        if not self.savepoints:
            await self._evaluate(trade_ref, primary)
            return
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                async with self.conn.transaction():  # a savepoint: a lost race undoes only this
                    await self._evaluate(trade_ref, primary)
                return
            except VersionConflict:
                log.warning("matching lost a version race; re-reading", trade=trade_ref,
                            attempt=attempt)
                self._latest.clear()
                if attempt == CONFLICT_RETRIES:
                    raise

    async def _evaluate(self, trade_ref: TradeRef, primary: bool) -> None:
        trade = await self.latest(trade_ref)
        if trade is None or trade.status not in RESTING:
            return
        rules_version, rules = await self.rules_for(trade.product)
        candidates = await self.find_candidates(trade, rules)
        for candidate in candidates:  # fresh from the database, under our lock
            self._latest[ref(candidate)] = candidate
        decision = decide(trade, candidates, rules)
        if isinstance(decision, Matched):
            await self.match(trade, decision.candidate, reason="matched",
                             rules_version=rules_version)
        elif isinstance(decision, Mismatched):
            mismatches = list(decision.mismatches)
            if trade.status != "mismatched" or trade.mismatches != mismatches:
                await self.append(trade, status="mismatched", reason="mismatched",
                                  mismatches=mismatches, rules_version=rules_version)
            if primary:  # the other sides learn about this trade too
                for candidate in decision.candidates:
                    self.enqueue(ref(candidate), primary=False)
        elif trade.status == "mismatched":  # its candidates are gone: it simply rests
            await self.append(trade, status="unmatched", reason="unmatched",
                              rules_version=rules_version)

    # --- the operations that start matching ------------------------------------------

    async def submitted(self, trade: Trade) -> Trade:
        """A new trade: match it (or record why not). Returns its latest version."""
        await self.settle([trade])
        return await self._now(trade)

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
            return await self._now(amended)
        if not economic:
            return await self.append(current, status=current.status, reason="amended",
                                     terms=terms, mismatches=current.mismatches,
                                     rules_version=current.rules_version)
        amended = await self.append(current, status="unmatched", reason="amended", terms=terms)
        await self.settle([amended], changed=[current])
        return await self._now(amended)

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
        return await self._now(legs[0]), await self._now(legs[1])

    async def break_match(self, legs: Sequence[Trade], comment: str | None) -> list[Trade]:
        """An operator breaks a live match: both legs go back to ``unmatched`` (reason
        ``broken``), the pair is recorded so it is never matched automatically again, and
        each leg goes back through matching (with anyone else)."""
        first, second = legs
        assert first.match is not None
        released = [await self.unmatch(leg, reason="broken", comment=comment) for leg in legs]
        await self.record_broken_pair(first, second, first.match.match_id, comment)
        await self.settle(released)
        return [await self._now(leg) for leg in legs]

    async def _counterparty(self, trade: Trade) -> Trade:
        assert trade.match is not None
        other = await self.latest((trade.counterparty, trade.match.counterparty_trade_id))
        if other is None or other.match is None or other.match.match_id != trade.match.match_id:
            # Invariant 4 says this cannot be; refuse rather than write half a break.
            raise RuntimeError(f"match {trade.match.match_id} has no live counterparty")
        return other

    async def _now(self, trade: Trade) -> Trade:
        latest = await self.latest(ref(trade))
        assert latest is not None
        return latest


def economic_change(current: TradeTerms, new: TradeTerms) -> bool:
    """Whether an amendment touches what matching looks at (attributes never matter)."""
    return any(getattr(current, name) != getattr(new, name) for name in ECONOMIC_FIELDS)
