"""The store's side of matching: match-key locks, candidate search, rules versions,
broken pairs, alleged trades. SQL lives in kevin.store.matching_queries."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from kevin import jsoncodec
from kevin.domain.matching import TradeRef
from kevin.domain.models import Trade, TradeTerms
from kevin.domain.profiles import ProfileVersion
from kevin.domain.rules import Rules, RulesVersion
from kevin.domain.tolerances import AmountTolerance
from kevin.store import matching_queries as q
from kevin.store.matching_queries import NEAREST_PER_SIDE as NEAREST_PER_SIDE
from kevin.store.profiles import profile_from_row
from kevin.store.trades import trade_from_row

# Namespaces (first key of the two-int advisory lock form) for Kevin's own locks.
MATCH_LOCK_CLASS = 0x4B564D4B  # "KVMK": a match key
RULES_LOCK_CLASS = 0x4B565255  # "KVRU": a product's rules


# --- match keys and their locks ----------------------------------------------------------


@dataclass(frozen=True, order=True)
class MatchKey:
    """What two sides of one trade share: product, currency and the (unordered) pair of
    participants. Everything that can match or mismatch lives under one key."""

    product: str
    currency: str
    participants: tuple[str, str]

    @classmethod
    def of(cls, participant: str, terms: TradeTerms) -> MatchKey:
        pair = sorted((participant, terms.counterparty))
        return cls(terms.product, terms.currency, (pair[0], pair[1]))

    def lock_id(self) -> int:
        """A stable signed 32-bit hash (the second key of pg_advisory_xact_lock(int, int))."""
        return _lock_id("\x1f".join((self.product, self.currency, *self.participants)))


async def lock_match_keys(conn: asyncpg.Connection, keys: Iterable[MatchKey]) -> None:
    """Take the transaction-scoped lock of every key, in ascending lock-id order (no
    deadlock between two transactions that each need two keys). See LOCK_MATCH_KEY."""
    for lock_id in sorted({key.lock_id() for key in keys}):
        await conn.execute(q.LOCK_MATCH_KEY, MATCH_LOCK_CLASS, lock_id)


async def lock_match_key_and_rules(
    conn: asyncpg.Connection, key: MatchKey, trade: TradeRef
) -> tuple[RulesVersion | None, ProfileVersion | None, datetime | None]:
    """Lock one key (see lock_match_keys) and read its product's latest rules, the
    pair's live profile for it, and when the new ``trade`` is first submitted, in one
    round trip (matching_queries.LOCK_MATCH_KEY_AND_RULES); None for what there is not,
    the first submission None when the trade_id is taken already."""
    row = await conn.fetchrow(q.LOCK_MATCH_KEY_AND_RULES, MATCH_LOCK_CLASS, key.lock_id(),
                              key.product, *key.participants, *trade)
    rules = _rules_from_row(row) if row["version"] is not None else None
    profile = profile_from_row(row["profile"]) if row["profile"] is not None else None
    return rules, profile, None if row["taken"] else row["first_submitted_at"]


def _lock_id(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "big",
                          signed=True)


# --- candidates ------------------------------------------------------------------------

def _form_values(field: str, tolerance: AmountTolerance) -> dict[str, Any]:
    return {f"{field}_form": tolerance.form, f"{field}_amount": tolerance.amount,
            f"{field}_cap": tolerance.max_abs, f"{field}_below": tolerance.below,
            f"{field}_above": tolerance.above}


def candidate_values(trade: Trade, rules: Rules) -> dict[str, Any]:
    """The candidate search's parameters (matching_queries.CANDIDATE_SEARCH), by name:
    the trade and its segment, then each field's window and tolerance form."""
    tolerances = rules.tolerances
    low, high = tolerances.price.bounds(trade.price)
    q_low, q_high = tolerances.quantity.bounds(trade.quantity)
    s_low, s_high = tolerances.settlement_date.bounds(trade.settlement_date)
    equivalents = tolerances.location.matching(trade.location)
    return {
        "product": trade.product, "currency": trade.currency,
        "resting_participant": trade.counterparty, "participant": trade.participant,
        "resting_side": "buy" if trade.side == "sell" else "sell",
        "trade_date": trade.trade_date, "trade_id": trade.trade_id, "price": trade.price,
        "quantity": trade.quantity,
        "price_low": low, "price_high": high, **_form_values("price", tolerances.price),
        "quantity_low": q_low, "quantity_high": q_high,
        **_form_values("quantity", tolerances.quantity),
        "settlement_low": s_low, "settlement_high": s_high,
        "any_location": equivalents is None, "location": trade.location,
        "location_set": sorted(e for e in equivalents if e is not None) if equivalents else [],
        "first_submitted_at": trade.first_submitted_at,
    }


