"""Ageing at read time: each trade read gets the cut-off of what decides it (the pair's
profile, else the product's rules, in force at the instant read) and whether it is
overdue then. Computed, never stored: a new version is not written when a cut-off passes.

Cut-offs are resolved once per (pair, product) per request, not per trade.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import asyncpg

from kevin.domain.cutoffs import cutoff_at, is_overdue
from kevin.domain.models import AgedTrade, Trade, trusted
from kevin.domain.profiles import Cutoff
from kevin.store import matching as match_store
from kevin.store import profiles as profile_store

Clock = Callable[[], datetime]
# (the pair, sorted; product)
CutoffKey = tuple[str, str, str]


def system_clock() -> datetime:
    return datetime.now(UTC)


def cutoff_key(trade: Trade) -> CutoffKey:
    first, second = sorted((trade.participant, trade.counterparty))
    return first, second, trade.product


async def deciding_cutoff(conn: asyncpg.Connection, key: CutoffKey,
                          as_of: datetime | None) -> Cutoff | None:
    """The cut-off of what decides trades of this pair and product, now or at ``as_of``:
    the pair's profile when there is one (its cut-off, or none), else the product's rules
    (theirs, or none)."""
    first, second, product = key
    profile = await profile_store.profile_for_trade(conn, first, second, product, as_of)
    if profile is not None:
        return profile.cutoff
    rules = (await match_store.latest_rules(conn, product) if as_of is None
             else await match_store.rules_as_of(conn, product, as_of))
    return rules.cutoff if rules is not None else None


async def age_trades(conn: asyncpg.Connection, trades: Iterable[Trade],
                     instant: datetime, as_of: datetime | None) -> list[AgedTrade]:
    """The trades with ``cutoff_at`` and ``overdue`` at ``instant`` (``as_of`` when
    given: the profiles and rules in force then decide)."""
    found = list(trades)
    cutoffs: dict[CutoffKey, Cutoff | None] = {}
    for key in {cutoff_key(t) for t in found}:
        cutoffs[key] = await deciding_cutoff(conn, key, as_of)
    return [aged(t, cutoffs[cutoff_key(t)], instant) for t in found]


def aged(trade: Trade, cutoff: Cutoff | None, instant: datetime) -> AgedTrade:
    at = cutoff_at(trade.trade_date, cutoff) if cutoff is not None else None
    # The stored fields are valid already: copied, not validated again.
    values = {name: getattr(trade, name) for name in Trade.model_fields}
    values["cutoff_at"] = at
    values["overdue"] = is_overdue(trade.status, at, instant)
    return trusted(AgedTrade, values)
