"""alembic is the one source of the schema; kevin.schema describes the same thing."""

from __future__ import annotations

import asyncio
import os
import sys

import asyncpg
import orjson
import pytest
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


_FEED_KEYS = ("uq_feed_participant_proposal_id_proposal_version",
              "uq_feed_participant_notice_id")


async def _feed_keys(conn: asyncpg.Connection, names: tuple[str, ...] = _FEED_KEYS
                     ) -> dict[str, tuple[bool, str]]:
    """Each of ``names``: (whether it is a constraint, its index's definition)."""
    rows = await conn.fetch("""
        SELECT i.relname AS name, pg_get_indexdef(i.oid) AS def,
               EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.oid) AS constraint
        FROM pg_class i WHERE i.relname = ANY($1::text[])""", list(names))
    return {r["name"]: (r["constraint"], r["def"]) for r in rows}


async def _trade_rows_at(url: str, revision: str) -> asyncpg.Connection:
    """A connection to ``url`` migrated to ``revision``, its feed holding 100 trade
    versions' rows, the first 50 sequenced."""
    await database.migrate(url, revision)
    conn = await asyncpg.connect(to_asyncpg_dsn(url))
    await conn.execute("""
        INSERT INTO feed (participant, trade_id, version, seq)
        SELECT 'BANKA', 'T-' || i, 1, CASE WHEN i <= 50 THEN i END
        FROM generate_series(1, 100) i""")
    return conn


async def test_0016_keeps_a_populated_feed_and_its_keys(empty_db_url):
    """0016 turns the feed's proposal and notice keys into partial unique indexes over a
    feed holding all three kinds of rows, sequenced and not; they still refuse a second
    update of the same proposal version or notice; and 0015 comes back."""
    conn = await _trade_rows_at(empty_db_url, "0015")
    try:
        await conn.execute("""
            INSERT INTO feed (participant, proposal_id, proposal_version)
            VALUES ('BANKA', '00000000-0000-0000-0000-000000000001', 1),
                   ('BANKB', '00000000-0000-0000-0000-000000000001', 1);
            INSERT INTO feed (participant, notice_id) VALUES ('BANKA', 7), ('BANKB', 7);
        """)
        before = await conn.fetch("SELECT to_jsonb(f) AS row FROM feed f ORDER BY id")
        assert all(constraint for constraint, _ in (await _feed_keys(conn)).values())
        await database.migrate(empty_db_url)
        assert await conn.fetch("SELECT to_jsonb(f) AS row FROM feed f ORDER BY id") == before
        keys = await _feed_keys(conn)
        assert not keys[_FEED_KEYS[0]][0] and "WHERE (proposal_id IS NOT NULL)" in keys[
            _FEED_KEYS[0]][1]
        assert not keys[_FEED_KEYS[1]][0] and "WHERE (notice_id IS NOT NULL)" in keys[
            _FEED_KEYS[1]][1]
        for again in ("INSERT INTO feed (participant, proposal_id, proposal_version) VALUES"
                      " ('BANKA', '00000000-0000-0000-0000-000000000001', 1)",
                      "INSERT INTO feed (participant, notice_id) VALUES ('BANKB', 7)"):
            with pytest.raises(asyncpg.UniqueViolationError):
                await conn.execute(again)
        assert await _schema_diff(empty_db_url) == []
        await database.migrate(empty_db_url, "0015", downgrade=True)
        assert all(constraint for constraint, _ in (await _feed_keys(conn)).values())
        assert await conn.fetch("SELECT to_jsonb(f) AS row FROM feed f ORDER BY id") == before
    finally:
        await conn.close()


async def test_0017_keeps_a_populated_feed_and_its_seqs_unique(empty_db_url):
    """0017 turns the feed's seq key into a partial unique index over the rows that have a
    seq, on a feed holding sequenced and unsequenced rows; it still refuses a seq given
    twice; and 0016 comes back."""
    conn = await _trade_rows_at(empty_db_url, "0016")
    try:
        before = await conn.fetch("SELECT to_jsonb(f) AS row FROM feed f ORDER BY id")
        assert (await _feed_keys(conn, ("uq_feed_seq",)))["uq_feed_seq"][0]
        await database.migrate(empty_db_url)
        assert await conn.fetch("SELECT to_jsonb(f) AS row FROM feed f ORDER BY id") == before
        constraint, definition = (await _feed_keys(conn, ("uq_feed_seq",)))["uq_feed_seq"]
        assert not constraint and "UNIQUE" in definition \
            and "WHERE (seq IS NOT NULL)" in definition
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute("UPDATE feed SET seq = 7 WHERE trade_id = 'T-60'")
        assert await _schema_diff(empty_db_url) == []
        await database.migrate(empty_db_url, "0016", downgrade=True)
        assert (await _feed_keys(conn, ("uq_feed_seq",)))["uq_feed_seq"][0]
        assert await conn.fetch("SELECT to_jsonb(f) AS row FROM feed f ORDER BY id") == before
    finally:
        await conn.close()


