"""One matched pair's SQL, statement for statement as the engine issues it.

PROVISIONAL until the matching engine lands: the candidate query below stands in for the
matching store's; the rest are kevin.store.queries' own constants.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

import asyncpg

from kevin.bench import workload as w
from kevin.bench.ceiling import version_args
from kevin.store import queries as q

# A constant column list spliced into constant SQL; values are bound.
CANDIDATE = f"""
SELECT {q.TRADE_COLUMNS} FROM trades
WHERE latest AND status IN ('unmatched', 'mismatched')
  AND product = $1 AND currency = $2 AND participant = $3 AND counterparty = $4
  AND side = $5 AND price = $6
ORDER BY first_submitted_at, trade_id
LIMIT 1
"""  # noqa: S608


async def pair(conn: asyncpg.Connection, run_id: str, client: int, i: int, keys: int) -> None:
    sell_body, buy_body = w.pair_terms(run_id, client, i, keys)
    terms = {"product": sell_body["product"], "quantity": Decimal(100),
             "price": w.price(client, i), "attributes": sell_body["attributes"]}
    sell_id, buy_id = sell_body["trade_id"], buy_body["trade_id"]
    async with conn.transaction():
        await conn.fetchrow(q.INSERT_VERSION, *version_args(
            w.SELLER, sell_id, 1, "unmatched", "submitted", w.BUYER, "sell", terms))
        await conn.fetchrow(CANDIDATE, terms["product"], "USD", w.BUYER, w.SELLER, "buy",
                            terms["price"])
        await conn.fetchrow(q.INSERT_VERSION, *version_args(
            w.BUYER, buy_id, 1, "unmatched", "submitted", w.SELLER, "buy", terms))
        resting = await conn.fetchrow(CANDIDATE, terms["product"], "USD", w.SELLER, w.BUYER,
                                      "sell", terms["price"])
        assert resting is not None and resting["trade_id"] == sell_id
        match_id = uuid.uuid4()
        await conn.fetchval(q.FLIP_LATEST, w.SELLER, sell_id, 1)
        await conn.fetchrow(q.INSERT_VERSION, *version_args(
            w.SELLER, sell_id, 2, "matched", "matched", w.BUYER, "sell", terms,
            (match_id, buy_id, 2)))
        await conn.fetchval(q.FLIP_LATEST, w.BUYER, buy_id, 1)
        await conn.fetchrow(q.INSERT_VERSION, *version_args(
            w.BUYER, buy_id, 2, "matched", "matched", w.SELLER, "buy", terms,
            (match_id, sell_id, 2)))
