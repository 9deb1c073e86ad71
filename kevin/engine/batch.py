"""Bulk submission: many trades of one participant in one transaction, each line
standing alone and matched exactly as if its lines had been submitted one by one, in
order.

The set-based path does the work of many single submissions in a handful of
statements: lock every match key involved and read their rules; fetch every new trade's
candidates at once (the candidate query of single submissions, run per trade by
LATERAL); decide each trade with the pure ``decide``, in line order; then insert the
decided trades (with their feed rows) and write all their matches, one statement each.
A line's own trade never affects another line's candidates (a participant's trades only
ever meet the counterparty's), so deciding ahead of inserting gives the decisions the
one-by-one order would — as long as each outcome is a clean one: the trade rests with
nothing agreeing on its key fields, or matches a candidate that no earlier line took and
no mismatch list names. A line that needs more (a mismatch, whose re-evaluations ripple
through the book; a contended candidate) is inserted and matched on its own by the live
Matcher, exactly as a single submission, and the set-based path resumes after it with
fresh candidates (after MAX_RESUMES such lines the rest go one at a time).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import uuid4

import asyncpg

from kevin.domain.errors import ExistsWithDifferentFields
from kevin.domain.matching import Matched, decide, ref
from kevin.domain.models import (
    TERM_FIELDS,
    MatchRef,
    Trade,
    TradeSubmission,
    TradeTerms,
    differing_fields,
    trusted,
)
from kevin.domain.rules import EXACT_RULES, RulesVersion
from kevin.engine.matching import Matcher
from kevin.store import bulk, database
from kevin.store import trades as store
from kevin.store.book import PostgresBook
from kevin.store.matching import MatchKey
from kevin.store.trades import NewVersion

MAX_LINES = 10_000
# Lines that leave the set-based path cost a fresh candidate fetch for the rest of the
# batch each; past this many, the rest of the batch goes one line at a time.
MAX_RESUMES = 32
# A trade not yet inserted entered the book after every resting one: its first
# submission, for the bps reference price, is later than any candidate's.
NOT_YET = datetime.max.replace(tzinfo=UTC)

LineResult = Literal["created", "exists", "exists_with_different_fields", "invalid"]


@dataclass(frozen=True)
class LineOutcome:
    """What became of one line: ``trade`` is the trade's latest version after the batch."""

    result: LineResult
    trade: Trade | None = None
    error: dict[str, Any] | None = None


def terms_of(submission: TradeSubmission) -> TradeTerms:
    """The submission's terms, already validated as part of the submission."""
    return trusted(TradeTerms, {name: getattr(submission, name) for name in TERM_FIELDS})


