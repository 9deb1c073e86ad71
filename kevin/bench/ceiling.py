"""The ceiling: a matched pair's SQL work issued straight over asyncpg.

No HTTP, no request validation, no matcher — only the calls a submission makes into its
PostgreSQL book (kevin.store.book.PostgresBook, the engine's own statements through the
engine's own store functions, so the two cannot drift apart; tests/test_bench.py records
the engine's statements for a pair and compares), one transaction per pair, N
connections. What is left between this and the service is the cost of everything Kevin
adds on top of PostgreSQL.

For a pair, as kevin.engine.service.TradeService.submit → kevin.engine.matching runs it:

  each leg   the match-key lock, the rules and version 1's first submission (its
             version 1 held back, unwritten) · the candidate search (within
             tolerance, else the nearest: the sell finds neither)
  the sell   resting: its version 1 written alone
  the buy    matched: its version 1 and both legs' matched versions in one write ·
             the trades naming either
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

import asyncpg

from kevin.bench import workload as w
from kevin.domain.models import TERM_FIELDS, MatchRef, Trade, TradeTerms, trusted
from kevin.domain.versions import NewVersion, next_version
from kevin.store import database
from kevin.store import matching as match_store
from kevin.store.book import PostgresBook
from kevin.store.matching import MatchKey


@dataclass
class Tally:
    """Pairs completed in the measured window, and their latencies."""

    pairs: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0


PairWork = Callable[[asyncpg.Connection, str, int, int, int], Awaitable[None]]


def _terms(body: dict[str, Any]) -> TradeTerms:
    """A workload body as terms (the workload writes valid ones: not validated again)."""
    return trusted(TradeTerms, {
        **{name: body.get(name) for name in TERM_FIELDS}, "quantity": Decimal(body["quantity"]),
        "price": Decimal(body["price"]), "trade_date": date.fromisoformat(body["trade_date"]),
        "settlement_date": date.fromisoformat(body["settlement_date"])})


async def _leg(conn: asyncpg.Connection, participant: str,
               body: dict[str, Any]) -> tuple[PostgresBook, Trade, list[Trade]]:
    """Lock, rules and first submission, candidates: what every submission does before
    deciding (its version 1 held back by the book, as kevin.engine.service does)."""
    terms = _terms(body)
    rules, profile, first = await match_store.lock_match_key_and_rules(
        conn, MatchKey.of(participant, terms), (participant, body["trade_id"]))
    assert first is not None, "the workload's trade ids are fresh"
    book = PostgresBook(conn, rules={terms.product: rules}, savepoints=False)
    created = book.write_first(NewVersion(
        participant=participant, trade_id=body["trade_id"], version=1, status="unmatched",
        reason="submitted", terms=terms, actor=participant).first_submitted(first))
    book.know_profile(created, profile)
    in_force = await book.rules_in_force(created)
    return book, created, await book.candidates(created, in_force.rules)


async def pair(conn: asyncpg.Connection, run_id: str, client: int, i: int, keys: int) -> None:
    sell_body, buy_body = w.pair_terms(run_id, client, i, keys)
    async with conn.transaction():
        sell_book, sell, none = await _leg(conn, w.SELLER, sell_body)
        assert not none, "the sell found a counterpart: the workload is broken"
        await sell_book.flush()
        book, buy, found = await _leg(conn, w.BUYER, buy_body)
        assert found and found[0].trade_id == sell.trade_id, "the buy did not find its sell"
        match_id = uuid.uuid4()
        await book.append_versions([
            next_version(buy, status="matched", reason="matched", actor=w.BUYER,
                         match=MatchRef(match_id=match_id, counterparty_trade_id=sell.trade_id,
                                        counterparty_version=2)),
            next_version(found[0], status="matched", reason="matched", actor=w.BUYER,
                         match=MatchRef(match_id=match_id, counterparty_trade_id=buy.trade_id,
                                        counterparty_version=2)),
        ])
        await book.naming([buy, sell])


def pair_statements() -> PairWork:
    """The pair's statements, as the engine issues them (see the module docstring)."""
    return pair


async def run(url: str, *, concurrency: int, duration: float, warmup: float, keys: int,
              run_id: str) -> dict[str, Any]:
    """Drive ``concurrency`` connections for ``warmup + duration`` seconds; count the pairs
    that complete inside the measured window."""
    pool = await database.create_pool(url, min_size=concurrency, max_size=concurrency)
    work = pair_statements()
    tally = Tally()
    start = time.perf_counter()
    window = (start + warmup, start + warmup + duration)

    async def client(c: int) -> None:
        i = 0
        async with pool.acquire() as conn:
            while True:
                began = time.perf_counter()
                if began >= window[1]:
                    return
                try:
                    await work(conn, run_id, c, i, keys)
                except asyncpg.PostgresError:
                    tally.errors += 1
                done = time.perf_counter()
                if window[0] <= began and done <= window[1]:
                    tally.pairs += 1
                    tally.latencies.append(done - began)
                i += 1

    try:
        await asyncio.gather(*(client(c) for c in range(concurrency)))
    finally:
        await pool.close()
    return {
        "pairs": tally.pairs, "seconds": duration, "pairs_per_s": round(tally.pairs / duration, 1),
        "errors": tally.errors, "latency": w.latency_summary(tally.latencies),
        "latency_is": "the pair's transaction, BEGIN to COMMIT",
        "latencies_s": tally.latencies,  # for the runner to merge rounds; not reported
    }

