"""Kevin's connections name themselves in pg_stat_activity (application_name): a DBA
looking at a shared server sees which are Kevin's, which command holds them, and which
one sequences the feed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from kevin.dburl import server_settings
from kevin.feed.sequencer import Sequencer
from kevin.lifecycle import cancel_and_wait
from kevin.store import database
from tests.conftest import wait_for
from tests.processes import Server


async def _names(conn: asyncpg.Connection) -> list[str]:
    """The application_name of every other connection to the test database."""
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    rows = await conn.fetch(
        "SELECT application_name FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() ORDER BY application_name")
    return [r["application_name"] for r in rows]


async def test_a_pool_names_its_connections_unless_the_url_does(
        db_url: str, conn: asyncpg.Connection) -> None:
    pool = await database.create_pool(db_url, min_size=2, max_size=2)
    try:
        assert await _names(conn) == ["kevin", "kevin"]
    finally:
        await pool.close()
    pool = await database.create_pool(db_url, min_size=1, max_size=1,
                                      application_name="kevin relay")
    try:
        assert await _names(conn) == ["kevin relay"]
    finally:
        await pool.close()
    pool = await database.create_pool(f"{db_url}?application_name=ops-desk", min_size=1,
                                      max_size=1, application_name="kevin relay")
    try:
        assert await _names(conn) == ["ops-desk"]
    finally:
        await pool.close()


@pytest.mark.breaks_invariants  # nothing is written; the sequencer alone, no versions
async def test_the_feed_sequencers_connection_says_it_leads(
        db_url: str, conn: asyncpg.Connection) -> None:
    pool = await database.create_pool(db_url, min_size=1, max_size=3,
                                      application_name="kevin serve")
    sequencer = Sequencer(pool, poll_interval=5.0)
    task = asyncio.create_task(sequencer.run())
    try:
        async def leading() -> bool:
            return sequencer.leading

        await wait_for(leading)
        assert "kevin serve (feed sequencer)" in await _names(conn)
    finally:
        await cancel_and_wait([task])
        await pool.close()


@pytest.mark.slow
async def test_kevin_serve_names_its_connections(
        db_url: str, conn: asyncpg.Connection, tmp_path: Path) -> None:
    server = Server(tmp_path / "serve.log", KEVIN_DATABASE_URL=db_url).start()
    try:
        await server.wait_ready()

        async def named() -> bool:
            names = await _names(conn)
            return "kevin serve (feed sequencer)" in names and "kevin serve" in names

        await wait_for(named)
        assert set(await _names(conn)) <= {"kevin serve", "kevin serve (feed sequencer)"}
    finally:
        assert await server.stop() == 0, server.log()


def test_the_urls_own_application_name_is_kept() -> None:
    assert server_settings("postgresql://db/kevin", "kevin migrate") == {
        "application_name": "kevin migrate"}
    assert server_settings("postgresql://db/kevin?sslmode=require&application_name=desk",
                           "kevin migrate") == {}
