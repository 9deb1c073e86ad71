"""Participants and their API keys (stored only as SHA-256 hashes)."""

from __future__ import annotations

import asyncpg

from kevin.domain.errors import ParticipantExists
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
