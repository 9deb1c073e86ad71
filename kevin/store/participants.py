"""Participants and their API keys (stored only as SHA-256 hashes)."""

from __future__ import annotations

import asyncpg

from kevin.domain.errors import Conflict, NotFound, ParticipantExists
from kevin.domain.keys import KEY_REVOKED_CHANNEL, hash_key, key_id, new_key
from kevin.domain.participants import ApiKey, ApiKeyCreated, ParticipantSummary
from kevin.store import queries as q


async def create(conn: asyncpg.Connection, name: str,
                 label: str | None = None) -> ApiKeyCreated:
    """Create a participant with a fresh key (shown once, never stored), labelled."""
    if await conn.fetchval(q.INSERT_PARTICIPANT, name) is None:
        raise ParticipantExists(f"participant {name} already exists")
    return await _insert_key(conn, name, label)


async def _insert_key(conn: asyncpg.Connection, name: str,
                      label: str | None) -> ApiKeyCreated:
    api_key = new_key()
    row = await conn.fetchrow(q.INSERT_API_KEY, hash_key(api_key), name, label)
    return ApiKeyCreated(participant=name, key_id=key_id(row["key_hash"]), api_key=api_key,
                         created_at=row["created_at"], label=row["label"])


def _api_key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(key_id=key_id(row["key_hash"]), created_at=row["created_at"],
                  revoked_at=row["revoked_at"], last_used_at=row["last_used_at"],
                  label=row["label"])


async def _require(conn: asyncpg.Connection, name: str) -> None:
    if not await exists(conn, name):
        raise NotFound(f"no participant {name}", {"participant": name})


async def add_key(conn: asyncpg.Connection, name: str,
                  label: str | None = None) -> ApiKeyCreated:
    """Another key for the participant, labelled; its keys before stay valid."""
    await _require(conn, name)
    return await _insert_key(conn, name, label)


async def every(conn: asyncpg.Connection) -> list[ParticipantSummary]:
    """Every participant, by name."""
    return [ParticipantSummary(name=r["name"], bic=r["bic"], created_at=r["created_at"])
            for r in await conn.fetch(q.SELECT_PARTICIPANTS)]


async def every_key(conn: asyncpg.Connection) -> dict[str, list[ApiKey]]:
    """Every participant's keys (those with any), revoked ones too, oldest first."""
    found: dict[str, list[ApiKey]] = {}
    for row in await conn.fetch(q.SELECT_ALL_API_KEYS):
        found.setdefault(row["participant"], []).append(_api_key(row))
    return found


async def keys_of(conn: asyncpg.Connection, name: str) -> list[ApiKey]:
    """The participant's keys, revoked ones too, oldest first."""
    await _require(conn, name)
    return [_api_key(row) for row in await conn.fetch(q.SELECT_API_KEYS, name)]


async def revoke_key(conn: asyncpg.Connection, name: str, public_id: str) -> ApiKey:
    """Revoke the participant's key ``public_id`` (key_id); a revoked one stays revoked
    as it was. Every Kevin process is told at commit (KEY_REVOKED_CHANNEL)."""
    await _require(conn, name)
    row = await conn.fetchrow(q.REVOKE_API_KEY, name, bytes.fromhex(public_id))
    if row is None:
        raise NotFound(f"participant {name} has no key {public_id}",
                       {"participant": name, "key_id": public_id})
    await conn.execute(q.NOTIFY_KEY_REVOKED, KEY_REVOKED_CHANNEL, public_id)
    return _api_key(row)


async def for_key(conn: asyncpg.Connection, api_key: str) -> str | None:
    """The participant owning this key, if it is valid (its last use noted). The lookup
    is by hash, an index probe whose timing says nothing about how much of a guessed key
    was right."""
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
