"""The web workbench's own operations: sessions, and the reads behind the exceptions page.

Every change a page makes goes through ``kevin.engine.service.TradeService``, the same
operations the JSON API calls; this module only adds what a browser needs on top.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from kevin.domain.errors import Unauthorized
from kevin.domain.models import Trade
from kevin.store import database, participants
from kevin.store import workbench as store
from kevin.store.workbench import TABS, ExceptionsQuery

SESSION_LIFETIME = timedelta(hours=8)
# A tab's count stops here: counting a whole book on every live refresh costs too much.
COUNT_BOUND = 1000


@dataclass(frozen=True)
class Session:
    participant: str | None  # None: the admin
    csrf_token: str
    expires_at: datetime

    @property
    def is_admin(self) -> bool:
        return self.participant is None


class Workbench:
    def __init__(self, pool: asyncpg.Pool, admin_token: str | None,
                 lifetime: timedelta = SESSION_LIFETIME) -> None:
        self.pool = pool
        self.admin_token = admin_token
        self.lifetime = lifetime

    def _is_admin_token(self, credential: str) -> bool:
        return self.admin_token is not None and hmac.compare_digest(
            credential.encode(), self.admin_token.encode())

    async def login(self, credential: str) -> tuple[str, Session]:
        """A new session for an API key or the admin token: its cookie token and itself."""
        credential = credential.strip()
        if not credential:
            raise Unauthorized("enter an API key or the admin token")
        async with database.transaction(self.pool) as conn:
            if self._is_admin_token(credential):
                participant = None
            else:
                participant = await participants.for_key(conn, credential)
                if participant is None:
                    raise Unauthorized("the API key is not valid")
            token, csrf_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
            expires_at = await store.insert_session(
                conn, token, participant, credential, csrf_token, self.lifetime)
        return token, Session(participant, csrf_token, expires_at)

    async def session(self, token: str) -> Session | None:
        """The live session behind a cookie token, or None (unknown, expired, logged out,
        or its credential no longer valid)."""
        async with database.connection(self.pool) as conn:
            found = await store.find_session(conn, token)
        if found is None:
            return None
        if found.participant is None:
            # The admin token may have been changed since: the session ends with it.
            if self.admin_token is None or not hmac.compare_digest(
                    found.credential_hash, participants.hash_key(self.admin_token)):
                return None
        return Session(found.participant, found.csrf_token, found.expires_at)

    async def logout(self, token: str) -> None:
        async with database.transaction(self.pool) as conn:
            await store.delete_session(conn, token)

    async def exceptions(self, query: ExceptionsQuery) -> tuple[list[Trade], dict[str, int]]:
        """One tab's trades, and the count on every tab, under the same filters."""
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        async with database.connection(self.pool) as conn:
            trades = await store.exceptions(conn, query, today)
            counts = await store.tab_counts(conn, query, today, COUNT_BOUND)
        return trades, counts


__all__ = ["TABS", "COUNT_BOUND", "ExceptionsQuery", "Session", "Workbench"]
