"""``kevin relay nats``: the feed, published into a NATS JetStream stream.

Subjects ``<prefix>.<participant>`` (default ``kevin.updates.BANKA``); the payload is the
feed update exactly as SSE carries it (proposal and overdue updates too); headers
``Nats-Msg-Id: participant/trade_id/version`` (``participant/proposal/<id>/<version>`` for
a proposal, ``participant/overdue/<notice_id>`` for an overdue notice) (JetStream drops
a second message with the same id inside the stream's duplicate window) and
``Kevin-Seq``.

Durable position: the relay stores the highest seq JetStream acknowledged in Kevin's
database (``relay_checkpoints``), after a whole batch was acknowledged. Why there and not
"the stream's last message": TradeService's database is the system of record, the position
moves only after JetStream confirmed every message below it, so a message that failed in
the middle of a batch is never skipped over (a stream's last message says nothing about
the ones before it). A crash between the acknowledgements and the checkpoint re-publishes
at most one batch on restart; those duplicates are absorbed by ``Nats-Msg-Id`` (within
the duplicate window, 10 minutes on a stream the relay creates), and consumers are
idempotent on (trade_id, version) beyond it anyway.

The relay reads the feed from Kevin's database in seq order (like an SSE stream, woken by
the sequencer's NOTIFY and a poll) and runs a sequencer of its own (lock-guarded, so
harmless beside ``kevin serve``), so it works even with no server running.

Every message fits, or is a stub. The service keeps a trade under 64 KiB as JSON, but a
stream or server may allow less (a stream's ``max_msg_size``, the server's
``max_payload``). An update larger than that is published as a *stub* in its place: the
update's own fields without its body (``trade`` or ``proposal``) and a ``stub`` object
``{"reason": "too_large", "size": <bytes>, "limit": <bytes>, "fetch": "<path>"}`` — the
path to read the body from Kevin (``/v1/trades/<id>/versions?participant=<name>``, the
version named by ``version``; ``/v1/proposals/<id>`` for a proposal) — with the same
``Nats-Msg-Id`` and ``Kevin-Seq`` and a ``Kevin-Stub: too_large`` header. A size the
relay could not know beforehand (a limit lowered while it runs) is a refusal JetStream
reports; that update is then stubbed after the rest of its batch. Either way the
position moves on, and the count is kept with the checkpoint
(``relay_checkpoints.stubbed``; ``kevin_relay_stubbed{relay=...}`` in ``/metrics``).

A retry never re-publishes what JetStream acknowledged: a batch is published
concurrently, each acknowledgement is remembered, the checkpoint moves to the end of the
acknowledged prefix and a retry sends only the updates not yet acknowledged. (Only a
crash forgets the acknowledgements past the checkpoint; see above.)
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg
import nats
import structlog
from nats.errors import MaxPayloadError
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from kevin import jsoncodec
from kevin.domain.feed import AnyUpdate, OverdueUpdate, ProposalUpdate, RelayStub, StubInfo
from kevin.feed.sequencer import Sequencer
from kevin.feed.watch import FeedWatch
from kevin.lifecycle import cancel_and_wait
from kevin.store import database
from kevin.store import feed as store

log = structlog.get_logger(__name__)

DUPLICATE_WINDOW = 600.0  # seconds, for a stream the relay creates
# JetStream's error code for a message over the stream's max_msg_size.
MESSAGE_TOO_LARGE = 10054
# Room for the protocol's header framing beyond the header names and values themselves.
HEADER_FRAMING = 64


def subject_for(prefix: str, update: AnyUpdate) -> str:
    return f"{prefix}.{update.participant}"


def message_id(update: AnyUpdate) -> str:
    if isinstance(update, ProposalUpdate):
        return f"{update.participant}/proposal/{update.proposal_id}/{update.version}"
    if isinstance(update, OverdueUpdate):
        return f"{update.participant}/overdue/{update.notice_id}"
    return f"{update.participant}/{update.trade_id}/{update.version}"


def fetch_path(update: AnyUpdate) -> str:
    """Where a consumer reads the body a stub leaves out (ids are URL-safe by pattern)."""
    if isinstance(update, ProposalUpdate):
        return f"/v1/proposals/{update.proposal_id}"
    if isinstance(update, OverdueUpdate):  # small, never stubbed in practice: the trade
        if update.participant != update.trade_participant:
            return "/v1/alleged?overdue=true"
        return f"/v1/trades/{update.trade_id}"
    return f"/v1/trades/{update.trade_id}/versions?participant={update.participant}"


def stub_body(update: AnyUpdate, size: int, limit: int | None) -> dict[str, Any]:
    """The documented stand-in for an update too large for the transport (RelayStub)."""
    body = {k: v for k, v in update.body().items() if k not in ("trade", "proposal")}
    stub = StubInfo(reason="too_large", size=size, limit=limit, fetch=fetch_path(update))
    RelayStub.model_validate({**body, "stub": stub})  # the shape /openapi.json documents
    return {**body, "stub": stub.model_dump()}


def refused_for_size(error: BaseException) -> bool:
    return isinstance(error, MaxPayloadError) or (
        isinstance(error, APIError) and error.err_code == MESSAGE_TOO_LARGE)


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
        self.stubbed = 0
        # Seqs past the checkpoint JetStream acknowledged: a retry skips them.
        self.acknowledged: set[int] = set()
        # The largest message the stream and server take (None: no limit known).
        self.limit: int | None = None

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
                    await self._ensure_stream(js, nc.max_payload)
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

    async def _ensure_stream(self, js: JetStreamContext, max_payload: int) -> None:
        try:
            info = await js.stream_info(self.stream)
        except NotFoundError:
            info = await js.add_stream(name=self.stream, subjects=[f"{self.prefix}.>"],
                                       duplicate_window=DUPLICATE_WINDOW)
            log.info("relay: created stream", stream=self.stream, subjects=f"{self.prefix}.>")
        limits = [max_payload] if max_payload > 0 else []
        if info.config.max_msg_size is not None and info.config.max_msg_size > 0:
            limits.append(info.config.max_msg_size)
        self.limit = min(limits, default=None)

    async def _relay(self, js: JetStreamContext, stop: asyncio.Event) -> None:
        async with database.connection(self.pool) as conn:
            position = await store.relay_checkpoint(conn, self.name)
        log.info("relay: publishing", stream=self.stream, after=position)
        while not stop.is_set():
            head = self.watch.head
            async with database.connection(self.pool) as conn:
                updates = await store.updates_after(conn, position, None, self.batch)
            if updates:
                position = await self._publish_batch(js, position, updates)
                if len(updates) == self.batch:
                    continue
            stopping = asyncio.create_task(stop.wait())
            waking = asyncio.create_task(self.watch.wait_beyond(head, 5.0))
            await asyncio.wait({stopping, waking}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            waking.cancel()

    async def _publish_batch(self, js: JetStreamContext, position: int,
                             updates: list[AnyUpdate]) -> int:
        """Publish what of ``updates`` JetStream has not acknowledged yet, concurrently,
        and move the checkpoint to the end of the acknowledged prefix. Raises the first
        error that is not a refusal for size, after saving the position reached."""
        pending = [u for u in updates if u.seq not in self.acknowledged]
        results = await asyncio.gather(*(self._publish(js, u) for u in pending),
                                       return_exceptions=True)
        failure: BaseException | None = None
        stubbed = 0
        for update, result in zip(pending, results, strict=True):
            if result == "stub":
                stubbed += 1
            elif isinstance(result, BaseException):
                if failure is not None or not refused_for_size(result):
                    failure = failure or result
                    continue
                # A limit the relay did not know: the stub follows the rest of the batch.
                try:
                    await self._publish_stub(js, update, len(jsoncodec.dumps(update.body())))
                except Exception as e:
                    failure = e
                    continue
                stubbed += 1
            self.acknowledged.add(update.seq)
        reached = position
        for update in updates:
            if update.seq not in self.acknowledged:
                break
            reached = update.seq
        if reached > position or stubbed:
            async with database.transaction(self.pool) as conn:
                await store.save_relay_checkpoint(conn, self.name, reached, stubbed)
            self.relayed += sum(1 for u in updates if position < u.seq <= reached)
            self.stubbed += stubbed
        self.acknowledged = {seq for seq in self.acknowledged if seq > reached}
        if failure is not None:
            raise failure
        return reached

    async def _publish(self, js: JetStreamContext, update: AnyUpdate) -> str | None:
        """Publish one update; None once acknowledged, "stub" when it went as a stub."""
        payload = jsoncodec.dumps(update.body())
        headers = self._headers(update)
        if self.limit is not None and self._size(payload, headers) > self.limit:
            await self._publish_stub(js, update, len(payload))
            return "stub"
        await js.publish(subject_for(self.prefix, update), payload, headers=headers,
                         stream=self.stream)
        return None

    async def _publish_stub(self, js: JetStreamContext, update: AnyUpdate, size: int) -> None:
        log.warning("relay: update too large for the transport, published as a stub",
                    seq=update.seq, message_id=message_id(update), size=size,
                    limit=self.limit)
        await js.publish(subject_for(self.prefix, update),
                         jsoncodec.dumps(stub_body(update, size, self.limit)),
                         headers={**self._headers(update), "Kevin-Stub": "too_large"},
                         stream=self.stream)

    def _headers(self, update: AnyUpdate) -> dict[str, str]:
        return {"Nats-Msg-Id": message_id(update), "Kevin-Seq": str(update.seq)}

    def _size(self, payload: bytes, headers: dict[str, str]) -> int:
        named = sum(len(k) + len(v) + 4 for k, v in headers.items())
        return len(payload) + named + len("Nats-Expected-Stream") + len(self.stream) \
            + HEADER_FRAMING
