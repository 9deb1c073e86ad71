"""Alembic environment: runs migrations over asyncpg, one process at a time.

`kevin migrate` / `kevin serve` pass the URL in ``config.attributes["url"]``; a hand-run
`alembic` reads KEVIN_DATABASE_URL.
"""

from __future__ import annotations

import asyncio
import os

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from alembic import context
from kevin.dburl import server_settings, to_sqlalchemy_url
from kevin.schema import metadata

config = context.config

# Any fixed number: serialises concurrent `kevin serve` starts on one database, so two
# processes never run the same migration at once.
MIGRATION_LOCK = 7_346_001


def _url() -> str:
    url = config.attributes.get("url") or os.environ.get("KEVIN_DATABASE_URL")
    if not url:
        raise RuntimeError("no database URL: set KEVIN_DATABASE_URL")
    return url


def _run(connection: Connection) -> None:
    connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
    context.configure(connection=connection, target_metadata=metadata,
                      transaction_per_migration=False)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    url = _url()
    engine = create_async_engine(to_sqlalchemy_url(url), connect_args={
        "server_settings": server_settings(url, "kevin migrate")})
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=to_sqlalchemy_url(_url()), target_metadata=metadata,
                      literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