async def test_0018_gives_the_replays_recorded_before_it_no_profiles(empty_db_url):
    """0018 adds the profiles a replay was run with to its record: a replay recorded
    before has none ({}), its other columns unchanged; and 0017 comes back."""
    await database.migrate(empty_db_url, "0017")
    conn = await asyncpg.connect(to_asyncpg_dsn(empty_db_url))
    try:
        await conn.execute("""
            INSERT INTO replays (replay_id, since, rules, actor, applied)
            VALUES ('00000000-0000-0000-0000-000000000001', '2026-11-01T00:00:00Z',
                    '{"XAU": {"location": "exact"}}', 'admin', true)""")
        before = await conn.fetchrow("SELECT to_jsonb(r) AS row FROM replays r")
        await database.migrate(empty_db_url)
        after = await conn.fetchrow("SELECT to_jsonb(r) AS row FROM replays r")
        assert orjson.loads(after["row"]) == {**orjson.loads(before["row"]), "profiles": {}}
        assert await _schema_diff(empty_db_url) == []
        await database.migrate(empty_db_url, "0017", downgrade=True)
        assert await conn.fetchrow("SELECT to_jsonb(r) AS row FROM replays r") == before
    finally:
        await conn.close()


async def test_0019_keeps_every_key_valid_and_its_downgrade_keeps_no_revoked_one(
        empty_db_url):
    """0019 adds revoked_at: the keys issued before stay valid (NULL). Going back to 0018,
    which cannot say a key is revoked, drops the revoked keys rather than revive them."""
    await database.migrate(empty_db_url, "0018")
    conn = await asyncpg.connect(to_asyncpg_dsn(empty_db_url))
    try:
        await conn.execute("INSERT INTO participants (name) VALUES ('BANKA')")
        await conn.execute("INSERT INTO api_keys (key_hash, participant) "
                           "VALUES ('\\x01'::bytea, 'BANKA'), ('\\x02'::bytea, 'BANKA')")
        await database.migrate(empty_db_url)
        assert await _schema_diff(empty_db_url) == []
        assert await conn.fetchval(
            "SELECT count(*) FROM api_keys WHERE revoked_at IS NULL") == 2
        await conn.execute("UPDATE api_keys SET revoked_at = now() WHERE key_hash = '\\x01'")
        await database.migrate(empty_db_url, "0018", downgrade=True)
        assert [bytes(r["key_hash"]) for r in await conn.fetch(
            "SELECT key_hash FROM api_keys")] == [b"\x02"]
    finally:
        await conn.close()


async def test_0020_leaves_the_keys_before_it_unlabelled_and_its_downgrade_drops_notes(
        empty_db_url):
    """0020 adds api_keys.label (the keys issued before have none) and trade_notes;
    going back to 0019 drops both."""
    await database.migrate(empty_db_url, "0019")
    conn = await asyncpg.connect(to_asyncpg_dsn(empty_db_url))
    try:
        await conn.execute("INSERT INTO participants (name) VALUES ('BANKA')")
        await conn.execute("INSERT INTO api_keys (key_hash, participant) "
                           "VALUES ('\\x01'::bytea, 'BANKA')")
        await database.migrate(empty_db_url)
        assert await _schema_diff(empty_db_url) == []
        assert await conn.fetchval("SELECT label FROM api_keys") is None
        await conn.execute("INSERT INTO trade_notes (participant, trade_id, version, body, "
                           "author) VALUES ('BANKA', 'A-1', 1, 'noted', 'admin')")
        await database.migrate(empty_db_url, "0019", downgrade=True)
        assert await conn.fetchval("SELECT to_regclass('trade_notes')") is None
        assert await conn.fetchval("SELECT count(*) FROM information_schema.columns "
                                   "WHERE table_name = 'api_keys' AND column_name = 'label'") == 0
        assert await conn.fetchval("SELECT count(*) FROM api_keys") == 1
    finally:
        await conn.close()
