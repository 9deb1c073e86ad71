"""Moving old trade versions to cold storage: the SQL of one archive batch.

Cold storage is the ``trades_archive`` table (alembic 0002): the same columns as
``trades``, insert-only, readable through the ``trade_history`` view together with the hot
table. The batch below is the only code that deletes from ``trades``, and the trigger on
``trades`` lets it do so only for non-latest rows this transaction copied, unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from kevin.domain.errors import ArchiveRefused
from kevin.store.queries import TRADE_COLUMNS

# Declares the transaction an archiver; the trigger refuses archival deletes without it.
# is_local = true: gone at commit or rollback, so a pooled connection never keeps it.
# The transaction-scoped advisory lock makes concurrent archivers take turns batch by
# batch: two batches copying overlapping rows in different orders would otherwise wait on
# each other's uncommitted archive keys and deadlock. Trade writers never take it.
ARCHIVE_LOCK = 7_346_002
DECLARE_ARCHIVING = f"""
SELECT set_config('kevin.archiving', 'on', true), pg_advisory_xact_lock({ARCHIVE_LOCK})
"""

# The next batch, in primary-key order after the last key seen: the walk follows the
# primary key index and never rescans what it has passed, so a whole run reads the table
# once. Non-latest rows never change (the trigger allows no UPDATE of them), so the batch
# needs no row lock; a concurrent archiver's copy of the same rows makes ours a no-op.
SELECT_ARCHIVABLE = """
SELECT participant, trade_id, version FROM trades
WHERE (participant, trade_id, version) > ($1, $2, $3)
  AND NOT latest
  AND recorded_at < $4
ORDER BY participant, trade_id, version
LIMIT $5
"""

_BATCH = "unnest($1::text[], $2::text[], $3::int[]) AS batch(participant, trade_id, version)"

# Copy the batch. ON CONFLICT DO NOTHING: a row some earlier transaction already copied is
# left as it is; it is then not ours to delete, and the trigger will say so below.
# (Only constant column lists are formatted into these statements; values are bound.)
COPY_TO_ARCHIVE = f"""
INSERT INTO trades_archive ({TRADE_COLUMNS})
SELECT {", ".join(f"t.{c.strip()}" for c in TRADE_COLUMNS.split(","))}
FROM trades t JOIN {_BATCH} USING (participant, trade_id, version)
ON CONFLICT ON CONSTRAINT pk_trades_archive DO NOTHING
"""  # noqa: S608

# Delete exactly the batch; the trigger checks each row against its copy.
DELETE_ARCHIVED = f"""
DELETE FROM trades t USING {_BATCH}
WHERE (t.participant, t.trade_id, t.version)
      = (batch.participant, batch.trade_id, batch.version)
"""  # noqa: S608

# Archiving is a batch job, not a request: a batch may wait for another archiver's turn
# (ARCHIVE_LOCK) and moves thousands of rows, so it does not live by the pool's per-request
# statement timeout.
STATEMENT_TIMEOUT = 600.0

Key = tuple[str, str, int]
START: Key = ("", "", 0)


@dataclass(frozen=True)
class Batch:
    moved: int
    last_key: Key | None  # None: nothing left to archive after the key given


async def archive_batch(
    conn: asyncpg.Connection, before: datetime, after: Key, size: int
) -> Batch:
    """Move up to ``size`` non-latest versions recorded before ``before`` (and after the
    key ``after``) from trades to trades_archive. Call inside a transaction: the copy and
    the delete commit together or not at all."""
    await conn.execute(DECLARE_ARCHIVING, timeout=STATEMENT_TIMEOUT)
    rows = await conn.fetch(SELECT_ARCHIVABLE, *after, before, size, timeout=STATEMENT_TIMEOUT)
    if not rows:
        return Batch(0, None)
    columns = ([r["participant"] for r in rows], [r["trade_id"] for r in rows],
               [r["version"] for r in rows])
    await conn.execute(COPY_TO_ARCHIVE, *columns, timeout=STATEMENT_TIMEOUT)
    try:
        status = await conn.execute(DELETE_ARCHIVED, *columns, timeout=STATEMENT_TIMEOUT)
    except asyncpg.exceptions.RestrictViolationError as e:
        raise ArchiveRefused(
            "a version in this batch is already in trades_archive but was not copied by "
            "this run; archiving stopped so nothing is lost — compare the two rows") from e
    moved = int(status.split()[-1])
    last = rows[-1]
    return Batch(moved, (last["participant"], last["trade_id"], last["version"]))
