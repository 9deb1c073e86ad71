"""The store's side of matching profiles: versions, claims, the profile in force for a
trade. SQL lives in kevin.store.profile_queries."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from kevin.domain.errors import NotFound, ProfileClaimed, ValidationFailed
from kevin.domain.profiles import Profile, ProfileVersion
from kevin.store import profile_queries as q

# The first key of the two-int advisory lock form: a profile's name ("KVPR").
PROFILE_LOCK_CLASS = 0x4B565052
_LOCK = "SELECT pg_advisory_xact_lock($1::int, $2::int)"


def _lock_id(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=4).digest(), "big",
                          signed=True)


def profile_from_row(row: Mapping[str, Any]) -> ProfileVersion:
    """A stored version as a model. Versions never change, so each is validated once per
    process (a submission reads the pair's profile on the hot path); the key includes the
    instant it was recorded, so two databases' same-named versions never share an entry."""
    key = (row["name"], row["version"], str(row["recorded_at"]))
    found = _parsed.get(key)
    if found is None:
        found = ProfileVersion(name=row["name"], version=row["version"],
                               retired=row["retired"], recorded_at=row["recorded_at"],
                               actor=row["actor"], **row["body"])
        if len(_parsed) >= _PARSED_LIMIT:
            _parsed.clear()
        _parsed[key] = found
    return found


_PARSED_LIMIT = 4096
_parsed: dict[tuple[str, int, str], ProfileVersion] = {}


async def _unknown_participants(conn: asyncpg.Connection, names: Sequence[str]) -> list[str]:
    known = {r["name"] for r in await conn.fetch(q.SELECT_PARTICIPANTS_NAMED, list(names))}
    return [name for name in names if name not in known]


async def append_profile(conn: asyncpg.Connection, name: str, profile: Profile,
                         actor: str) -> ProfileVersion:
    """Record a new version of a profile. Unknown participants: ValidationFailed; the
    (pair, product) claimed by another live profile: ProfileClaimed."""
    unknown = await _unknown_participants(conn, profile.participants)
    if unknown:
        raise ValidationFailed(
            f"unknown participant {unknown[0]}",
            [{"field": f"participants.{profile.participants.index(n)}",
              "message": f"no participant {n}"} for n in unknown])
    await conn.execute(_LOCK, PROFILE_LOCK_CLASS, _lock_id(name))
    previous = await conn.fetchrow(q.FLIP_LATEST_PROFILE, name)
    version = (previous["version"] if previous else 0) + 1
    return await _insert(conn, name, version, False, profile, actor)


async def retire_profile(conn: asyncpg.Connection, name: str, actor: str) -> ProfileVersion:
    """Append a retiring version (history stays); NotFound if there is no live one."""
    await conn.execute(_LOCK, PROFILE_LOCK_CLASS, _lock_id(name))
    current = await conn.fetchrow(q.SELECT_LATEST_PROFILE, name)
    if current is None or current["retired"]:
        raise NotFound(f"no profile {name}", {"name": name})
    await conn.fetchrow(q.FLIP_LATEST_PROFILE, name)
    return await _insert(conn, name, current["version"] + 1, True,
                         profile_from_row(current).profile(), actor)


async def _insert(conn: asyncpg.Connection, name: str, version: int, retired: bool,
                  profile: Profile, actor: str) -> ProfileVersion:
    first, second = profile.pair
    try:
        # A savepoint: the claim's unique violation must leave the transaction usable
        # to read who holds the claim.
        async with conn.transaction():
            row = await conn.fetchrow(q.INSERT_PROFILE, name, version, retired, first, second,
                                      profile.product, profile.content(), actor)
    except asyncpg.UniqueViolationError as error:
        if error.constraint_name != "ix_profiles_one_claim":
            raise
        holder = await conn.fetchrow(q.SELECT_PROFILE_FOR_TRADE, first, second,
                                     profile.product)
        raise ProfileClaimed(
            f"{first} and {second} already have a profile for {profile.product}",
            {"participants": [first, second], "product": profile.product,
             "claimed_by": holder["name"] if holder is not None and
             holder["product"] == profile.product else None}) from error
    except asyncpg.ForeignKeyViolationError as error:  # a participant vanished meanwhile
        raise ValidationFailed("unknown participant", [{"field": "participants",
                                                        "message": str(error)}]) from error
    return profile_from_row(row)


async def latest_profile(conn: asyncpg.Connection, name: str) -> ProfileVersion | None:
    row = await conn.fetchrow(q.SELECT_LATEST_PROFILE, name)
    return profile_from_row(row) if row is not None else None


async def profile_as_of(conn: asyncpg.Connection, name: str,
                        instant: datetime) -> ProfileVersion | None:
    row = await conn.fetchrow(q.SELECT_PROFILE_AS_OF, name, instant)
    return profile_from_row(row) if row is not None else None


async def live_profiles(conn: asyncpg.Connection, after: str, limit: int,
                        as_of: datetime | None = None) -> list[ProfileVersion]:
    if as_of is None:
        rows = await conn.fetch(q.SELECT_LIVE_PROFILES, after, limit)
    else:
        rows = await conn.fetch(q.SELECT_PROFILES_AS_OF, as_of, after, limit)
    return [profile_from_row(r) for r in rows]


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


async def profile_for_trade(conn: asyncpg.Connection, participant: str, counterparty: str,
                            product: str,
                            as_of: datetime | None = None) -> ProfileVersion | None:
    """The live profile deciding a trade between these two participants in ``product``
    (the pair's profile for the product, else its ``*`` one), now or at ``as_of``."""
    first, second = _pair(participant, counterparty)
    if as_of is None:
        row = await conn.fetchrow(q.SELECT_PROFILE_FOR_TRADE, first, second, product)
    else:
        row = await conn.fetchrow(q.SELECT_PROFILE_FOR_TRADE_AS_OF, first, second, product,
                                  as_of)
    return profile_from_row(row) if row is not None else None


async def live_profiles_of(conn: asyncpg.Connection,
                           participant: str) -> list[ProfileVersion]:
    """Every live profile naming ``participant``."""
    return [profile_from_row(r)
            for r in await conn.fetch(q.SELECT_LIVE_PROFILES_OF, participant)]
