"""Agreements between participants: matching profiles (and proposals), one transaction
per operation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from kevin.domain.errors import NotFound
from kevin.domain.profiles import Profile, ProfileVersion
from kevin.store import database
from kevin.store import profiles as profile_store


@dataclass(frozen=True)
class ProfilePage:
    profiles: list[ProfileVersion]
    next_after: str | None


class Agreements:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # --- profiles ----------------------------------------------------------------------

    async def put_profile(self, name: str, profile: Profile, actor: str) -> ProfileVersion:
        async with database.transaction(self.pool) as conn:
            return await profile_store.append_profile(conn, name, profile, actor)

    async def retire_profile(self, name: str, actor: str) -> ProfileVersion:
        async with database.transaction(self.pool) as conn:
            return await profile_store.retire_profile(conn, name, actor)

    async def get_profile(self, name: str, as_of: datetime | None = None) -> ProfileVersion:
        """The profile's version now (or at ``as_of``); NotFound when it did not exist
        then, or was retired."""
        async with database.connection(self.pool) as conn:
            if as_of is None:
                found = await profile_store.latest_profile(conn, name)
            else:
                found = await profile_store.profile_as_of(conn, name, as_of)
        suffix = f" as of {as_of.isoformat()}" if as_of else ""
        if found is None:
            raise NotFound(f"no profile {name}{suffix}", {"name": name})
        if found.retired:
            raise NotFound(f"profile {name} was retired{suffix}",
                           {"name": name, "retired_version": found.version,
                            "retired_at": found.model_dump(mode="json")["recorded_at"]})
        return found

    async def list_profiles(self, after: str, limit: int,
                            as_of: datetime | None = None) -> ProfilePage:
        async with database.connection(self.pool) as conn:
            found = await profile_store.live_profiles(conn, after, limit + 1, as_of)
        more = len(found) > limit
        found = found[:limit]
        return ProfilePage(found, found[-1].name if more else None)
