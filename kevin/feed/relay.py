"""``kevin relay nats``: the feed, published into a NATS JetStream stream.

Subjects ``<prefix>.<participant>`` (default ``kevin.updates.BANKA``); the payload is the
feed update exactly as SSE carries it (proposal updates too); headers ``Nats-Msg-Id:
participant/trade_id/version`` (``participant/proposal/<id>/<version>`` for a proposal)
(JetStream drops a second message with the same id inside the stream's duplicate window)
and ``Kevin-Seq``.

Durable position: the relay stores the highest seq JetStream acknowledged in Kevin's
database (``relay_checkpoints``), after a whole batch was acknowledged. Why there and not
"the stream's last message": Kevin's database is the system of record, the position
moves only after JetStream confirmed every message below it, so a message that failed in
the middle of a batch is never skipped over (a stream's last message says nothing about
the ones before it). A crash between the acknowledgements and the checkpoint re-publishes
at most one batch on restart; those duplicates are absorbed by ``Nats-Msg-Id`` (within
the duplicate window, 10 minutes on a stream the relay creates), and consumers are
idempotent on (trade_id, version) beyond it anyway.

The relay reads the feed from Kevin's database in seq order (like an SSE stream, woken by
the sequencer's NOTIFY and a poll) and runs a sequencer of its own (lock-guarded, so
harmless beside ``kevin serve``), so it works even with no server running.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import nats
import structlog
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from kevin import jsoncodec
from kevin.domain.feed import AnyUpdate, ProposalUpdate
from kevin.feed.sequencer import Sequencer
from kevin.feed.watch import FeedWatch
from kevin.lifecycle import cancel_and_wait
from kevin.store import database
from kevin.store import feed as store

log = structlog.get_logger(__name__)

DUPLICATE_WINDOW = 600.0  # seconds, for a stream the relay creates


def subject_for(prefix: str, update: AnyUpdate) -> str:
    return f"{prefix}.{update.participant}"


def message_id(update: AnyUpdate) -> str:
    if isinstance(update, ProposalUpdate):
        return f"{update.participant}/proposal/{update.proposal_id}/{update.version}"
    return f"{update.participant}/{update.trade_id}/{update.version}"


class NatsRelay:
    def __init__(
        self, pool: asyncpg.Pool, nats_url: str, *, stream: str = "KEVIN",
        subject_prefix: str = "kevin.updates", name: str | None = None, batch: int = 500,
        poll_interval: float = 0.5,
    ) -> None:
        self.pool = pool
        self.nats_url = nats_url
        self.stream = stream
        self.prefix = subject_prefix
        self.name = name or f"nats:{stream}"
        self.batch = batch
        self.watch = FeedWatch(pool, poll_interval)
        self.sequencer = Sequencer(pool, self.watch)
        self.relayed = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop``; NATS and database failures are logged and retried."""
        background = [asyncio.create_task(self.watch.run()),
                      asyncio.create_task(self.sequencer.run())]
        nc = None
        backoff = 0.2
        try:
            while not stop.is_set():
                try:
                    if nc is None or nc.is_closed:
                        nc = await nats.connect(self.nats_url, max_reconnect_attempts=-1,
                                                connect_timeout=5)
                    js = nc.jetstream(timeout=10)
                    await self._ensure_stream(js)
                    await self._relay(js, stop)
                    backoff = 0.2
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # NATS or the database blinked: resume from the checkpoint
                    log.warning("relay: interrupted, retrying", error=repr(e), retry_in=backoff)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), backoff)
                    backoff = min(backoff * 2, 10.0)
        finally:
            await cancel_and_wait(background)
            if nc is not None and not nc.is_closed:
                with contextlib.suppress(Exception):
                    await nc.drain()

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        try:
            await js.stream_info(self.stream)
        except NotFoundError:
            await js.add_stream(name=self.stream, subjects=[f"{self.prefix}.>"],
                                duplicate_window=DUPLICATE_WINDOW)
            log.info("relay: created stream", stream=self.stream, subjects=f"{self.prefix}.>")

    async def _relay(self, js: JetStreamContext, stop: asyncio.Event) -> None:
        async with database.connection(self.pool) as conn:
            position = await store.relay_checkpoint(conn, self.name)
        log.info("relay: publishing", stream=self.stream, after=position)
        while not stop.is_set():
            head = self.watch.head
            async with database.connection(self.pool) as conn:
                updates = await store.updates_after(conn, position, None, self.batch)
            if updates:
                # Published concurrently, acknowledged all-or-error: the checkpoint moves
                # only past a batch JetStream confirmed completely.
                await asyncio.gather(*(self._publish(js, u) for u in updates))
                position = updates[-1].seq
                async with database.transaction(self.pool) as conn:
                    await store.save_relay_checkpoint(conn, self.name, position)
                self.relayed += len(updates)
                if len(updates) == self.batch:
                    continue
            stopping = asyncio.create_task(stop.wait())
            waking = asyncio.create_task(self.watch.wait_beyond(head, 5.0))
            await asyncio.wait({stopping, waking}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            waking.cancel()

    async def _publish(self, js: JetStreamContext, update: AnyUpdate) -> None:
        await js.publish(
            subject_for(self.prefix, update), jsoncodec.dumps(update.body()),
            headers={"Nats-Msg-Id": message_id(update), "Kevin-Seq": str(update.seq)},
            stream=self.stream)
