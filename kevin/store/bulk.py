"""The store's side of bulk submission: the statements of kevin.store.bulk_queries, each
doing for a whole batch what its single counterpart does for one trade."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

import asyncpg

from kevin.domain.errors import VersionConflict
from kevin.domain.models import MatchRef, Trade
from kevin.domain.rules import Rules, RulesVersion
from kevin.store import bulk_queries as q
from kevin.store.matching import (
    MATCH_LOCK_CLASS,
    MATCH_PER_SIDE,
    MatchKey,
    _key_args,
    _rules_from_row,
    _within_args,
)
from kevin.store.trades import NewVersion, trade_from_new, trade_from_row, version_args


def _lines(rows: Iterable[Sequence[object]]) -> list[Sequence[object]]:
    """A batch's rows as the one jsonb parameter its statement takes (see bulk_queries):
    the pool's jsonb codec writes them with kevin.jsoncodec, in one orjson call."""
    return list(rows)


async def lock_match_keys(conn: asyncpg.Connection, keys: Iterable[MatchKey]) -> None:
    """kevin.store.matching.lock_match_keys in one round trip (same ascending order)."""
    lock_ids = sorted({key.lock_id() for key in keys})
    if lock_ids:
        await conn.fetchval(q.LOCK_MATCH_KEYS, MATCH_LOCK_CLASS, lock_ids)


async def latest_rules(conn: asyncpg.Connection,
                       products: Iterable[str]) -> dict[str, RulesVersion]:
    rows = await conn.fetch(q.SELECT_LATEST_RULES_MANY, sorted(set(products)))
    return {row["product"]: _rules_from_row(row) for row in rows}


async def insert_new_trades(
    conn: asyncpg.Connection, news: Sequence[NewVersion],
    matches: Sequence[tuple[MatchRef, int | None] | None],
) -> dict[str, Trade]:
    """Insert each new trade's version 1 and, where ``matches`` gives its match (and the
    rules version that decided it), its version 2 (matched), with their feed rows, in one
    round trip (bulk_queries.INSERT_NEW_TRADES). A trade_id that exists already is
    skipped. Returns each written trade's latest version, by trade_id."""
    if not news:
        return {}
    rows = await conn.fetch(q.INSERT_NEW_TRADES, _lines(
        (*version_args(new), None, None, None, None) if m is None else
        (*version_args(new), m[0].match_id, m[0].counterparty_trade_id, m[0].counterparty_version,
         m[1])
        for new, m in zip(news, matches, strict=True)))
    by_id = {new.trade_id: (new, second) for new, second in zip(news, matches, strict=True)}
    written: dict[str, Trade] = {}
    for row in rows:
        new, second = by_id[row["trade_id"]]
        if second is not None:
            new = replace(new, version=new.version + 1, status="matched", reason="matched",
                          match=second[0], rules_version=second[1])
        written[new.trade_id] = trade_from_new(new, row["first_submitted_at"],
                                               row["recorded_at"])
    return written


async def append_versions(conn: asyncpg.Connection, news: Sequence[NewVersion]) -> None:
    """kevin.store.trades.append_versions without reading the versions back: a batch
    answers with its own trades, and these are the counterparties'."""
    if not news:
        return
    rows = await conn.fetch(q.APPEND_VERSIONS_COUNTED, _lines(version_args(new) for new in news))
    if len(rows) != len(news):
        done = {(r["participant"], r["trade_id"]) for r in rows}
        lost = next(new for new in news if (new.participant, new.trade_id) not in done)
        raise VersionConflict(lost.version - 1, lost.version - 1)


async def latest_many(conn: asyncpg.Connection, participant: str,
                      trade_ids: Iterable[str]) -> dict[str, Trade]:
    ids = list(trade_ids)
    if not ids:
        return {}
    rows = await conn.fetch(q.SELECT_LATEST_MANY, participant, ids)
    return {row["trade_id"]: trade_from_row(row) for row in rows}


def is_exact(rules: Rules) -> bool:
    """Exact on every field: the batch's equi-join fast path applies."""
    return rules.is_exact()


def _key(trade: Trade) -> tuple[object, ...]:
    opposite = "buy" if trade.side == "sell" else "sell"
    return (trade.product, trade.currency, trade.counterparty, trade.participant, opposite,
            trade.trade_date)


async def candidates_many(
    conn: asyncpg.Connection, trades: Sequence[tuple[Trade, Rules]]
) -> list[tuple[list[tuple[Trade, bool]], bool]]:
    """Per trade (under its rules): its best candidates within tolerance, each with
    whether a live mismatch list names it; and whether anything agrees with it on the
    key fields and trade date at all (erring towards yes). See bulk_queries."""
    found: list[list[tuple[Trade, bool]]] = [[] for _ in trades]
    exact = [i for i, (_, rules) in enumerate(trades) if is_exact(rules)]
    tolerant = [i for i, (_, rules) in enumerate(trades) if not is_exact(rules)]
    if exact:
        rows = await conn.fetch(q.EXACT_CANDIDATES, _lines([
            (*_key(t), t.trade_id, t.price, t.quantity, t.settlement_date, t.location)
            for t, _ in (trades[i] for i in exact)]))
        for row in rows:
            found[exact[row["batch_ord"] - 1]].append((trade_from_row(row), row["pointed_at"]))
    if tolerant:
        rows = await conn.fetch(q.TOLERANT_CANDIDATES, _lines([
            (*_key_args(t, MATCH_PER_SIDE), *_within_args(t, rules))
            for t, rules in (trades[i] for i in tolerant)]))
        for row in rows:
            found[tolerant[row["batch_ord"] - 1]].append(
                (trade_from_row(row), row["pointed_at"]))
    alone = [i for i in range(len(trades)) if not found[i]]
    counterparts: set[int] = set()
    if alone:
        rows = await conn.fetch(q.WITH_COUNTERPARTS,
                                _lines(_key(trades[i][0]) for i in alone))
        counterparts = {alone[row["ord"] - 1] for row in rows}
    return [(found[i], bool(found[i]) or i in counterparts) for i in range(len(trades))]
