"""Invariant 1, enforced by the database itself, not only by Kevin's code."""

from __future__ import annotations

import asyncpg
import pytest

from tests.conftest import trade_body


@pytest.fixture
async def stored(client, banks, conn):
    a, _ = banks
    await client.post("/v1/trades", json=trade_body(), headers=a)
    await client.put("/v1/trades/A-0001", json=trade_body(price="1001"),
                     headers={**a, "If-Match": '"1"'})
    return await conn.fetch("SELECT * FROM trades ORDER BY version")


@pytest.mark.parametrize("statement", [
    "UPDATE trades SET price = 1 WHERE version = 2",
    "UPDATE trades SET status = 'cancelled' WHERE version = 1",
    "UPDATE trades SET latest = true WHERE version = 1",
    # Flipping latest off is allowed only when nothing else changes with it.
    "UPDATE trades SET latest = false, reason = 'cancelled' WHERE version = 2",
    # ... whatever the column: to NULL, in jsonb, by a rounding-free numeric change.
    "UPDATE trades SET latest = false, location = NULL WHERE version = 2",
    "UPDATE trades SET latest = false, attributes = '{\"x\": 1}' WHERE version = 2",
    "UPDATE trades SET latest = false, quantity = quantity + 0.000001 WHERE version = 2",
    "UPDATE trades SET recorded_at = now() WHERE version = 1",
    "DELETE FROM trades WHERE version = 1",
    "DELETE FROM trades",
    "TRUNCATE trades",
])
async def test_the_database_refuses_changes(stored, conn, statement):
    with pytest.raises(asyncpg.exceptions.RestrictViolationError, match="insert-only"):
        await conn.execute(statement)
    assert await conn.fetch("SELECT * FROM trades ORDER BY version") == stored


@pytest.mark.breaks_invariants  # forges rows the check refuses
async def test_the_one_allowed_update_flips_latest_off(stored, conn):
    assert await conn.execute("UPDATE trades SET latest = false WHERE version = 2") == "UPDATE 1"


async def test_one_latest_row_per_trade_is_a_database_rule(stored, conn):
    with pytest.raises(asyncpg.exceptions.UniqueViolationError):
        await conn.execute("""
            INSERT INTO trades SELECT participant, trade_id, 3, true, status, reason,
                counterparty, side, product, quantity, price, currency, trade_date,
                settlement_date, location, attributes, match_id, match_counterparty_trade_id,
                match_counterparty_version, mismatches, rules_version, comment, replay_id,
                actor, first_submitted_at, recorded_at
            FROM trades WHERE version = 2""")
