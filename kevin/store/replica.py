"""Where a read runs: a PostgreSQL streaming replica (hot standby) when one is configured
and fresh enough, else the primary (docs/api.md, "Reads on a replica").

The rule, per read:

- The replica is *usable* while its lag is within ``max_lag`` seconds. The lag is
  measured against the primary: about once a ``probe_interval``, a read samples the
  primary's WAL position and clock, then the replica's replay position; the replica has
  everything the primary had committed at the newest sample its replay position has
  passed (``settled_at``, the primary's clock at that sample), and its lag is how long ago
  that sample was taken. A replica that is down, refuses, is not in recovery or lags too
  far is skipped for the read; a replica that errors is skipped for ``retry_after``
  seconds. No replica configured: every read runs on the primary.
- A read on the replica whose answer could be stale is read again on the primary: each
  caller says what stale means for its read (not found; a version older than the one the
  caller has seen, from If-None-Match; a feed page short of the head the primary
  announced).
- A read "as of" an instant runs on the replica only when the replica has settled that
  instant (``as_of <= settled_at``): it then answers what the primary answered at
  ``settled_at``.

Writes, the feed sequencer, the relay and every transaction never come here: they use the
primary's pool directly.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import asyncpg
import structlog

from kevin.domain.errors import DatabaseUnavailable
from kevin.store import database

log = structlog.get_logger(__name__)

T = TypeVar("T")

# The primary's WAL position (bytes from the start) and clock: one sample.
PRIMARY_SAMPLE = ("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint AS lsn, "
                  "clock_timestamp() AS at")
# The replica's replay position; NULL when it is not a standby at all.
REPLICA_REPLAYED = ("SELECT pg_is_in_recovery() AS standby, "
                    "pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint AS lsn")

DEFAULT_MAX_LAG = 5.0
PROBE_INTERVAL = 0.5
RETRY_AFTER = 2.0


@dataclass(frozen=True)
class _Sample:
    taken: float  # time.monotonic() of this process
    at: datetime  # the primary's clock
    lsn: int


@dataclass
class ReadCounts:
    """How reads went (tests, logs): served by the replica, or by the primary."""

    replica: int = 0
    primary: int = 0
    fallbacks: int = 0  # read on the replica, answer possibly stale, read again


class Reads:
    def __init__(self, primary: asyncpg.Pool, replica: asyncpg.Pool | None = None, *,
                 max_lag: float = DEFAULT_MAX_LAG, probe_interval: float = PROBE_INTERVAL,
                 retry_after: float = RETRY_AFTER) -> None:
        self.primary = primary
        self.replica = replica
        self.max_lag = max_lag
        self.probe_interval = probe_interval
        self.retry_after = retry_after
        self.counts = ReadCounts()
        # Enough samples to measure any lag up to max_lag.
        self._samples: collections.deque[_Sample] = collections.deque(
            maxlen=int(max_lag / probe_interval) + 3)
        self._settled: _Sample | None = None  # newest sample the replica has replayed
        self._probed = -float("inf")
        self._down_until = -float("inf")
        self._probing = asyncio.Lock()

    async def read(
        self, query: Callable[[asyncpg.Connection, datetime | None], Awaitable[T]], *,
        stale: Callable[[T], bool] | None = None, as_of: datetime | None = None,
    ) -> T:
        """``query(conn, settled_at)`` on the replica when it may answer (``settled_at``:
        the primary's clock up to which the replica has every commit), else — or when
        ``stale(answer)`` says the answer may be behind — ``query(conn, None)`` on the
        primary."""
        settled_at = await self.settled_at()
        if settled_at is not None and (as_of is None or as_of <= settled_at):
            assert self.replica is not None
            try:
                async with database.connection(self.replica) as conn:
                    answer = await query(conn, settled_at)
            except (DatabaseUnavailable, asyncpg.PostgresError) as e:
                # A standby cancels queries that conflict with its replay, and may lack
                # a migration the primary has: the primary answers instead.
                self._replica_failed(e)
            else:
                if stale is None or not stale(answer):
                    self.counts.replica += 1
                    return answer
                self.counts.fallbacks += 1
        self.counts.primary += 1
        async with database.connection(self.primary) as conn:
            return await query(conn, None)

    async def settled_at(self) -> datetime | None:
        """The primary's clock up to which the replica has every commit, when the replica
        is usable now; None when reads go to the primary."""
        if self.replica is None or time.monotonic() < self._down_until:
            return None
        if time.monotonic() - self._probed >= self.probe_interval:
            async with self._probing:
                if time.monotonic() - self._probed >= self.probe_interval:
                    await self._probe()
        settled = self._settled
        if settled is None or time.monotonic() - settled.taken > self.max_lag:
            return None
        return settled.at

    async def _probe(self) -> None:
        assert self.replica is not None
        try:
            async with database.connection(self.primary) as conn:
                row = await conn.fetchrow(PRIMARY_SAMPLE)
        except (DatabaseUnavailable, asyncpg.PostgresError):
            # No primary: no sample, and the old ones age past max_lag. The read itself
            # reports the outage.
            self._probed = time.monotonic()
            return
        self._samples.append(_Sample(time.monotonic(), row["at"], row["lsn"]))
        try:
            async with database.connection(self.replica) as conn:
                replica = await conn.fetchrow(REPLICA_REPLAYED)
        except (DatabaseUnavailable, asyncpg.PostgresError) as e:
            self._replica_failed(e)
            return
        self._probed = time.monotonic()
        if not replica["standby"] or replica["lsn"] is None:
            self._replica_failed(ValueError("the read database is not a standby in recovery"))
            return
        replayed = [s for s in self._samples if s.lsn <= replica["lsn"]]
        if replayed:
            self._settled = max(replayed, key=lambda s: s.taken)

    def _replica_failed(self, error: BaseException) -> None:
        log.warning("read replica unusable; reading on the primary", error=repr(error),
                    retry_in=self.retry_after)
        self._down_until = time.monotonic() + self.retry_after
        self._probed = -float("inf")  # probe again when the pause is over
