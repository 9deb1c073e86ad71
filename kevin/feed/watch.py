"""FeedWatch: the highest sequenced seq a process knows of, and a way to wait for more.

One per process. It learns the head from three sources: the in-process sequencer
(immediately), LISTEN on the sequencer's channel (other processes), and a poll of
max(seq) (the fallback: LISTEN/NOTIFY is a hint — a notification sent while the listener
was reconnecting is simply lost). Readers never take data from here; they only learn
*when* to pull again from their own durable position.

Its listening connection is the process's one: other channels ride on it (``listen``),
each with what to do when a notification comes and, since one sent while the connection
was being made again is lost, when the connection starts listening.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import asyncpg
import structlog

from kevin.store import database
from kevin.store import feed as store
from kevin.store.feed_queries import FEED_CHANNEL

log = structlog.get_logger(__name__)

# An asyncpg listener: (connection, pid of the notifying backend, channel, payload).
Listener = Callable[[object, int, str, str], None]


class FeedWatch:
    def __init__(self, pool: asyncpg.Pool, poll_interval: float = 0.5) -> None:
        self.pool = pool
        self.poll_interval = poll_interval
        self.head = 0
        self.closing = False
        self._changed = asyncio.Event()
        # channel -> (on a notification: its payload, on (re)starting to listen)
        self._channels: dict[str, tuple[Callable[[str], None], Callable[[], None]]] = {}

    def listen(self, channel: str, on_payload: Callable[[str], None],
               on_listening: Callable[[], None]) -> None:
        """Also LISTEN on ``channel``, from the next connection the watch makes (call it
        before ``run``). ``on_listening`` runs once the channel is listened to, each
        time: whatever it stands for may have been missed until then."""
        self._channels[channel] = (on_payload, on_listening)

    def advance(self, seq: int) -> None:
        """The feed reaches at least ``seq`` (committed and visible to every new query)."""
        if seq > self.head:
            self.head = seq
            self._wake()

    def close(self) -> None:
        """Wake every waiter for good (server shutdown)."""
        self.closing = True
        self._wake()

    def _wake(self) -> None:
        # A fresh Event per generation: waiters hold the one current when they started,
        # so a wake-up is never missed between a check and a wait.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_beyond(self, seq: int, seconds: float) -> bool:
        """Until the head passes ``seq`` (True), or timeout / shutdown (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self.head <= seq and not self.closing:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)
        return self.head > seq and not self.closing

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if payload.isdigit():
            self.advance(int(payload))

    async def run(self) -> None:
        """Listen and poll until cancelled; database blips are logged and retried."""
        backoff = 0.1
        while True:
            try:
                async with database.connection(self.pool) as conn:
                    listeners: list[tuple[str, Listener]] = [(FEED_CHANNEL, self._on_notify)]
                    listeners += [(channel, _payload_only(on_payload))
                                  for channel, (on_payload, _) in self._channels.items()]
                    try:
                        for channel, listener in listeners:
                            await conn.add_listener(channel, listener)
                        for _, on_listening in self._channels.values():
                            on_listening()
                        while not conn.is_closed():
                            self.advance(await store.max_seq(conn))
                            backoff = 0.1
                            await asyncio.sleep(self.poll_interval)
                    finally:
                        # The pool's connections go back without an UNLISTEN
                        # (kevin.store.database): every listener is taken off here.
                        if not conn.is_closed():
                            for channel, listener in listeners:
                                with contextlib.suppress(Exception):
                                    await conn.remove_listener(channel, listener)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # never let a blip end the watch
                log.warning("feed watch: database unavailable, retrying", error=repr(e),
                            retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)


def _payload_only(on_payload: Callable[[str], None]) -> Listener:
    def listener(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        on_payload(payload)
    return listener
