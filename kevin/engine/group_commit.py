"""Group commit: single writes (``POST /v1/trades``, ``PUT`` and ``DELETE
/v1/trades/{id}``) that arrive together are decided and written in one transaction.

Each write is queued with a future; the process takes what is queued (up to MAX_GROUP,
in arrival order) and runs it as one *group*, in a task of its own. Nothing waits for a
window to fill: a write arriving when no group is in flight starts a group at once (a
group of one runs on the single path, kevin.engine.service, which is the fastest for
one), and the writes that arrive while a group's transaction runs form the next group
when it ends. A write that has waited MAX_WAIT for a slow group starts another beside
it (up to MAX_IN_FLIGHT): the cap on the latency grouping adds. Under light load
(LIGHT_LOAD) submissions that touch no key or trade of the one group in flight start a
second beside it sooner (LIGHT_WAIT): there, waiting for the group in flight is most of a
write's latency and grouping saves little.

A group is one transaction over the batch's book (kevin.store.batch_book): every match
key of the group locked in one statement (ascending, as every writer takes them: the
locks stay the arbiter between processes), every new trade's first submission read in
one statement (the database's clock, and whether its trade_id is taken), then each
write decided in arrival order by the one Matcher exactly as alone — a submission over
the book as the writes before it left it, a change behind the same preconditions as
alone (kevin.engine.preconditions) — and every version, each new trade's version 1
among them, written in one statement at the end: the transaction writes nothing before
it, so it holds back no other writer's feed rows (kevin.feed.sequencer) while it reads
and matches. Each write's answer is what it was right after its own decision (a later
write of the group may change the trade again; alone it would not have seen that),
given only after the commit. A write the preconditions refuse (404, 409, 412, 428) is
refused alone and changes nothing. If the transaction fails as a whole (a lost race, a
trade_id another writer created after the group read it free, a trade moved to a key
the group did not lock, anything unexpected), each write of the group runs again
alone, in order, so a bad one fails only itself. A client that goes away changes
nothing for the others: the group runs in its own task, not in any request; a write
still queued when its client went away is dropped.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import asyncpg
import structlog

from kevin.domain.errors import DatabaseUnavailable, ExistsWithDifferentFields, KevinError
from kevin.domain.matching import TradeRef
from kevin.domain.models import Trade, TradeSubmission, TradeTerms, differing_fields
from kevin.domain.versions import NewVersion, written
from kevin.engine.batch import terms_of
from kevin.engine.matching import Matcher
from kevin.engine.preconditions import IfMatch, current_for_change, unless_cancelled_by_agreement
from kevin.store import bulk, database
from kevin.store.batch_book import BatchBook
from kevin.store.book import UNWRITTEN
from kevin.store.matching import MatchKey

log = structlog.get_logger(__name__)

# Writes in one group at most: bounds a group's transaction, and so how long the
# writes arriving meanwhile wait for it.
MAX_GROUP = 64
# Seconds a write waits for the group in flight before another group starts beside it,
# and how many groups may run at once (each holds a pooled connection).
MAX_WAIT = 0.025
MAX_IN_FLIGHT = 4
# Light load: fewer writes than LIGHT_LOAD in flight and queued together on the server,
# counted as this process's times the processes serving (``kevin serve --workers``: each
# sees its share of the clients, and splitting groups costs CPU the processes share;
# docs/performance.md, change 56). Grouping then saves little (the next group would be
# as small) and waiting for the group in flight is most of a write's latency, so
# submissions that touch no match key or trade of the one group in flight (they would
# only wait for its locks) start a second group beside it after LIGHT_WAIT x max_wait
# (change 26): 0.5 ms, which still lets writes sent together go as one group, where
# 2.5 ms held most lone writes for that long and let fewer go alone (change 54). One
# beside it at most: more would split a busy server's groups when its clients are slow
# to send.
LIGHT_LOAD = 8
LIGHT_WAIT = 0.02

SubmitResult = Literal["created", "exists"]


@dataclass(frozen=True)
class Submit:
    participant: str
    submission: TradeSubmission
    terms: TradeTerms

    @property
    def trade(self) -> TradeRef:
        return self.participant, self.submission.trade_id


@dataclass(frozen=True)
class Amend:
    participant: str
    trade_id: str
    if_match: IfMatch
    terms: TradeTerms

    @property
    def trade(self) -> TradeRef:
        return self.participant, self.trade_id


@dataclass(frozen=True)
class Cancel:
    participant: str
    trade_id: str
    if_match: IfMatch

    @property
    def trade(self) -> TradeRef:
        return self.participant, self.trade_id


Write = Submit | Amend | Cancel
Answer = tuple[SubmitResult, Trade] | Trade
# A write's outcome: its answer, or the error it gets (raised in its request).
Outcome = Answer | BaseException
Alone = Callable[[Write], Awaitable[Answer]]


class GroupCommitter:
    """Queues single writes and runs them in groups (see the module docstring).
    ``alone`` runs one write on the single path. ``observers`` are told each group's
    size (the app's metrics).

    ``max_wait``: how long a write may wait for the group in flight before another
    group starts beside it (up to ``max_in_flight`` groups), the cap on the latency
    grouping adds when a transaction is slow. ``processes``: how many processes serve
    on the database (``kevin serve --workers``), for LIGHT_LOAD."""

    def __init__(self, pool: asyncpg.Pool, alone: Alone, max_group: int = MAX_GROUP,
                 max_wait: float = MAX_WAIT, max_in_flight: int = MAX_IN_FLIGHT,
                 processes: int = 1) -> None:
        self.pool = pool
        self.alone = alone
        self.max_group = max_group
        self.max_wait = max_wait
        self.max_in_flight = max_in_flight
        self.processes = processes
        self.observers: list[Callable[[int], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: deque[_Queued] = deque()
        self._in_flight: dict[asyncio.Task[None], _InFlight] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = 0.0  # the event loop's time self._timer fires at

    @property
    def queued(self) -> int:
        """Writes waiting for a group."""
        return len(self._queue)

    async def submit(self, participant: str,
                     submission: TradeSubmission) -> tuple[SubmitResult, Trade]:
        answer = await self._run(Submit(participant, submission, terms_of(submission)))
        assert isinstance(answer, tuple)
        return answer

    async def amend(self, participant: str, trade_id: str, if_match: IfMatch,
                    terms: TradeTerms) -> Trade:
        answer = await self._run(Amend(participant, trade_id, if_match, terms))
        assert isinstance(answer, Trade)
        return answer

    async def cancel(self, participant: str, trade_id: str, if_match: IfMatch) -> Trade:
        answer = await self._run(Cancel(participant, trade_id, if_match))
        assert isinstance(answer, Trade)
        return answer

    async def _run(self, write: Write) -> Answer:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a service reused under another event loop (tests)
            self._loop, self._queue, self._in_flight, self._timer = loop, deque(), {}, None
        future: asyncio.Future[Answer] = loop.create_future()
        self._queue.append(_Queued(write, future, loop.time()))
        self._start_groups()
        # Cancelled (the client went away), this cancels only the future: a write
        # still queued is dropped, one in a group runs on with its group.
        return await future

    def _start_groups(self) -> None:
        """Start a group now if none is in flight; beside the groups in flight (up to
        ``max_in_flight``) once the oldest write queued has waited ``max_wait``, or, under
        light load and beside a single group, LIGHT_WAIT of that with the writes that
        group does not touch (``_due``); else wake up when that is due."""
        assert self._loop is not None
        while self._queue and self._queue[0].future.done():
            self._queue.popleft()  # its client went away while it was queued
        while self._queue:
            if not self._in_flight:
                group = self._take(None)
            elif len(self._in_flight) >= self.max_in_flight:
                break
            elif self._loop.time() - self._queue[0].since >= self.max_wait:
                group = self._take(None)
            elif len(self._in_flight) == 1 and self._light() \
                    and self._loop.time() - self._queue[0].since >= self.max_wait * LIGHT_WAIT:
                group = self._take(self._touched())
                if not group:
                    break
            else:
                break
            if group:
                task = self._loop.create_task(self._commit(group), name="group-commit")
                self._in_flight[task] = _InFlight(len(group), _touches(group))
                task.add_done_callback(self._finished)
        if self._queue and len(self._in_flight) < self.max_in_flight:
            due = self._due()
            if self._timer is not None and due < self._timer_due:
                self._timer.cancel()  # the load went light: due sooner than planned
                self._timer = None
            if self._timer is None:
                self._timer, self._timer_due = self._loop.call_at(due, self._timer_fired), due

    def _take(self, touched: set[object] | None) -> list[_Queued]:
        """The next group from the head of the queue, in arrival order. With ``touched``
        (what the groups in flight touch), only the submissions before the first write
        that may touch any of it: that group's decisions cannot depend on theirs, nor
        wait for their locks."""
        group: list[_Queued] = []
        while self._queue and len(group) < self.max_group:
            queued = self._queue[0]
            if touched is not None and not queued.future.done():
                touches = _touches([queued])
                if touches is None or not touches.isdisjoint(touched):
                    break
            self._queue.popleft()
            if not queued.future.done():
                group.append(queued)
        return group

    def _light(self) -> bool:
        """Fewer than LIGHT_LOAD writes in flight and queued together, on the server."""
        mine = len(self._queue) + sum(g.size for g in self._in_flight.values())
        return mine * self.processes < LIGHT_LOAD

    def _touched(self) -> set[object] | None:
        """The match keys and trades the groups in flight touch; None if unknown (a
        change's current key is known only once read)."""
        touched: set[object] = set()
        for in_flight in self._in_flight.values():
            if in_flight.touches is None:
                return None
            touched |= in_flight.touches
        return touched

    def _due(self) -> float:
        """When the oldest write queued may start a group beside those in flight."""
        head = self._queue[0]
        if len(self._in_flight) == 1 and self._light():
            touched, touches = self._touched(), _touches([head])
            if touched is not None and touches is not None and touches.isdisjoint(touched):
                return head.since + self.max_wait * LIGHT_WAIT
        return head.since + self.max_wait

    def _timer_fired(self) -> None:
        self._timer = None
        self._start_groups()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        if self._loop is task.get_loop() and not self._loop.is_closed():
            self._start_groups()

    async def _commit(self, group: Sequence[_Queued]) -> None:
        try:
            for observe in self.observers:
                observe(len(group))
            outcomes = await self._decide(group)
        except BaseException:  # cancelled (the loop shuts down): no request waits for ever
            for queued in group:
                queued.future.cancel()
            raise
        for queued, outcome in zip(group, outcomes, strict=True):
            if queued.future.done():
                continue
            if isinstance(outcome, BaseException):
                queued.future.set_exception(outcome)
            else:
                queued.future.set_result(outcome)

    async def _decide(self, group: Sequence[_Queued]) -> list[Outcome]:
        writes = [queued.write for queued in group]
        if len(writes) == 1:
            outcome = await self._alone(writes[0])
            if isinstance(outcome, DatabaseUnavailable):
                self._unavailable_to_queued()
            return [outcome]
        try:
            return await decide_group(self.pool, writes)
        except DatabaseUnavailable:
            # Maybe even during the commit: whether it happened is unknown, as it would
            # be alone. Running the writes again could answer "exists" or 412 for what
            # this group did write; each gets the 503 instead.
            self._unavailable_to_queued()
            return [DatabaseUnavailable() for _ in writes]
        except Exception:
            log.warning("group commit failed as a whole; each write alone",
                        size=len(writes), exc_info=True)
            return [await self._alone(write) for write in writes]

    def _unavailable_to_queued(self) -> None:
        """The database has not answered for a statement's timeout (or cannot be
        reached): the writes that have been queued for ``max_wait`` — every group slot
        taken, by groups stuck like this one — get the 503 now rather than wait as long
        again to learn the same. Younger ones (a slot was free: only this group's own
        keys may be stuck) go on."""
        assert self._loop is not None
        now = self._loop.time()
        waiting: deque[_Queued] = deque()
        for queued in self._queue:
            if queued.future.done():
                continue
            if now - queued.since >= self.max_wait:
                queued.future.set_exception(DatabaseUnavailable())
            else:
                waiting.append(queued)
        self._queue = waiting

    async def _alone(self, write: Write) -> Outcome:
        try:
            return await self.alone(write)
        except Exception as error:  # its own answer, raised in its own request
            return error


@dataclass(frozen=True)
class _Queued:
    write: Write
    future: asyncio.Future[Answer]
    since: float  # the event loop's time it was queued at


@dataclass(frozen=True)
class _InFlight:
    size: int  # writes
    touches: set[object] | None  # _touches of its writes


def _touches(writes: Iterable[_Queued]) -> set[object] | None:
    """The match keys and trades ``writes`` may touch, if all are submissions (a change
    may touch its trade's current key, known only once read: None)."""
    touches: set[object] = set()
    for queued in writes:
        write = queued.write
        if not isinstance(write, Submit):
            return None
        touches.add(MatchKey.of(write.participant, write.terms))
        touches.add(write.trade)
    return touches


class _KeyMoved(Exception):
    """A trade changed meanwhile to a match key the group did not lock."""


async def decide_group(pool: asyncpg.Pool, writes: Sequence[Write]) -> list[Outcome]:
    """Decide and write ``writes`` in one transaction, in order; one outcome each (a
    refusal is a KevinError). Raises when the transaction fails as a whole."""
    async with database.transaction(pool) as conn:
        before = await _latest(conn, [w.trade for w in writes if not isinstance(w, Submit)])
        keys = _match_keys(writes, before)
        # Each pair the group may match in has one of its writers in it: their profiles.
        stored_rules, profiles = await bulk.open_group(conn, keys,
                                                       {w.participant for w in writes})
        firsts: dict[TradeRef, NewVersion] = {}
        for write in writes:
            if isinstance(write, Submit) and write.trade not in firsts:
                firsts[write.trade] = NewVersion(
                    participant=write.participant, trade_id=write.submission.trade_id,
                    version=1, status="unmatched", reason="submitted", terms=write.terms,
                    actor=write.participant)
        # When each new trade is first submitted, which trade_ids are taken already, and
        # the broken pairs with the new trades (one round trip, nothing written), read
        # under the locks: an operator's break holds them while it records one.
        submitted, broken = await bulk.first_submissions_and_broken(
            conn, list(firsts.values()), {name for key in keys for name in key.participants})
        news = [new.first_submitted(submitted[trade]) for trade, new in firsts.items()
                if trade in submitted]
        created = {(new.participant, new.trade_id): written(new, new.first_submitted_at,
                                                            UNWRITTEN) for new in news}
        book = BatchBook(conn, {key.product: stored_rules.get(key.product) for key in keys},
                         broken, profiles)
        book.hide(created.values())
        # Version 1 of each goes in with everything else at the end (book.flush): the
        # transaction takes no xid before, so the feed sequencer is held back by it only
        # for that statement and the commit, not for the group's reads and matching.
        book.write_first(news)
        await book.prefetch(list(created.values()), own_side=False)
        decider = _Decider(conn, book, keys, created)
        outcomes = [await decider.decide(write) for write in writes]
        await book.flush()
    return [_as_recorded(outcome, book) for outcome in outcomes]


class _Decider:
    """Decides the writes of one group, one after the other, over its book."""

    def __init__(self, conn: asyncpg.Connection, book: BatchBook, keys: set[MatchKey],
                 created: dict[TradeRef, Trade]) -> None:
        self.conn = conn
        self.book = book
        self.keys = keys
        self.unrevealed = dict(created)  # new, not yet reached in arrival order

    async def decide(self, write: Write) -> Outcome:
        if isinstance(write, Submit):
            return await self._submit(write)
        try:
            current = current_for_change(await self.book.latest(write.trade), write.trade_id,
                                         write.if_match)
            if isinstance(write, Cancel) and current.status == "matched":
                await unless_cancelled_by_agreement(self.conn, current)
        except KevinError as refused:  # refused before anything was written for it
            return refused
        if MatchKey.of(write.participant, current.terms()) not in self.keys:
            raise _KeyMoved(write.trade)
        matcher = Matcher(self.book, write.participant)
        if isinstance(write, Amend):
            return await matcher.amend(current, write.terms)
        return await matcher.cancel(current)

    async def _submit(self, write: Submit) -> Outcome:
        new = self.unrevealed.pop(write.trade, None)
        if new is not None:
            self.book.reveal(new)
            # One matcher per write, as one transaction per single submission.
            return "created", await Matcher(self.book, write.participant).submitted(new)
        stored = await self.book.latest(write.trade)
        assert stored is not None  # not new to the group: its trade_id was taken
        fields = differing_fields(stored.terms(), write.terms)
        if fields:
            return ExistsWithDifferentFields(fields)
        return "exists", stored


async def _latest(conn: asyncpg.Connection,
                  trades: Iterable[TradeRef]) -> dict[TradeRef, Trade]:
    """The latest version of each trade that exists (one statement per participant)."""
    by_participant: dict[str, set[str]] = {}
    for participant, trade_id in trades:
        by_participant.setdefault(participant, set()).add(trade_id)
    found: dict[TradeRef, Trade] = {}
    for participant, trade_ids in by_participant.items():
        for trade_id, trade in (await bulk.latest_many(conn, participant, trade_ids)).items():
            found[(participant, trade_id)] = trade
    return found


def _match_keys(writes: Sequence[Write], before: dict[TradeRef, Trade]) -> set[MatchKey]:
    """Every key the group may touch: each submission's and amendment's terms, and the
    key each changed trade is in as read before the locks (checked again under them)."""
    keys: set[MatchKey] = set()
    for write in writes:
        if isinstance(write, Submit | Amend):
            keys.add(MatchKey.of(write.participant, write.terms))
        found = None if isinstance(write, Submit) else before.get(write.trade)
        if found is not None:
            keys.add(MatchKey.of(write.participant, found.terms()))
    return keys


def _as_recorded(outcome: Outcome, book: BatchBook) -> Outcome:
    """The answer with the recorded_at the database gave its version (BatchBook.as_recorded:
    a version written by the group's matching is held with its predecessor's)."""
    if isinstance(outcome, BaseException):
        return outcome
    if isinstance(outcome, tuple):
        return outcome[0], book.as_recorded(outcome[1])
    return book.as_recorded(outcome)
