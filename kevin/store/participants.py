"""Participants and their API keys (stored only as SHA-256 hashes)."""

from __future__ import annotations

import asyncpg

from kevin.domain.errors import Conflict, NotFound, ParticipantExists
from kevin.domain.keys import hash_key, new_key
from kevin.store import queries as q


async def create(conn: asyncpg.Connection, name: str) -> str:
    """Create a participant with a fresh key; returns the key (shown once, never stored)."""
    if await conn.fetchval(q.INSERT_PARTICIPANT, name) is None:
        raise ParticipantExists(f"participant {name} already exists")
    api_key = new_key()
    await conn.execute(q.INSERT_API_KEY, hash_key(api_key), name)
    return api_key


async def for_key(conn: asyncpg.Connection, api_key: str) -> str | None:
    """The participant owning this key. The lookup is by hash, an index probe whose
    timing says nothing about how much of a guessed key was right."""
    return await conn.fetchval(q.SELECT_KEY_PARTICIPANT, hash_key(api_key))


async def exists(conn: asyncpg.Connection, name: str) -> bool:
    return await conn.fetchval(q.SELECT_PARTICIPANT, name) is not None


async def set_bic(conn: asyncpg.Connection, name: str, bic: str | None) -> None:
    """Register (or with None, remove) the participant's BIC, in its 11-character form."""
    try:
        updated = await conn.fetchval(q.UPDATE_PARTICIPANT_BIC, name, bic)
    except asyncpg.UniqueViolationError as error:
        raise Conflict(f"BIC {bic} is registered to another participant",
                       {"bic": bic}) from error
    if updated is None:
        raise NotFound(f"no participant {name}", {"participant": name})


async def bic_of(conn: asyncpg.Connection, name: str) -> str | None:
    return await conn.fetchval(q.SELECT_PARTICIPANT_BIC, name)


async def by_bic(conn: asyncpg.Connection, bics: list[str]) -> dict[str, str]:
    """The participants these BICs (11-character form) name: BIC → participant."""
    return {row["bic"]: row["name"] for row in await conn.fetch(q.SELECT_PARTICIPANTS_BY_BIC,
                                                                bics)}