class _Batch:
    """The new trades of one batch, matched in line order."""

    def __init__(self, conn: asyncpg.Connection, participant: str,
                 rules: dict[str, RulesVersion], news: Sequence[NewVersion]) -> None:
        self.conn = conn
        self.participant = participant
        self.stored_rules = rules
        self.rules = {product: ((found.version, found.rules()) if found else
                                (None, EXACT_RULES))
                      for product in {n.terms.product for n in news}
                      for found in [rules.get(product)]}
        self.news = news
        self.created: dict[str, Trade] = {}  # trade_id → its latest version
        self.one_at_a_time = 0

    def provisional(self, new: NewVersion) -> Trade:
        """The trade as it will be once inserted, for deciding ahead of the insert."""
        return store.trade_from_new(new, first_submitted_at=NOT_YET, recorded_at=NOT_YET)

    async def run(self) -> None:
        position = 0
        while position < len(self.news):
            if self.one_at_a_time <= MAX_RESUMES:
                position += await self.set_based(self.news[position:])
                if position == len(self.news):
                    return
            await self.single(self.news[position])
            position += 1

    async def set_based(self, news: Sequence[NewVersion]) -> int:
        """Decide, insert and match the longest run of clean lines; how many it took."""
        trades = [self.provisional(new) for new in news]
        found = await bulk.candidates_many(self.conn, [(t, self.rules[t.product][1])
                                                       for t in trades])
        taken: set[tuple[str, str]] = set()
        decided: list[tuple[int, Trade, int | None] | None] = []  # per line: its match
        for index, trade in enumerate(trades):
            candidates, has_counterparts = found[index]
            if not has_counterparts:
                decided.append(None)  # nothing agrees even on the key: it rests
                continue
            if any(ref(c) in taken for c, _ in candidates):
                break  # an earlier line took one: leave it to the exact path
            version, rules = self.rules[trade.product]
            decision = decide(trade, [c for c, _ in candidates], rules)
            named = {ref(c): pointed for c, pointed in candidates}
            if not isinstance(decision, Matched) or named[ref(decision.candidate)]:
                break  # a mismatch, or a match that moves a mismatch list
            decided.append((index, decision.candidate, version))
            taken.add(ref(decision.candidate))
        run = news[:len(decided)]
        # A line that matches is written as version 1 already superseded and version 2
        # matched, in the one statement that writes the run (bulk.insert_new_trades):
        # no flip of a row this batch just wrote, no second round trip.
        matches = [None if match is None else
                   (MatchRef(match_id=uuid4(), counterparty_trade_id=match[1].trade_id,
                             counterparty_version=match[1].version + 1), match[2])
                   for match in decided]
        written = await bulk.insert_new_trades(self.conn, run, matches)
        self.created.update(written)
        theirs: list[NewVersion] = []
        for new, match, ours in zip(run, decided, matches, strict=True):
            if match is None or new.trade_id not in written:
                continue  # it rests; or another writer created that trade_id meanwhile
            theirs.append(store.next_version(  # as Matcher.match writes the resting leg
                match[1], status="matched", reason="matched", actor=self.participant,
                rules_version=match[2], comment=None,
                match=MatchRef(match_id=ours[0].match_id, counterparty_trade_id=new.trade_id,
                               counterparty_version=written[new.trade_id].version)))
        await bulk.append_versions(self.conn, theirs)
        return len(decided)

    async def single(self, new: NewVersion) -> None:
        """One line exactly as a single submission: insert, then the live Matcher."""
        self.one_at_a_time += 1
        created = await store.insert_version(self.conn, new)
        if created is None:
            return  # another writer created that trade_id meanwhile: it exists
        book = PostgresBook(self.conn, rules=self.stored_rules)
        book.remember(created)
        self.created[new.trade_id] = await Matcher(book, self.participant).submitted(created)


async def submit_batch(
    pool: asyncpg.Pool, participant: str, submissions: Sequence[TradeSubmission]
) -> list[LineOutcome]:
    """Submit many trades of ``participant`` in one transaction; one outcome per
    submission, in order. A trade_id given twice is created once; its later lines are
    idempotent resubmissions (``exists``) or conflicts, like single submissions."""
    terms = [terms_of(s) for s in submissions]
    first: dict[str, int] = {}
    for index, submission in enumerate(submissions):
        first.setdefault(submission.trade_id, index)
    async with database.transaction(pool) as conn:
        await bulk.lock_match_keys(conn, (MatchKey.of(participant, t) for t in terms))
        rules = await bulk.latest_rules(conn, {t.product for t in terms})
        stored = await bulk.latest_many(conn, participant, first)
        news = [NewVersion(participant=participant, trade_id=trade_id, version=1,
                           status="unmatched", reason="submitted", terms=terms[index],
                           actor=participant)
                for trade_id, index in first.items() if trade_id not in stored]
        batch = _Batch(conn, participant, rules, news)
        await batch.run()
        if batch.one_at_a_time:  # re-evaluations may have moved earlier lines' trades
            batch.created.update(await bulk.latest_many(conn, participant, batch.created))
        missing = [n.trade_id for n in news if n.trade_id not in batch.created]
        if missing:  # created by another writer meanwhile: as if it had been stored
            stored.update(await bulk.latest_many(conn, participant, missing))
    outcomes: list[LineOutcome] = []
    for index, submission in enumerate(submissions):
        trade_id = submission.trade_id
        if trade_id in batch.created:
            if index == first[trade_id]:
                outcomes.append(LineOutcome("created", batch.created[trade_id]))
                continue
            original, latest = terms[first[trade_id]], batch.created[trade_id]
        else:
            original, latest = stored[trade_id].terms(), stored[trade_id]
        fields = differing_fields(original, terms[index])
        if fields:
            error = ExistsWithDifferentFields(fields)
            outcomes.append(LineOutcome("exists_with_different_fields", None, {
                "error": error.code, "message": error.message, "details": error.details}))
        else:
            outcomes.append(LineOutcome("exists", latest))
    return outcomes