async def find_candidates(conn: asyncpg.Connection, trade: Trade, rules: Rules) -> list[Trade]:
    """The resting counterparts ``decide`` needs to decide ``trade``: the best one within
    tolerance on each side of its price; or, when there is none, the nearest three on
    each side (for the mismatch list). Never a pair an operator broke. Index-driven: the
    cost depends on the trades near this price, not on the depth of the book."""
    rows = await conn.fetch(q.CANDIDATES,
                            *q.CANDIDATE_SEARCH.args(candidate_values(trade, rules)))
    return [trade_from_row(r) for r in rows]


async def find_candidates_many(conn: asyncpg.Connection,
                               trades: Sequence[tuple[Trade, Rules]]) -> list[list[Trade]]:
    """``find_candidates`` for each trade (under its rules), in order, in one round trip."""
    found: list[list[Trade]] = [[] for _ in trades]
    if not trades:
        return found
    rows = await conn.fetch(q.CANDIDATES_MANY, q.CANDIDATE_SEARCH.lines(
        candidate_values(trade, rules) for trade, rules in trades))
    for row in rows:
        found[row["line_ord"] - 1].append(trade_from_row(row))
    return found


async def naming(conn: asyncpg.Connection, trade: Trade) -> list[Trade]:
    """Live mismatched trades whose mismatch list names ``trade`` (as it was)."""
    rows = await conn.fetch(q.NAMING, trade.counterparty, trade.participant,
                            trade.trade_id)
    return [trade_from_row(r) for r in rows]


async def naming_rows(conn: asyncpg.Connection,
                      trades: Sequence[Trade]) -> list[asyncpg.Record]:
    """``naming`` for each of ``trades``, in one round trip, in that order (as rows)."""
    if not trades:
        return []
    # (participant, counterparty, trade_id) of the trades naming each: its mirror.
    return list(await conn.fetch(q.NAMING_ANY, orjson.Fragment(jsoncodec.dumps(
        [(t.counterparty, t.participant, t.trade_id) for t in trades]))))


async def naming_any(conn: asyncpg.Connection, trades: Sequence[Trade]) -> list[Trade]:
    """``naming`` for each of ``trades``, in one round trip, in that order."""
    return [trade_from_row(r) for r in await naming_rows(conn, trades)]


# --- rules -----------------------------------------------------------------------------


def _rules_from_row(row: Mapping[str, Any]) -> RulesVersion:
    return RulesVersion(product=row["product"], version=row["version"],
                        recorded_at=row["recorded_at"], actor=row["actor"], **row["body"])


async def latest_rules(conn: asyncpg.Connection, product: str) -> RulesVersion | None:
    row = await conn.fetchrow(q.SELECT_LATEST_RULES, product)
    return _rules_from_row(row) if row is not None else None


async def rules_as_of(
    conn: asyncpg.Connection, product: str, instant: datetime
) -> RulesVersion | None:
    row = await conn.fetchrow(q.SELECT_RULES_AS_OF, product, instant)
    return _rules_from_row(row) if row is not None else None


async def append_rules(
    conn: asyncpg.Connection, product: str, rules: Rules, actor: str
) -> RulesVersion:
    """Record a new version of a product's rules (append-only; the old stays readable)."""
    await conn.execute(q.LOCK_MATCH_KEY, RULES_LOCK_CLASS, _lock_id(product))
    previous = await conn.fetchval(q.FLIP_LATEST_RULES, product)
    row = await conn.fetchrow(q.INSERT_RULES, product, (previous or 0) + 1,
                              rules.model_dump(mode="json"), actor)
    return _rules_from_row(row)


# --- operator overrides and alleged ----------------------------------------------------


def _ordered(a: TradeRef, b: TradeRef) -> tuple[TradeRef, TradeRef]:
    return (a, b) if a <= b else (b, a)


async def record_broken_pair(
    conn: asyncpg.Connection, a: TradeRef, b: TradeRef, match_id: UUID, comment: str | None
) -> None:
    first, second = _ordered(a, b)
    await conn.execute(q.INSERT_BROKEN_PAIR, *first, *second, match_id, comment)


async def broken_with(conn: asyncpg.Connection, trade: TradeRef) -> set[TradeRef]:
    return {(r["participant"], r["trade_id"])
            for r in await conn.fetch(q.SELECT_BROKEN_WITH, *trade)}


async def live_match(conn: asyncpg.Connection, match_id: UUID) -> list[Trade]:
    return [trade_from_row(r) for r in await conn.fetch(q.SELECT_LIVE_MATCH, match_id)]


async def alleged(
    conn: asyncpg.Connection, participant: str, product: str | None,
    after: tuple[str, str], limit: int,
) -> list[Trade]:
    rows = await conn.fetch(q.SELECT_ALLEGED, participant, product, *after, limit)
    return [trade_from_row(r) for r in rows]
