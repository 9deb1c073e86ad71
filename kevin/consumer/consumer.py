"""Following Kevin's feed into the consumer's own PostgreSQL, exactly once per version.

Kevin is the system of record; the consumer's table is a system of reference. Every step
is idempotent on (participant, trade_id, version), so a retry after any crash is safe:

* each update is applied in ONE transaction of the consumer's database together with the
  feed checkpoint (and with the user's callback, which gets that transaction's
  connection), so a crash either keeps all three or none — nothing lost, nothing doubled;
* a resumed stream starts after the checkpoint (``Last-Event-ID``), and a duplicate
  delivery hits the primary key and changes nothing;
* versions that never arrived are found by a gap query (lead(), queries.GAPS) and
  fetched from Kevin (``GET /v1/trades/{id}/versions``) — read Kevin first when in doubt.

Two strategies for out-of-order updates:

``drop-older``  apply a version only if it is newer than the one held; older ones are
                dropped (the callback sees each trade's versions strictly increasing, maybe
                with holes).
``contiguous``  store every version, but move ``latest`` (and call back) only along an
                unbroken run 1, 2, 3, …; a later version waits until the ones before it
                arrive, so every transition plays out in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import asyncpg
import structlog

from kevin import jsoncodec
from kevin.consumer import queries as q
from kevin.consumer.sse import events

log = structlog.get_logger(__name__)

Strategy = Literal["drop-older", "contiguous"]
STRATEGIES: tuple[Strategy, ...] = ("drop-older", "contiguous")


@dataclass(frozen=True)
class Update:
    """One trade version as the consumer applies it (``seq`` None when backfilled)."""

    participant: str
    trade_id: str
    version: int
    seq: int | None
    event: str
    status: str
    trade: dict[str, Any]

    @classmethod
    def from_feed(cls, body: dict[str, Any]) -> Update:
        return cls(participant=body["participant"], trade_id=body["trade_id"],
                   version=body["version"], seq=body["seq"], event=body["event"],
                   status=body["status"], trade=body["trade"])

    @classmethod
    def from_trade(cls, trade: dict[str, Any]) -> Update:
        return cls(participant=trade["participant"], trade_id=trade["trade_id"],
                   version=trade["version"], seq=None, event=trade["reason"],
                   status=trade["status"], trade=trade)


@dataclass(frozen=True)
class ProposalEvent:
    """A proposal version on the feed (event ``proposal``): ``participant`` is whose feed
    carried it. Delivery is at-least-once: apply idempotently on (proposal_id, version)."""

    participant: str
    proposal_id: str
    version: int
    state: str
    seq: int
    proposal: dict[str, Any]

    @classmethod
    def from_feed(cls, body: dict[str, Any]) -> ProposalEvent:
        return cls(participant=body["participant"], proposal_id=body["proposal_id"],
                   version=body["version"], state=body["state"], seq=body["seq"],
                   proposal=body["proposal"])


@dataclass(frozen=True)
class OverdueEvent:
    """An overdue notice on the feed (event ``overdue``): the trade ``trade_participant``
    /``trade_id`` passed its cut-off unmatched or mismatched. ``participant`` is whose feed
    carried it (the trade's participant, or its counterparty, for whom it is alleged).
    Delivery is at-least-once: apply idempotently on ``notice_id``."""

    participant: str
    notice_id: int
    seq: int
    body: dict[str, Any]  # the whole update as the feed carried it

    @classmethod
    def from_feed(cls, body: dict[str, Any]) -> OverdueEvent:
        return cls(participant=body["participant"], notice_id=body["notice_id"],
                   seq=body["seq"], body=body)


# User code, run inside the applying transaction: write your own effects with `conn` and
# they commit (or roll back) together with the update and the checkpoint.
Callback = Callable[[asyncpg.Connection, Update], Awaitable[None]]
# The same for proposals; they touch no mirror table, only the checkpoint.
ProposalCallback = Callable[[asyncpg.Connection, ProposalEvent], Awaitable[None]]
OverdueCallback = Callable[[asyncpg.Connection, OverdueEvent], Awaitable[None]]


class ConsumerError(Exception):
    """The consumer cannot go on (bad key, bad arguments): retrying will not help."""


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=jsoncodec.dumps_str, decoder=jsoncodec.loads,
                              schema="pg_catalog")


class Consumer:
    """Follows ``GET /v1/feed`` of a Kevin server into a PostgreSQL database.

    ``name`` keys the checkpoint, so several consumers can share one database.
    """

    def __init__(
        self, *, url: str, api_key: str, pool: asyncpg.Pool, strategy: Strategy,
        callback: Callback | None = None, name: str = "default",
        max_backoff: float = 30.0, idle_timeout: float = 60.0,
        on_proposal: ProposalCallback | None = None,
        on_overdue: OverdueCallback | None = None,
    ) -> None:
        if strategy not in STRATEGIES:
            raise ConsumerError(f"unknown strategy {strategy!r}: use {' or '.join(STRATEGIES)}")
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.pool = pool
        self.strategy = strategy
        self.callback = callback
        self.on_proposal = on_proposal
        self.on_overdue = on_overdue
        self.name = name
        self.max_backoff = max_backoff
        self.idle_timeout = idle_timeout  # no byte (not even a heartbeat) for this long: reconnect
        self.connected = asyncio.Event()

    @staticmethod
    async def create_pool(database_url: str, **kwargs: Any) -> asyncpg.Pool:
        """A pool with the JSON codec the consumer's statements expect."""
        return await asyncpg.create_pool(database_url, init=_init_connection, **kwargs)

    async def setup(self) -> None:
        """Create the consumer's tables if they do not exist (idempotent)."""
        async with self.pool.acquire() as conn:
            await conn.execute(q.SCHEMA)

    async def checkpoint(self) -> int:
        async with self.pool.acquire() as conn:
            return int(await conn.fetchval(q.SELECT_CHECKPOINT, self.name) or 0)

    # --- applying ---------------------------------------------------------------------

    async def apply(self, update: Update) -> list[Update]:
        """Apply one delivered update (any order, any number of times) and advance the
        checkpoint, in one transaction. Returns the updates played out through the
        callback (none for a duplicate or a dropped older version; several when it
        completes a contiguous run)."""
        async with self.pool.acquire() as conn, conn.transaction():
            applied = await self._apply(conn, update)
            if update.seq is not None:
                await conn.execute(q.SAVE_CHECKPOINT, self.name, update.seq)
        return applied

    async def apply_proposal(self, event: ProposalEvent) -> None:
        """Hand a proposal event to ``on_proposal`` and advance the checkpoint, in one
        transaction (the mirror tables hold trades only and are not touched)."""
        async with self.pool.acquire() as conn, conn.transaction():
            if self.on_proposal is not None:
                await self.on_proposal(conn, event)
            await conn.execute(q.SAVE_CHECKPOINT, self.name, event.seq)

    async def apply_overdue(self, event: OverdueEvent) -> None:
        """Hand an overdue notice to ``on_overdue`` and advance the checkpoint, in one
        transaction (the mirror tables are not touched: the trade has no new version)."""
        async with self.pool.acquire() as conn, conn.transaction():
            if self.on_overdue is not None:
                await self.on_overdue(conn, event)
            await conn.execute(q.SAVE_CHECKPOINT, self.name, event.seq)

    async def _apply(self, conn: asyncpg.Connection, update: Update) -> list[Update]:
        await conn.execute(q.LOCK_TRADE, update.participant, update.trade_id)
        current = await conn.fetchval(q.SELECT_LATEST_VERSION, update.participant,
                                      update.trade_id) or 0
        if self.strategy == "drop-older":
            if update.version <= current:
                return []  # older than (or the same as) what we hold: dropped
            await conn.execute(q.CLEAR_LATEST, update.participant, update.trade_id)
            inserted = await self._insert(conn, update, latest=True)
            if inserted is None:
                # Stored before as history (a backfill) but never applied: apply it now.
                await conn.fetchrow(q.MAKE_LATEST, update.participant, update.trade_id,
                                    update.version)
            await self._call_back(conn, update)
            return [update]
        await self._insert(conn, update, latest=False)
        return await self._advance(conn, update.participant, update.trade_id, current)

    @staticmethod
    async def _insert(conn: asyncpg.Connection, u: Update, *, latest: bool) -> int | None:
        # Attributes as Kevin stores them (jsoncodec.for_jsonb): a number such as 1e99
        # stays as written, and 1e131072 does not overflow jsonb's numeric.
        trade = {**u.trade, "attributes": jsoncodec.for_jsonb(u.trade["attributes"])} \
            if isinstance(u.trade.get("attributes"), dict) else u.trade
        return await conn.fetchval(q.INSERT_VERSION, u.participant, u.trade_id, u.version,
                                   u.seq, u.event, u.status, trade, latest)

    async def _advance(
        self, conn: asyncpg.Connection, participant: str, trade_id: str, current: int
    ) -> list[Update]:
        """contiguous: move latest along every version we hold right after it."""
        played: list[Update] = []
        while await conn.fetchval(q.HOLDS_VERSION, participant, trade_id, current + 1):
            if current:  # first: at most one latest row per trade, at every statement
                await conn.execute(q.CLEAR_VERSION_LATEST, participant, trade_id, current)
            row = dict(await conn.fetchrow(q.MAKE_LATEST, participant, trade_id, current + 1))
            if "attributes" in row["trade"]:
                row["trade"]["attributes"] = jsoncodec.from_jsonb(row["trade"]["attributes"])
            update = Update(**row)
            await self._call_back(conn, update)
            played.append(update)
            current += 1
        return played

    async def _call_back(self, conn: asyncpg.Connection, update: Update) -> None:
        if self.callback is not None:
            await self.callback(conn, update)

    # --- finding and filling gaps -----------------------------------------------------

    async def gaps(self) -> list[tuple[str, str, int, int]]:
        """Missing version ranges (participant, trade_id, from, to): consumer.queries.GAPS."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(q.GAPS)
        return [(r["participant"], r["trade_id"], r["missing_from"], r["missing_to"])
                for r in rows]

    async def repair(self, session: aiohttp.ClientSession | None = None) -> int:
        """Backfill every gap the gap query finds from Kevin; returns versions stored."""
        trades = sorted({(p, t) for p, t, _, _ in await self.gaps()})
        return await self._backfill(trades, session)

    async def reconcile(self, session: aiohttp.ClientSession | None = None) -> int:
        """Compare every trade's newest version with Kevin's (``GET /v1/trades``) and
        backfill what is missing — including versions no later update would reveal (a
        lost last version) and trades never seen. Then repair any remaining gap."""
        async with self._session(session) as s:
            async with self.pool.acquire() as conn:
                participants = [r["participant"] for r in await conn.fetch(q.SELECT_PARTICIPANTS)]
            behind: list[tuple[str, str]] = []
            for participant in participants or [None]:
                async with self.pool.acquire() as conn:
                    held = {r["trade_id"]: r["version"] for r in
                            await conn.fetch(q.SELECT_LATEST_VERSIONS, participant)}
                try:
                    async for trade in self._list_trades(s, participant):
                        if held.get(trade["trade_id"], 0) < trade["version"]:
                            behind.append((trade["participant"], trade["trade_id"]))
                except aiohttp.ClientResponseError as e:
                    if participant is None and e.status == 422:
                        continue  # the admin must name a participant; none known yet
                    raise
            stored = await self._backfill(behind, s)
            return stored + await self.repair(s)

    async def _backfill(self, trades: Sequence[tuple[str, str]],
                        session: aiohttp.ClientSession | None) -> int:
        stored = 0
        async with self._session(session) as s:
            for participant, trade_id in trades:
                versions = await self._get(s, f"/v1/trades/{trade_id}/versions",
                                           {"participant": participant})
                async with self.pool.acquire() as conn, conn.transaction():
                    for trade in versions["versions"]:
                        stored += await self._store_backfilled(conn, Update.from_trade(trade))
        return stored

    async def _store_backfilled(self, conn: asyncpg.Connection, update: Update) -> int:
        await conn.execute(q.LOCK_TRADE, update.participant, update.trade_id)
        current = await conn.fetchval(q.SELECT_LATEST_VERSION, update.participant,
                                      update.trade_id) or 0
        if self.strategy == "drop-older" and update.version > current:
            before = await conn.fetchval(q.HOLDS_VERSION, update.participant,
                                         update.trade_id, update.version)
            await self._apply(conn, update)
            return 0 if before else 1
        inserted = await self._insert(conn, update, latest=False)
        if self.strategy == "contiguous":
            await self._advance(conn, update.participant, update.trade_id, current)
        return 1 if inserted is not None else 0

    # --- HTTP -------------------------------------------------------------------------

    def _headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", **extra}

    def _session(self, session: aiohttp.ClientSession | None) -> Any:
        if session is not None:
            return _Borrowed(session)
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))

    async def _get(self, session: aiohttp.ClientSession, path: str,
                   params: dict[str, str]) -> Any:
        async with session.get(self.url + path, params=params, headers=self._headers()) as r:
            if r.status in (401, 403):
                raise ConsumerError(f"Kevin refused the API key ({r.status})")
            r.raise_for_status()
            return jsoncodec.loads(await r.read())

    async def _list_trades(self, session: aiohttp.ClientSession, participant: str | None
                           ) -> Any:
        cursor: str | None = None
        while True:
            params = {"limit": "1000"}
            if participant is not None:
                params["participant"] = participant
            if cursor:
                params["cursor"] = cursor
            page = await self._get(session, "/v1/trades", params)
            for trade in page["trades"]:
                yield trade
            cursor = page["next_cursor"]
            if not cursor:
                return

    # --- following the feed -----------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Follow the feed until ``stop`` is set (or forever): resume after the
        checkpoint, apply each update, reconnect with exponential backoff and jitter
        after any failure of the server, the network or the consumer's database."""
        stop = stop or asyncio.Event()
        await self.setup()
        backoff = 0.1
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10,
                                        sock_read=self.idle_timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not stop.is_set():
                try:
                    await self.repair(session)
                    if not await _until_stopped(self._follow(session), stop):
                        return
                    backoff = 0.1
                except ConsumerError:
                    raise
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # the server, the network, our database: retry
                    self.connected.clear()
                    delay = backoff * (0.5 + random.random())  # noqa: S311 - jitter
                    log.warning("consumer: feed interrupted, reconnecting", error=repr(e),
                                retry_in=round(delay, 3))
                    await _sleep_or_stop(stop, delay)
                    backoff = min(backoff * 2, self.max_backoff)

    async def _follow(self, session: aiohttp.ClientSession) -> None:
        after = await self.checkpoint()
        headers = self._headers(Accept="text/event-stream", **{"Last-Event-ID": str(after)})
        async with session.get(f"{self.url}/v1/feed", headers=headers) as resp:
            if resp.status in (401, 403):
                raise ConsumerError(f"Kevin refused the API key ({resp.status})")
            resp.raise_for_status()
            self.connected.set()
            log.info("consumer: following the feed", after=after)
            async for event in events(resp.content):
                if event is None:
                    continue  # a heartbeat: the connection is alive
                body = jsoncodec.loads(event.data)
                if body.get("event") == "proposal":
                    await self.apply_proposal(ProposalEvent.from_feed(body))
                elif body.get("event") == "overdue":
                    await self.apply_overdue(OverdueEvent.from_feed(body))
                else:
                    await self.apply(Update.from_feed(body))
        raise ConnectionError("the server ended the feed stream")


async def _until_stopped(work: Awaitable[None], stop: asyncio.Event) -> bool:
    """Run ``work`` until it ends (True; its exception propagates) or ``stop`` is set
    (False; the work is cancelled — an apply cut short rolls back, so nothing is lost)."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        return False
    task.result()
    return True


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


class _Borrowed:
    """A caller's session used as a context manager without closing it."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def __aenter__(self) -> aiohttp.ClientSession:
        return self.session

    async def __aexit__(self, *exc: object) -> None:
        return None
