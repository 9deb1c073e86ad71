"""Matching invariants, checked straight on the database after a test."""

from __future__ import annotations

from collections import defaultdict

import asyncpg


async def check_matching_invariants(conn: asyncpg.Connection) -> int:
    """docs/design.md, invariant 4 and the mutual-pointer rule; returns the number of matches.

    - every live match joins exactly two latest trades, mirrored participants, opposite
      sides, each naming the other's trade_id and latest version;
    - no trade's mismatch list names a trade that is not resting (stale pointer);
    - every version has exactly one feed row, and versions run 1..n with one latest.
    """
    rows = await conn.fetch("SELECT * FROM trades WHERE latest AND status = 'matched'")
    by_match: dict[object, list[asyncpg.Record]] = defaultdict(list)
    for row in rows:
        by_match[row["match_id"]].append(row)
    for match_id, legs in by_match.items():
        assert len(legs) == 2, (match_id, [dict(r) for r in legs])
        x, y = legs
        assert x["participant"] == y["counterparty"] and y["participant"] == x["counterparty"]
        assert {x["side"], y["side"]} == {"buy", "sell"}
        for one, other in ((x, y), (y, x)):
            assert one["match_counterparty_trade_id"] == other["trade_id"], match_id
            assert one["match_counterparty_version"] == other["version"], match_id
    stale = await conn.fetch("""
        SELECT t.participant, t.trade_id, m->>'counterparty_trade_id' AS target
        FROM trades t, jsonb_array_elements(t.mismatches) m
        WHERE t.latest AND t.status = 'mismatched' AND NOT EXISTS (
            SELECT 1 FROM trades o
            WHERE o.latest AND o.participant = t.counterparty
              AND o.trade_id = m->>'counterparty_trade_id'
              AND o.status IN ('unmatched', 'mismatched'))
    """)
    assert not stale, [dict(r) for r in stale]
    assert await conn.fetchval("""
        SELECT count(*) FROM trades t
        WHERE t.status = 'mismatched' AND t.latest AND jsonb_array_length(t.mismatches) = 0
    """) == 0
    holes = await conn.fetchval("""
        SELECT count(*) FROM (
            SELECT participant, trade_id FROM trades GROUP BY participant, trade_id
            HAVING max(version) <> count(*) OR count(*) FILTER (WHERE latest) <> 1) bad
    """)
    assert holes == 0
    assert await conn.fetchval("SELECT count(*) FROM trades") == \
        await conn.fetchval("SELECT count(*) FROM feed")
    return len(by_match)
