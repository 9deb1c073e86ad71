"""One matched pair's SQL, statement for statement as the engine issues it, with raw
values instead of models.

The engine, for a pair (kevin.engine.service.Kevin.submit → kevin.engine.matching):

  each leg   LOCK_MATCH_KEY_AND_RULES · INSERT_VERSION · CANDIDATES (within tolerance,
             else the nearest: the sell finds neither)
  the buy    matched: APPEND_VERSIONS (both legs' flips, versions and feed rows) ·
             NAMING_ANY (mismatch lists naming either must be re-evaluated)

Only the engine's transaction control (BEGIN/COMMIT per leg) is left out: the ceiling
commits once per pair. tests/test_bench.py records
the engine's statements for a pair and compares them with these, so a change to the
matching flow that is not mirrored here fails a test instead of flattering the ratio.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from kevin import jsoncodec
from kevin.bench import workload as w
from kevin.store import matching_queries as mq
from kevin.store import queries as q
from kevin.store.matching import MATCH_LOCK_CLASS, MATCH_PER_SIDE, MatchKey

QUANTITY = Decimal(100)


def _insert_args(participant: str, trade_id: str, version: int, status: str, reason: str,
                 counterparty: str, side: str, product: str, price: Decimal,
                 attributes: dict[str, Any], first_submitted_at: datetime | None,
                 match: tuple[uuid.UUID, str, int] | None = None) -> tuple[Any, ...]:
    """INSERT_VERSION's parameters, in kevin.store.trades.NewVersion.args's order."""
    return (
        participant, trade_id, version, status, reason, counterparty, side, product,
        QUANTITY, price, "USD", w.TRADE_DATE, w.SETTLEMENT_DATE, "LDN", attributes,
        match[0] if match else None, match[1] if match else None, match[2] if match else None,
        [], None, None, None, participant, first_submitted_at,
    )


def _candidate_args(participant: str, counterparty: str, side: str, trade_id: str,
                    product: str, price: Decimal, first_submitted_at: datetime) -> tuple[Any, ...]:
    """kevin.store.matching.find_candidates's parameters under exact rules."""
    opposite = "buy" if side == "sell" else "sell"
    exact = ("abs", Decimal(0), None, None, None)  # today's exact rules: abs 0
    return (product, "USD", counterparty, participant, opposite, w.TRADE_DATE, participant,
            trade_id, price, QUANTITY, MATCH_PER_SIDE, price, price, *exact,
            QUANTITY, QUANTITY, *exact, w.SETTLEMENT_DATE, w.SETTLEMENT_DATE, False, "LDN",
            [], first_submitted_at)


async def _leg(conn: asyncpg.Connection, participant: str, counterparty: str, side: str,
               trade_id: str, product: str, price: Decimal,
               attributes: dict[str, Any]) -> tuple[asyncpg.Record, list[asyncpg.Record]]:
    """Lock and rules, insert, candidates: what every submission does before deciding."""
    lock_id = MatchKey(product, "USD", tuple(sorted((participant, counterparty)))).lock_id()
    await conn.fetchrow(mq.LOCK_MATCH_KEY_AND_RULES, MATCH_LOCK_CLASS, lock_id, product)
    row = await conn.fetchrow(q.INSERT_VERSION, *_insert_args(
        participant, trade_id, 1, "unmatched", "submitted", counterparty, side, product,
        price, attributes, None))
    found = await conn.fetch(mq.CANDIDATES, *_candidate_args(
        participant, counterparty, side, trade_id, product, price, row["first_submitted_at"]))
    return row, found


def _column(values: list[tuple[Any, ...]]) -> list[list[Any]]:
    """APPEND_VERSIONS's arrays (jsonb as text) from INSERT_VERSION-ordered tuples."""
    columns = [list(c) for c in zip(*values, strict=True)]
    for index in (14, 18):
        columns[index] = [jsoncodec.dumps_str(v) for v in columns[index]]
    return columns


async def pair(conn: asyncpg.Connection, run_id: str, client: int, i: int, keys: int) -> None:
    sell_body, buy_body = w.pair_terms(run_id, client, i, keys)
    product, price, attributes = sell_body["product"], w.price(client, i), sell_body["attributes"]
    sell_id, buy_id = sell_body["trade_id"], buy_body["trade_id"]
    async with conn.transaction():
        sell, none = await _leg(conn, w.SELLER, w.BUYER, "sell", sell_id, product, price,
                                attributes)
        assert not none, "the sell found a counterpart: the workload is broken"
        buy, found = await _leg(conn, w.BUYER, w.SELLER, "buy", buy_id, product, price,
                                attributes)
        assert found and found[0]["trade_id"] == sell_id, "the buy did not find its sell"
        match_id = uuid.uuid4()
        await conn.fetch(q.APPEND_VERSIONS, *_column([
            _insert_args(w.BUYER, buy_id, 2, "matched", "matched", w.SELLER, "buy", product,
                         price, attributes, buy["first_submitted_at"], (match_id, sell_id, 2)),
            _insert_args(w.SELLER, sell_id, 2, "matched", "matched", w.BUYER, "sell", product,
                         price, attributes, sell["first_submitted_at"], (match_id, buy_id, 2)),
        ]))
        await conn.fetch(mq.NAMING_ANY, [w.SELLER, w.BUYER], [w.BUYER, w.SELLER],
                         [buy_id, sell_id])
