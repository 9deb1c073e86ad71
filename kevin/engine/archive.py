"""``kevin archive --before T``: move old versions to cold storage, batch by batch.

Each batch is one transaction (copy to trades_archive, delete exactly those rows from
trades), so a crash at any point leaves every version in exactly one of the two tables;
running again simply continues. History and as-of read both tables (the trade_history
view), so archiving changes no answer, only where the rows live.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import structlog

from kevin.store import database
from kevin.store.archive import START, archive_batch

log = structlog.get_logger(__name__)

DEFAULT_BATCH_SIZE = 5_000

# Called after each committed batch with the running totals (progress, tests).
BatchHook = Callable[["ArchiveReport"], Awaitable[None]]


@dataclass(frozen=True)
class ArchiveReport:
    moved: int
    batches: int


async def archive(
    pool: asyncpg.Pool,
    before: datetime,
    batch_size: int = DEFAULT_BATCH_SIZE,
    after_batch: BatchHook | None = None,
) -> ArchiveReport:
    """Move every non-latest version recorded before ``before`` into trades_archive."""
    if before.tzinfo is None:
        raise ValueError("before must be timezone-aware")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    key = START
    report = ArchiveReport(0, 0)
    while True:
        async with database.transaction(pool) as conn:
            batch = await archive_batch(conn, before, key, batch_size)
        if batch.last_key is None:
            break
        key = batch.last_key
        report = ArchiveReport(report.moved + batch.moved, report.batches + 1)
        log.info("archived batch", batch=report.batches, moved=batch.moved,
                 total=report.moved)
        if after_batch is not None:
            await after_batch(report)
    return report
