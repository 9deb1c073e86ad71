"""Bulk submission: many trades of one participant in one transaction, each line
standing alone and matched exactly as if its lines had been submitted one by one, in
order.

The batch runs the live ``Matcher`` over a ``BatchBook`` (kevin.store.batch_book): the
in-memory book, filled from PostgreSQL as matching needs it, its writes kept back and
sent a few thousand at a time. Under the match-key locks of every key involved nothing
else changes these keys, so: lock the keys and read their rules; load the book around
every line's price (a few statements for the whole batch); read every new trade's first
submission, the database's clock (one statement per few thousand lines, which also tells
which trade_ids another writer created meanwhile, each part read while the lines before
it are matched); match line after line in memory, mismatches and their re-evaluations
included, every version 1 and every version matching wrote going to the database while
the next lines are matched (one statement per few thousand versions; a line matched at
once writes its version 1 superseded already). A trade_id another writer creates after
it was read free makes that write fail, and the batch is done again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple

import asyncpg

from kevin import heap
from kevin.domain.errors import ExistsWithDifferentFields
from kevin.domain.matching import ref
from kevin.domain.models import (
    TERM_FIELDS,
    Trade,
    TradeSubmission,
    TradeTerms,
    differing_fields,
    trusted,
)
from kevin.domain.rules import RulesVersion
from kevin.domain.versions import NewVersion, written
from kevin.engine.matching import Matcher, random_ids
from kevin.store import bulk, database
from kevin.store import profiles as profile_store
from kevin.store.batch_book import BatchBook
from kevin.store.book import UNWRITTEN
from kevin.store.matching import MatchKey

MAX_LINES = 10_000
# A batch writes its new trades' version 1 after matching them; another writer creating
# one of their trade_ids in between makes the write fail on one of these keys, and the
# batch is done again (at most this many times in all).
NEW_TRADE_KEYS = ("pk_trades", "ix_trades_one_latest")
RETRIES = 3

LineResult = Literal["created", "exists", "exists_with_different_fields", "invalid"]


class LineOutcome(NamedTuple):
    """What became of one line: ``trade`` is the trade's latest version after the batch.
    (A named tuple: a batch makes one a line, and a frozen dataclass's ``__init__`` took
    1.8 µs to set its three fields against 0.2 µs.)"""

    result: LineResult
    trade: Trade | None = None
    error: dict[str, Any] | None = None


def terms_of(submission: TradeSubmission) -> TradeTerms:
    """The submission's terms, already validated as part of the submission."""
    return trusted(TradeTerms, {name: getattr(submission, name) for name in TERM_FIELDS})


async def _match_lines(conn: asyncpg.Connection, participant: str, news: Sequence[NewVersion],
                       rules: dict[str, RulesVersion | None]) -> dict[str, Trade]:
    """Write the new trades' first versions and match them in line order over a
    BatchBook; each one's latest version, by trade_id (a trade_id another writer created
    meanwhile is not there)."""
    # A batch's book is tens of thousands of objects alive until it ends, in no
    # reference cycle (docs/performance.md, change 25): the collector paused while the
    # batch is matched — and, where the caller pauses it already (the batch route, for
    # the whole request), until the caller resumes it.
    with heap.collector_paused():
        return await _match_in_memory(conn, participant, news, rules)


async def _match_in_memory(conn: asyncpg.Connection, participant: str,
                           news: Sequence[NewVersion],
                           rules: dict[str, RulesVersion | None]) -> dict[str, Trade]:
    counterparties = {new.terms.counterparty for new in news}
    book = BatchBook(conn, rules, await bulk.broken_among(conn, {participant, *counterparties}),
                     await profile_store.live_profiles_of(conn, participant))
    # The book is loaded around the lines before their first versions are written: its
    # windows then hold none of the batch's own trades, which are hidden until their
    # lines anyway (the batch's prices and segments are known before they are stored).
    unwritten = [written(new, None, UNWRITTEN) for new in news]
    book.hide(unwritten)
    await book.prefetch(unwritten)
    # The first submissions are read part by part while the lines are matched, and each
    # version 1 written with what matching derives from it; a trade_id another writer
    # created meanwhile is none of the batch's (its trade lies under a match key the
    # batch did not lock, in no segment the book has read) and is not among those
    # created.
    created: list[Trade] = []
    match_ids = random_ids()
    try:
        async with contextlib.aclosing(book.first_versions(news)) as firsts:
            async for trade in firsts:
                created.append(trade)
                book.reveal(trade)
                # One matcher per line, as one transaction per single submission: its
                # safety net counts the evaluations of one line.
                await Matcher(book, participant, new_match_id=match_ids).submitted(trade)
                await book.write_behind()
        await book.flush()
    except BaseException:
        await book.abandon()
        raise
    return {trade.trade_id: book.as_recorded(book.trades[ref(trade)]) for trade in created}


async def submit_batch(
    pool: asyncpg.Pool, participant: str, submissions: Sequence[TradeSubmission]
) -> list[LineOutcome]:
    """Submit many trades of ``participant`` in one transaction; one outcome per
    submission, in order. A trade_id given twice is created once; its later lines are
    idempotent resubmissions (``exists``) or conflicts, like single submissions."""
    # A submission stands for its own terms (a TradeTerms and its trade_id, which nothing
    # reads off terms): ten thousand TradeTerms fewer to build.
    terms: list[TradeTerms] = list(submissions)
    first: dict[str, int] = {}
    for index, submission in enumerate(submissions):
        first.setdefault(submission.trade_id, index)
    for attempt in range(1, RETRIES + 1):
        try:
            created, stored = await _submit_once(pool, participant, terms, first)
            break
        except asyncpg.UniqueViolationError as e:
            # A trade_id another writer created after the batch found it free and before
            # the batch wrote its version 1 (which waited for that writer to commit):
            # done again, the batch finds it taken and answers that line from it.
            if attempt == RETRIES or e.constraint_name not in NEW_TRADE_KEYS:
                raise
    outcomes: list[LineOutcome] = []
    for index, submission in enumerate(submissions):
        trade_id = submission.trade_id
        if trade_id in created:
            if index == first[trade_id]:
                outcomes.append(LineOutcome("created", created[trade_id]))
                continue
            original, latest = terms[first[trade_id]], created[trade_id]
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


async def _submit_once(pool: asyncpg.Pool, participant: str, terms: Sequence[TradeTerms],
                       first: Mapping[str, int]) -> tuple[dict[str, Trade], dict[str, Trade]]:
    """The batch's transaction: the trades it created and those stored before it, by
    trade_id."""
    async with database.transaction(pool) as conn:
        # The lines of a batch share a few keys: each key made (and its lock id hashed)
        # once, not once a line.
        await bulk.lock_match_keys(conn, (
            MatchKey.of(participant, t) for t in
            {(t.product, t.currency, t.counterparty): t for t in terms}.values()))
        products = {t.product for t in terms}
        stored_rules = await bulk.latest_rules(conn, products)
        stored = await bulk.latest_many(conn, participant, first)
        news = [NewVersion(participant=participant, trade_id=trade_id, version=1,
                           status="unmatched", reason="submitted", terms=terms[index],
                           actor=participant)
                for trade_id, index in first.items() if trade_id not in stored]
        created = await _match_lines(
            conn, participant, news,
            {product: stored_rules.get(product) for product in products})
        missing = [n.trade_id for n in news if n.trade_id not in created]
        if missing:  # created by another writer meanwhile: as if it had been stored
            stored.update(await bulk.latest_many(conn, participant, missing))
    return created, stored
