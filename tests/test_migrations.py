"""alembic is the one source of the schema; kevin.schema describes the same thing."""

from __future__ import annotations

import asyncio
import os
import sys

import asyncpg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from kevin.dburl import to_asyncpg_dsn, to_sqlalchemy_url
from kevin.schema import metadata
from kevin.store import database


async def _schema_diff(url: str) -> list:
    engine = create_async_engine(to_sqlalchemy_url(url))
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), metadata))
    finally:
        await engine.dispose()


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(to_asyncpg_dsn(url))
    try:
        rows = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r["tablename"] for r in rows}
    finally:
        await conn.close()


async def test_upgrade_head_on_an_empty_database_matches_the_metadata(empty_db_url):
    await database.migrate(empty_db_url)
    assert await _schema_diff(empty_db_url) == []
    assert set(metadata.tables) <= await _tables(empty_db_url)


async def test_downgrade_to_base_and_up_again(empty_db_url):
    await database.migrate(empty_db_url)
    await database.migrate(empty_db_url, "base", downgrade=True)
    assert await _tables(empty_db_url) == {"alembic_version"}
    await database.migrate(empty_db_url)
    assert await _schema_diff(empty_db_url) == []


async def test_concurrent_migrations_from_several_processes(empty_db_url):
    """Several `kevin serve` starting at once must not trip over each other's migration."""
    env = {**os.environ, "KEVIN_DATABASE_URL": empty_db_url}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kevin.cli", "migrate", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        for _ in range(3)
    ]
    results = [await asyncio.wait_for(p.communicate(), 60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], results
    assert await _schema_diff(empty_db_url) == []
