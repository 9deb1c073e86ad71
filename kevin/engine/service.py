"""Orchestration: each operation is one transaction over the store."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg
import structlog

from kevin.domain.errors import (
    Conflict,
    ExistsWithDifferentFields,
    NotFound,
    VersionConflict,
)
from kevin.domain.matching import TradeRef
from kevin.domain.models import AgedTrade, Trade, TradeSubmission, TradeTerms, differing_fields
from kevin.domain.notes import Note, NotesPage
from kevin.domain.participants import ApiKey, ApiKeyCreated, ParticipantSummary
from kevin.domain.queries import PageQuery
from kevin.domain.rules import Rules, RulesVersion
from kevin.engine import imports
from kevin.engine.ageing import Clock, age_trades, system_clock
from kevin.engine.agreements import Agreements
from kevin.engine.batch import NEW_TRADE_KEYS, LineOutcome, submit_batch, terms_of
from kevin.engine.group_commit import Amend, Answer, GroupCommitter, Submit, SubmitResult, Write
from kevin.engine.imports import ImportOutcome
from kevin.engine.matching import Matcher
from kevin.engine.preconditions import IfMatch, current_for_change, unless_cancelled_by_agreement
from kevin.engine.reports import Reports
from kevin.formats.records import Operation
from kevin.store import database, notes, participants
from kevin.store import matching as match_store
from kevin.store import trades as store
from kevin.store.book import PostgresBook
from kevin.store.matching import MatchKey
from kevin.store.replica import Reads
from kevin.store.trades import NewVersion

__all__ = ["IfMatch", "Page", "SubmitResult", "TradeService"]

log = structlog.get_logger(__name__)

# Whole-transaction retries of a submission whose matching lost a version race.
SUBMIT_RETRIES = 3


@dataclass(frozen=True)
class Page:
    trades: list[AgedTrade]
    next_after: tuple[str, str] | None


PageFetch = Callable[[asyncpg.Connection, tuple[str, str], int], Awaitable[list[Trade]]]


class TradeService:
    """The service's operations, independent of HTTP."""

    def __init__(self, pool: asyncpg.Pool, reads: Reads | None = None,
                 clock: Clock = system_clock, group_commit: bool = True,
                 processes: int = 1) -> None:
        self.pool = pool
        # Concurrent single writes decided and written in one transaction
        # (kevin.engine.group_commit); None: each write is its own transaction.
        # ``processes``: how many serve (``kevin serve --workers``), this one among them.
        self.group = (GroupCommitter(pool, self._alone, processes=processes)
                      if group_commit else None)
        # History, as-of, lists, alleged, reports and feed pages: on a replica when one
        # is configured (kevin.store.replica); writes and transactions use ``pool``.
        self.reads = reads or Reads(pool)
        # "Now" for what depends on it at read time (cut-offs, overdue): injectable, so a
        # test can walk a scenario through a cut-off without waiting for it.
        self.clock = clock
        # Matching profiles and proposals (kevin.engine.agreements).
        self.agreements = Agreements(pool)
        # Read-only reports over the versions (kevin.engine.reports).
        self.reports = Reports(self.reads)

    # --- participants ----------------------------------------------------------------

    async def create_participant(self, name: str, label: str | None = None) -> ApiKeyCreated:
        """A new participant and its first API key (``api_key``: shown once), labelled."""
        async with database.transaction(self.pool) as conn:
            created = await participants.create(conn, name, label)
        log.info("participant created", participant=name, key_id=created.key_id)
        return created

    async def participants(self) -> list[ParticipantSummary]:
        async with database.connection(self.pool) as conn:
            return await participants.every(conn)

    async def participants_and_keys(
            self) -> tuple[list[ParticipantSummary], dict[str, list[ApiKey]]]:
        """Every participant, and the keys of each (the admin's page)."""
        async with database.connection(self.pool) as conn:
            return await participants.every(conn), await participants.every_key(conn)

    async def add_key(self, name: str, label: str | None = None) -> ApiKeyCreated:
        """Another API key for the participant (its others stay valid), labelled."""
        async with database.transaction(self.pool) as conn:
            created = await participants.add_key(conn, name, label)
        log.info("api key issued", participant=name, key_id=created.key_id)
        return created

    async def keys(self, name: str) -> list[ApiKey]:
        async with database.connection(self.pool) as conn:
            return await participants.keys_of(conn, name)

    async def revoke_key(self, name: str, key_id: str) -> ApiKey:
        async with database.transaction(self.pool) as conn:
            revoked = await participants.revoke_key(conn, name, key_id)
        log.info("api key revoked", participant=name, key_id=key_id,
                 revoked_at=revoked.revoked_at)
        return revoked

    async def set_bic(self, name: str, bic: str | None) -> None:
        """Register a participant's BIC (11-character form); None removes it."""
        async with database.transaction(self.pool) as conn:
            await participants.set_bic(conn, name, bic)

    async def bics(self, names: Sequence[str]) -> dict[str, str | None]:
        """The BIC of each named participant (None: none registered)."""
        async with database.connection(self.pool) as conn:
            return {name: await participants.bic_of(conn, name) for name in names}

    async def participants_by_bic(self, bics: Sequence[str]) -> dict[str, str]:
        """BIC (11-character form) → the participant registered with it."""
        async with database.connection(self.pool) as conn:
            return await participants.by_bic(conn, list(bics))

    # --- notes -------------------------------------------------------------------------

    async def add_note(self, participant: str, trade_id: str, text: str,
                       key_hash: bytes | None) -> Note:
        """A note on the participant's trade, written with the key of hash ``key_hash``
        (None: the admin token). 404 when the participant has no such trade."""
        async with database.transaction(self.pool) as conn:
            note = await notes.add(conn, participant, trade_id, text, key_hash)
        if note is None:
            raise NotFound(f"no trade {trade_id}", {"trade_id": trade_id})
        log.info("trade note written", participant=participant, trade_id=trade_id,
                 note_id=note.note_id, author=note.author)
        return note

    async def notes(self, participant: str, trade_id: str, after: int = 0,
                    limit: int = 100) -> NotesPage:
        """A page of the notes on the participant's trade (after note ``after``, oldest
        first); 404 when it has no such trade. Read on the primary: a note just written
        is always there."""
        async with database.connection(self.pool) as conn:
            await self._trade_exists(conn, participant, trade_id)
            return await notes.page(conn, participant, trade_id, after, limit)

    async def newest_notes(self, participant: str, trade_id: str,
                           limit: int) -> tuple[list[Note], int]:
        """The ``limit`` newest notes on the participant's trade, oldest first, and how
        many it has in all; 404 when it has no such trade."""
        async with database.connection(self.pool) as conn:
            await self._trade_exists(conn, participant, trade_id)
            shown = await notes.newest(conn, participant, trade_id, limit)
            if len(shown) < limit:
                return shown, len(shown)
            summary = (await notes.summaries(conn, [(participant, trade_id)]))[
                (participant, trade_id)]
            return shown, summary.count

    @staticmethod
    async def _trade_exists(conn: asyncpg.Connection, participant: str, trade_id: str) -> None:
        if await store.latest(conn, participant, trade_id) is None:
            raise NotFound(f"no trade {trade_id}", {"trade_id": trade_id})

    async def participant_for_key(self, api_key: str) -> str | None:
        async with database.connection(self.pool) as conn:
            return await participants.for_key(conn, api_key)

    # --- writes ------------------------------------------------------------------------

    async def submit(
        self, participant: str, submission: TradeSubmission
    ) -> tuple[SubmitResult, Trade]:
        """Create a trade, or recognise an idempotent resubmission of it."""
        if self.group is not None:
            return await self.group.submit(participant, submission)
        return await self._submit_alone(participant, submission)

    async def amend(
        self, participant: str, trade_id: str, if_match: IfMatch, terms: TradeTerms
    ) -> Trade:
        if self.group is not None:
            return await self.group.amend(participant, trade_id, if_match, terms)
        return await self._amend_alone(participant, trade_id, if_match, terms)

    async def cancel(self, participant: str, trade_id: str, if_match: IfMatch) -> Trade:
        if self.group is not None:
            return await self.group.cancel(participant, trade_id, if_match)
        return await self._cancel_alone(participant, trade_id, if_match)

    async def _alone(self, write: Write) -> Answer:
        """One write in its own transaction (the single path)."""
        if isinstance(write, Submit):
            return await self._submit_alone(write.participant, write.submission)
        if isinstance(write, Amend):
            return await self._amend_alone(write.participant, write.trade_id, write.if_match,
                                           write.terms)
        return await self._cancel_alone(write.participant, write.trade_id, write.if_match)

    async def _submit_alone(
        self, participant: str, submission: TradeSubmission
    ) -> tuple[SubmitResult, Trade]:
        terms = terms_of(submission)  # validated with the submission: not again
        new = NewVersion(
            participant=participant, trade_id=submission.trade_id, version=1,
            status="unmatched", reason="submitted", terms=terms, actor=participant,
        )
        for attempt in range(SUBMIT_RETRIES + 1):
            try:
                async with database.transaction(self.pool) as conn:
                    # The match key's lock first: then the candidate search sees every
                    # opposite side committed before us, and none can commit unseen
                    # while we decide. The product's rules come with it, and when the
                    # trade is first submitted unless its trade_id is taken (one round
                    # trip, nothing written).
                    rules, profile, first = await match_store.lock_match_key_and_rules(
                        conn, MatchKey.of(participant, terms), (participant, new.trade_id))
                    if first is not None:
                        # No savepoint per evaluation (two round trips each): a lost
                        # version race, which the key lock makes all but impossible,
                        # rolls back this whole submission, retried below.
                        book = PostgresBook(conn, rules={terms.product: rules},
                                            savepoints=False)
                        # Version 1 is written with what matching derives from it (or
                        # alone, at the flush): the transaction takes no xid before.
                        created = book.write_first(new.first_submitted(first))
                        book.know_profile(created, profile)
                        await Matcher(book, participant).submitted(created)
                        await book.flush()
                        latest = await book.latest((participant, new.trade_id))
                        assert latest is not None
                        return "created", latest
                    stored = await store.latest(conn, participant, submission.trade_id)
                break
            except VersionConflict:
                if attempt == SUBMIT_RETRIES:
                    raise
                log.warning("submission lost a version race; retrying it whole",
                            trade_id=submission.trade_id, attempt=attempt)
            except asyncpg.UniqueViolationError as e:
                # Its trade_id created by another writer after we found it free, before
                # we wrote version 1 (which waited for that writer to commit): done
                # again, the submission finds it taken and answers from it.
                if attempt == SUBMIT_RETRIES or e.constraint_name not in NEW_TRADE_KEYS:
                    raise
                log.info("submission's trade_id created meanwhile; retrying it whole",
                         trade_id=submission.trade_id, attempt=attempt)
        assert stored is not None  # version 1 exists and a trade always has a latest row
        fields = differing_fields(stored.terms(), terms)
        if fields:
            raise ExistsWithDifferentFields(fields)
        return "exists", stored

    async def submit_batch(self, participant: str,
                           submissions: Sequence[TradeSubmission]) -> list[LineOutcome]:
        """Submit many trades in one transaction (kevin.engine.batch)."""
        return await submit_batch(self.pool, participant, submissions)

    async def import_records(
        self, participant: str, records: Sequence[tuple[Operation, TradeSubmission]]
    ) -> list[ImportOutcome]:
        """Records of an imported file, each like a batch line (kevin.engine.imports)."""
        return await imports.import_records(self, participant, records)

    async def _amend_alone(
        self, participant: str, trade_id: str, if_match: IfMatch, terms: TradeTerms
    ) -> Trade:
        async with database.transaction(self.pool) as conn:
            current = await self._current_for_change(conn, participant, trade_id, if_match)
            # Both the key it leaves and the key it joins; then read it again under them.
            await match_store.lock_match_keys(conn, [MatchKey.of(participant, current.terms()),
                                                     MatchKey.of(participant, terms)])
            current = await self._current_for_change(conn, participant, trade_id, if_match)
            return await Matcher(PostgresBook(conn), participant).amend(current, terms)

    async def _cancel_alone(self, participant: str, trade_id: str, if_match: IfMatch
                            ) -> Trade:
        async with database.transaction(self.pool) as conn:
            current = await self._current_for_change(conn, participant, trade_id, if_match)
            await match_store.lock_match_keys(conn, [MatchKey.of(participant, current.terms())])
            current = await self._current_for_change(conn, participant, trade_id, if_match)
            if current.status == "matched":
                await unless_cancelled_by_agreement(conn, current)
            return await Matcher(PostgresBook(conn), participant).cancel(current)

    @staticmethod
    async def _current_for_change(
        conn: asyncpg.Connection, participant: str, trade_id: str, if_match: IfMatch
    ) -> Trade:
        return current_for_change(await store.latest(conn, participant, trade_id), trade_id,
                                  if_match)

    # --- matching: rules, operator overrides, alleged -------------------------------------

    async def put_rules(self, product: str, rules: Rules, actor: str) -> RulesVersion:
        async with database.transaction(self.pool) as conn:
            return await match_store.append_rules(conn, product, rules, actor)

    async def get_rules(self, product: str, as_of: datetime | None = None) -> RulesVersion:
        async with database.connection(self.pool) as conn:
            if as_of is None:
                found = await match_store.latest_rules(conn, product)
            else:
                found = await match_store.rules_as_of(conn, product, as_of)
        if found is None:
            suffix = f" as of {as_of.isoformat()}" if as_of else ""
            raise NotFound(f"no rules for {product}{suffix}: it matches exactly on every field",
                           {"product": product})
        return found

    async def force_match(
        self, legs: Sequence[TradeRef], comment: str | None, actor: str
    ) -> tuple[Trade, Trade]:
        """Match two live, opposite trades whatever their terms (an operator's decision)."""
        async with database.transaction(self.pool) as conn:
            found = [await self._leg(conn, leg) for leg in legs]
            locked = {MatchKey.of(t.participant, t.terms()) for t in found}
            await match_store.lock_match_keys(conn, locked)
            first, second = [await self._leg(conn, leg) for leg in legs]
            # Amended into another key between the first read and the lock: that key is
            # not ours (and taking it now could deadlock), so refuse rather than race.
            if {MatchKey.of(t.participant, t.terms()) for t in (first, second)} - locked:
                raise Conflict("a leg was amended meanwhile; try again",
                               {"legs": [{"participant": t.participant, "trade_id": t.trade_id,
                                          "version": t.version} for t in (first, second)]})
            return await Matcher(PostgresBook(conn), actor).force(first, second, comment)

    async def break_match(self, match_id: UUID, comment: str | None, actor: str) -> list[Trade]:
        """Break a live match; the pair is never matched automatically again."""
        async with database.transaction(self.pool) as conn:
            legs = await match_store.live_match(conn, match_id)
            await match_store.lock_match_keys(
                conn, [MatchKey.of(t.participant, t.terms()) for t in legs])
            legs = await match_store.live_match(conn, match_id)  # again, under the locks
            if len(legs) != 2:
                raise NotFound(f"no live match {match_id}")
            return await Matcher(PostgresBook(conn), actor).break_match(legs, comment)

    @staticmethod
    async def _leg(conn: asyncpg.Connection, leg: TradeRef) -> Trade:
        found = await store.latest(conn, *leg)
        if found is None:
            raise NotFound(f"no trade {leg[1]} of {leg[0]}",
                           {"participant": leg[0], "trade_id": leg[1]})
        return found

    async def alleged(self, participant: str, product: str | None,
                      after: tuple[str, str], limit: int,
                      overdue: bool | None = None) -> Page:
        """Trades naming ``participant`` as counterparty, not matched, with their cut-offs
        now; ``overdue`` keeps only those that are (or are not) overdue."""
        now = self.clock()

        async def fetch(conn: asyncpg.Connection, start: tuple[str, str],
                        count: int) -> list[Trade]:
            return await match_store.alleged(conn, participant, product, start, count)

        return await self._aged_page(fetch, after, limit, now, None, overdue)

    # --- reads -------------------------------------------------------------------------

    async def current(self, participant: str, trade_id: str) -> Trade:
        """The latest version as the primary has it: for deciding a write (never from a
        replica, which may be behind)."""
        async with database.connection(self.pool) as conn:
            trade = await store.latest(conn, participant, trade_id)
        if trade is None:
            raise NotFound(f"no trade {trade_id}")
        return trade

    async def get(self, participant: str, trade_id: str, as_of: datetime | None = None,
                  seen_version: int | None = None) -> Trade:
        """The latest version, or the one current ``as_of``. ``seen_version``: a version
        the caller has seen (If-None-Match); the answer is never older than it."""
        if as_of is None:
            trade = await self.reads.read(
                lambda conn, _: store.latest(conn, participant, trade_id),
                stale=lambda t: t is None or t.version < (seen_version or 0))
        else:
            trade = await self.reads.read(
                lambda conn, _: store.as_of(conn, participant, trade_id, as_of),
                stale=lambda t: t is None, as_of=as_of)
        if trade is None:
            suffix = f" as of {as_of.isoformat()}" if as_of else ""
            raise NotFound(f"no trade {trade_id}{suffix}")
        return trade

    async def read(self, participant: str, trade_id: str, as_of: datetime | None = None,
                   seen_version: int | None = None) -> AgedTrade:
        """A trade as ``GET /v1/trades/{id}`` returns it: with its cut-off and whether it
        is overdue, now or at ``as_of`` (the profiles and rules in force then decide)."""
        trade = await self.get(participant, trade_id, as_of, seen_version)
        instant = self.clock() if as_of is None else as_of
        aged = await self.reads.read(
            lambda conn, _: age_trades(conn, [trade], instant, as_of), as_of=as_of)
        return aged[0]

    async def holders(self, trade_id: str, participant: str | None = None) -> list[str]:
        """The participants that have a trade of this id (``participant`` alone, if
        given), by name. None found on a replica is asked of the primary: a trade just
        created is always found."""
        return await self.reads.read(
            lambda conn, _: store.holders(conn, trade_id, participant),
            stale=lambda found: not found)

    async def naming(self, participant: str, trade_id: str) -> list[Trade]:
        """Other participants' trades of id ``trade_id`` that name ``participant`` as
        counterparty and are live (as the alleged list and a matched trade's own match
        show them; a cancelled one is no business of the counterparty's)."""
        found = []
        for holder in await self.holders(trade_id):
            if holder == participant:
                continue
            theirs = await self.get(holder, trade_id)
            if theirs.counterparty == participant and theirs.status != "cancelled":
                found.append(theirs)
        return found

    async def versions(self, participant: str, trade_id: str,
                       seen_version: int | None = None) -> list[Trade]:
        found = await self.reads.read(
            lambda conn, _: store.versions(conn, participant, trade_id),
            stale=lambda f: not f or max(t.version for t in f) < (seen_version or 0))
        if not found:
            raise NotFound(f"no trade {trade_id}")
        return found

    async def list(self, query: PageQuery, overdue: bool | None = None) -> Page:
        """A page of trades with their cut-offs, now or at ``query.as_of``; ``overdue``
        keeps only those that are (or are not) overdue then."""
        instant = self.clock() if query.as_of is None else query.as_of

        async def fetch(conn: asyncpg.Connection, start: tuple[str, str],
                        count: int) -> list[Trade]:
            return await store.page(conn, dataclasses.replace(query, after=start,
                                                              limit=count))

        return await self._aged_page(fetch, query.after, query.limit, instant, query.as_of,
                                     overdue)

    async def _aged_page(self, fetch: PageFetch, after: tuple[str, str], limit: int,
                         instant: datetime, as_of: datetime | None,
                         overdue: bool | None) -> Page:
        """Up to ``limit`` trades after ``after``, aged at ``instant``. With an
        ``overdue`` filter, overdue-ness is computed (not stored), so the store's pages
        are read on until the page is full or the trades run out."""

        async def collect(conn: asyncpg.Connection, _: datetime | None) -> list[AgedTrade]:
            kept: list[AgedTrade] = []
            start = after
            while True:
                found = await fetch(conn, start, limit + 1)
                for trade in await age_trades(conn, found, instant, as_of):
                    if overdue is None or trade.overdue == overdue:
                        kept.append(trade)
                if len(kept) > limit or len(found) <= limit:
                    return kept
                start = (found[-1].participant, found[-1].trade_id)

        kept = await self.reads.read(collect, as_of=as_of)
        more = len(kept) > limit
        kept = kept[:limit]
        return Page(kept, (kept[-1].participant, kept[-1].trade_id) if more else None)

