"""A consumer callback for the subprocess tests: one effect row per applied update, in the
applying transaction (no unique constraint: a doubled effect would show as two rows)."""

from __future__ import annotations

import asyncpg

from kevin.consumer import Update


async def record(conn: asyncpg.Connection, update: Update) -> None:
    await conn.execute(
        "INSERT INTO effects (participant, trade_id, version) VALUES ($1, $2, $3)",
        update.participant, update.trade_id, update.version)
