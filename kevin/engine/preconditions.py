"""What a change to a trade (PUT, DELETE) must find before it is made — one set of rules
for the single path (kevin.engine.service) and a group commit (kevin.engine.group_commit),
so that a request gets the same answer whichever runs it."""

from __future__ import annotations

from typing import Literal

import asyncpg

from kevin.domain.errors import (
    AgreementRequired,
    NotFound,
    PreconditionRequired,
    TradeCancelled,
    VersionConflict,
)
from kevin.domain.models import Trade
from kevin.store import profiles as profile_store

# What If-Match named: a version, "*" (whatever version is current, RFC 9110), or nothing.
IfMatch = int | Literal["*"] | None


def current_for_change(current: Trade | None, trade_id: str, if_match: IfMatch) -> Trade:
    """``current`` (the trade's latest version) if it may be changed, else the error the
    request gets: 404 no trade, 428 no If-Match, 409 cancelled, 412 a stale If-Match."""
    if current is None:
        raise NotFound(f"no trade {trade_id}")
    if if_match is None:
        raise PreconditionRequired(details={"current_version": current.version})
    if current.status == "cancelled":
        raise TradeCancelled(f"trade {trade_id} is cancelled",
                             {"current_version": current.version})
    if if_match != "*" and current.version != if_match:
        raise VersionConflict(current.version, if_match)
    return current


async def unless_cancelled_by_agreement(conn: asyncpg.Connection, matched: Trade) -> None:
    """A profile of the pair saying ``"matched_cancel": "by_agreement"`` refuses a plain
    cancel of a matched trade: the two sides agree it through a cancel proposal."""
    profile = await profile_store.profile_for_trade(conn, matched.participant,
                                                    matched.counterparty, matched.product)
    if profile is not None and profile.matched_cancel == "by_agreement":
        raise AgreementRequired(
            f"profile {profile.name} says a matched trade is cancelled only by agreement: "
            "propose a cancel (POST /v1/proposals, kind cancel)",
            {"profile": profile.name, "profile_version": profile.version,
             "counterparty_trade_id": matched.match.counterparty_trade_id
             if matched.match else None})
