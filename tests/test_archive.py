"""Archival to cold storage (`kevin archive`): exactly the right rows move, nothing is lost
or duplicated (also across a crash), the trigger still guards the hot table, and history
and as-of answer the same before and after."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from kevin import jsoncodec
from kevin.dburl import to_asyncpg_dsn
from kevin.domain.errors import ArchiveRefused
from kevin.domain.models import TradeSubmission, TradeTerms
from kevin.engine.archive import ArchiveReport, archive
from kevin.engine.service import TradeService
from kevin.store import database
from tests.conftest import ADMIN, trade_body, wait_for
from tests.processes import run_cli_async as run_cli

ROOT = Path(__file__).resolve().parents[1]
KEY = "participant, trade_id, version"


async def db_now(conn: asyncpg.Connection) -> datetime:
    return await conn.fetchval("SELECT clock_timestamp()")


async def build(service: TradeService, trades: int, versions: int, prefix: str = "A") -> None:
    """`trades` trades of BANKA, each amended up to `versions` versions."""
    for i in range(trades):
        body = trade_body(f"{prefix}-{i}")
        await service.submit("BANKA", TradeSubmission.model_validate(body))
        for v in range(1, versions):
            terms = {k: x for k, x in body.items() if k != "trade_id"} | {"price": f"{1000 + v}"}
            await service.amend("BANKA", f"{prefix}-{i}", v, TradeTerms.model_validate(terms))


async def everything(conn: asyncpg.Connection) -> list[Any]:
    """Every version ever recorded, hot or archived, in full."""
    return await conn.fetch(
        f"SELECT to_jsonb(h) AS row FROM trade_history h ORDER BY {KEY}")  # noqa: S608


async def keys(conn: asyncpg.Connection, table: str) -> set[tuple[str, str, int]]:
    return {tuple(r) for r in await conn.fetch(f"SELECT {KEY} FROM {table}")}  # noqa: S608


@pytest.fixture
async def participants(service: TradeService) -> None:
    await service.create_participant("BANKA")
    await service.create_participant("BANKB")


async def test_archive_moves_exactly_the_non_latest_versions_before_the_cutoff(
        service, conn, pool, participants):
    await build(service, 3, 3)          # A-0..A-2: v1, v2 old; v3 latest
    await build(service, 1, 1, "S")     # S-0: v1 only, latest
    cutoff = await db_now(conn)
    await build(service, 1, 2, "L")     # L-0: v1 non-latest but recorded after the cutoff
    terms = TradeTerms.model_validate({k: v for k, v in trade_body().items() if k != "trade_id"})
    await service.amend("BANKA", "A-0", 3, terms)  # A-0 v3: recorded before, non-latest now
    before = await everything(conn)
    hot_before = await keys(conn, "trades")

    report = await archive(pool, cutoff, batch_size=2)

    expected = {("BANKA", f"A-{i}", v) for i in range(3) for v in (1, 2)} | {("BANKA", "A-0", 3)}
    assert report.moved == len(expected) == 7
    assert report.batches == 4
    assert await keys(conn, "trades_archive") == expected
    assert await keys(conn, "trades") == hot_before - expected
    assert await everything(conn) == before
    # Every latest row is still hot; nothing recorded after the cutoff moved.
    assert await conn.fetchval("SELECT count(*) FROM trades WHERE latest") == 5
    assert ("BANKA", "L-0", 1) in await keys(conn, "trades")
    # Feed rows stay: they name versions, not rows.
    assert await conn.fetchval("SELECT count(*) FROM feed") == len(before)
    # Nothing left to do: a second run moves nothing.
    assert await archive(pool, cutoff) == ArchiveReport(0, 0)


async def test_history_and_as_of_answer_the_same_after_archiving(client, banks, pool, conn):
    a, _ = banks
    for trade_id in ("H-1", "H-2"):
        await client.post("/v1/trades", json=trade_body(trade_id), headers=a)
        for version in (1, 2, 3):
            resp = await client.put(f"/v1/trades/{trade_id}",
                                    json=trade_body(trade_id, price=f"{1000 + version}"),
                                    headers={**a, "If-Match": f'"{version}"'})
            assert resp.status == 200
    await client.delete("/v1/trades/H-2", headers={**a, "If-Match": '"4"'})

    async def answers() -> list[Any]:
        out: list[Any] = []
        for trade_id in ("H-1", "H-2"):
            history = await (await client.get(f"/v1/trades/{trade_id}/versions",
                                              headers=a)).json()
            out.append(history)
            for version in history["versions"]:
                at = datetime.fromisoformat(version["recorded_at"])
                for instant in (at - timedelta(microseconds=1), at):
                    params = {"as_of": instant.isoformat()}
                    resp = await client.get(f"/v1/trades/{trade_id}", params=params, headers=a)
                    out.append((resp.status, await resp.json()))
                    page = await client.get("/v1/trades", params=params, headers=a)
                    out.append(await page.json())
                    admin = await client.get(
                        "/v1/trades", params={**params, "participant": "BANKA"}, headers=ADMIN)
                    out.append(await admin.json())
        return out

    before = await answers()
    report = await archive(pool, await db_now(conn), batch_size=3)
    assert report.moved == 3 + 4  # H-1 v1-v3, H-2 v1-v4
    assert await conn.fetchval("SELECT count(*) FROM trades") == 2
    assert await answers() == before
    # The latest read is untouched too.
    latest = await (await client.get("/v1/trades/H-2", headers=a)).json()
    assert latest["version"] == 5 and latest["status"] == "cancelled"


async def test_archive_resumes_after_a_crash_between_batches(service, pool, conn, participants):
    await build(service, 5, 4)  # 15 archivable versions
    cutoff = await db_now(conn)
    before = await everything(conn)

    class Crash(Exception):
        pass

    async def crash_after_two(report: ArchiveReport) -> None:
        if report.batches == 2:
            raise Crash

    with pytest.raises(Crash):
        await archive(pool, cutoff, batch_size=4, after_batch=crash_after_two)
    assert await conn.fetchval("SELECT count(*) FROM trades_archive") == 8
    assert await everything(conn) == before

    report = await archive(pool, cutoff, batch_size=4)
    assert report.moved == 7
    assert await conn.fetchval("SELECT count(*) FROM trades_archive") == 15
    assert await conn.fetchval("SELECT count(*) FROM trades") == 5
    assert await everything(conn) == before


@pytest.mark.slow
async def test_archive_killed_mid_transaction_loses_and_duplicates_nothing(
        service, pool, conn, db_url, participants):
    await build(service, 10, 4)  # 30 archivable versions: batches of 4 → 8 batches
    cutoff = await db_now(conn)
    before = await everything(conn)
    # Hold a share lock on the first row of batch 3: the archiver copies batch 3, then its
    # DELETE waits on us, mid-transaction. That is where we kill it.
    first_of_third = await conn.fetchrow(
        f"SELECT {KEY} FROM trades WHERE NOT latest ORDER BY {KEY} OFFSET 8 LIMIT 1")  # noqa: S608
    holder = await asyncpg.connect(to_asyncpg_dsn(db_url))
    lock = holder.transaction()
    await lock.start()
    await holder.execute(
        f"SELECT 1 FROM trades WHERE ({KEY}) = ($1, $2, $3) FOR SHARE", *first_of_third)  # noqa: S608
    env = {**os.environ, "KEVIN_DATABASE_URL": db_url, "KEVIN_LOG_FORMAT": "json",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kevin.cli", "archive", "--before", cutoff.isoformat(),
        "--batch-size", "4", env=env, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async def blocked_archiver() -> int | None:
            return await conn.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query LIKE '%DELETE FROM trades%'")
        pid = await wait_for(blocked_archiver, timeout=30)
        # Two batches committed; batch 3 is copied but not committed, so not visible.
        assert await conn.fetchval("SELECT count(*) FROM trades_archive") == 8
    finally:
        proc.kill()
        await proc.communicate()
        await lock.rollback()
        await holder.close()

    async def backend_gone() -> bool:
        return not await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                                       pid)
    await wait_for(backend_gone)
    assert await conn.fetchval("SELECT count(*) FROM trades_archive") == 8
    assert await conn.fetchval("SELECT count(*) FROM trades") == 40 - 8
    assert await everything(conn) == before

    report = await archive(pool, cutoff, batch_size=4)
    assert report.moved == 22
    assert await conn.fetchval("SELECT count(*) FROM trades_archive") == 30
    assert await conn.fetchval("SELECT count(*) FROM trades") == 10
    assert await everything(conn) == before


async def test_concurrent_archivers_take_turns(service, pool, conn, participants):
    await build(service, 8, 4)
    cutoff = await db_now(conn)
    before = await everything(conn)
    reports = await asyncio.gather(*(archive(pool, cutoff, batch_size=3) for _ in range(3)))
    assert sum(r.moved for r in reports) == 24
    assert await conn.fetchval("SELECT count(*) FROM trades_archive") == 24
    assert await everything(conn) == before


# --- the trigger: the one narrow exception, and nothing more --------------------------


async def _old_version(conn: asyncpg.Connection) -> tuple[str, str, int]:
    return tuple(await conn.fetchrow(
        f"SELECT {KEY} FROM trades WHERE NOT latest ORDER BY {KEY} LIMIT 1"))  # noqa: S608


COPY = ("INSERT INTO trades_archive SELECT * FROM trades "
        "WHERE (participant, trade_id, version) = ($1, $2, $3)")
DELETE = "DELETE FROM trades WHERE (participant, trade_id, version) = ($1, $2, $3)"
ARCHIVING = "SELECT set_config('kevin.archiving', 'on', true)"


async def refused(conn: asyncpg.Connection, *statements: tuple[str, ...]) -> bool:
    """Run the statements in one transaction; True if the database refused them."""
    try:
        async with conn.transaction():
            for statement, *args in statements:
                await conn.execute(statement, *args)
    except asyncpg.exceptions.RestrictViolationError:
        return True
    return False


async def test_trigger_allows_delete_only_of_a_non_latest_row_this_transaction_copied(
        service, conn, participants):
    await build(service, 1, 3)
    old = await _old_version(conn)
    latest = ("BANKA", "A-0", 3)
    # Not copied, with or without the archiving flag.
    assert await refused(conn, (DELETE, *old))
    assert await refused(conn, (ARCHIVING,), (DELETE, *old))
    # Copied, but the transaction did not declare itself an archiver.
    assert await refused(conn, (COPY, *old), (DELETE, *old))
    # Copied with different content (a price that is not what was recorded).
    assert await refused(conn, (ARCHIVING,), (COPY, *old),
                         ("UPDATE trades_archive SET price = 1 WHERE version = $1", old[2]),
                         (DELETE, *old))
    assert await refused(conn, (ARCHIVING,), (
        "INSERT INTO trades_archive SELECT participant, trade_id, version, latest, status, "
        "reason, counterparty, side, product, quantity, price + 1, currency, trade_date, "
        "settlement_date, location, attributes, match_id, match_counterparty_trade_id, "
        "match_counterparty_version, mismatches, rules_version, comment, replay_id, actor, "
        "first_submitted_at, recorded_at FROM trades "
        "WHERE (participant, trade_id, version) = ($1, $2, $3)", *old), (DELETE, *old))
    # The latest row: never, even flagged (and the archive would not take it anyway).
    assert await refused(conn, (ARCHIVING,), (DELETE, *latest))
    assert await conn.fetchval("SELECT count(*) FROM trades_archive") == 0
    assert await conn.fetchval("SELECT count(*) FROM trades") == 3
    # The archiver's way: flagged, copied in this transaction, identical → allowed.
    assert not await refused(conn, (ARCHIVING,), (COPY, *old), (DELETE, *old))
    assert await keys(conn, "trades_archive") == {old}
    # Updates stay refused, and so do DELETE of everything and TRUNCATE.
    assert await refused(conn, ("UPDATE trades SET price = price + 1 WHERE version = 2",))
    assert await refused(conn, ("UPDATE trades SET latest = true WHERE version = 2",))
    assert await refused(conn, (ARCHIVING,), ("DELETE FROM trades",))
    assert await refused(conn, ("TRUNCATE trades",))
    # The archive is as immutable as the hot table.
    assert await refused(conn, ("UPDATE trades_archive SET comment = 'x'",))
    assert await refused(conn, ("DELETE FROM trades_archive",))
    assert await refused(conn, ("TRUNCATE trades_archive",))


@pytest.mark.breaks_invariants  # forges rows the check refuses
async def test_a_copy_left_by_another_transaction_stops_the_archiver(
        service, pool, conn, participants):
    await build(service, 2, 3)
    old = await _old_version(conn)
    await conn.execute(COPY, *old)  # committed by this, earlier, transaction
    cutoff = await db_now(conn)
    with pytest.raises(ArchiveRefused):
        await archive(pool, cutoff, batch_size=10)
    # The refused batch rolled back whole; the stray copy is still hot as well.
    assert await keys(conn, "trades_archive") == {old}
    assert await conn.fetchval("SELECT count(*) FROM trades") == 6


@pytest.mark.breaks_invariants  # forges rows the check refuses
async def test_kevin_check_counts_archived_versions(service, pool, conn, db_url, participants):
    from kevin.check import check

    await build(service, 3, 3)
    await archive(pool, await db_now(conn))
    assert await conn.fetchval("SELECT count(*) FROM trades_archive") == 6
    report = await check(db_url)
    assert report.ok, report.text()
    # A version in both tables would be history twice over: check names it.
    await build(service, 1, 2, "D")
    await conn.execute(COPY, "BANKA", "D-0", 1)
    report = await check(db_url)
    assert report.offenders(2) == {("BANKA", "D-0")}, report.text()


async def test_archive_has_the_same_columns_as_trades(conn):
    query = ("SELECT column_name, data_type, is_nullable, ordinal_position "
             "FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position")
    assert [tuple(r) for r in await conn.fetch(query, "trades")] == \
        [tuple(r) for r in await conn.fetch(query, "trades_archive")]


# --- the command line ---------------------------------------------------------------




@pytest.mark.slow
async def test_cli_archives_and_refuses_bad_arguments(service, conn, db_url, participants):
    await build(service, 2, 3)
    cutoff = await db_now(conn)
    code, out, _ = await run_cli(db_url, "archive", "--before",
                                 cutoff.isoformat().replace("+00:00", "Z"), "--batch-size", "3")
    assert code == 0
    assert out.splitlines()[-1].startswith("archived 4 versions recorded before")
    assert await conn.fetchval("SELECT count(*) FROM trades_archive") == 4
    code, _, err = await run_cli(db_url, "archive", "--before", "2026-11-21T10:00:00")
    assert code != 0 and "with a zone" in err


async def test_downgrade_brings_archived_versions_home(empty_db_url):
    await database.migrate(empty_db_url)
    pool = await database.create_pool(empty_db_url, min_size=1, max_size=2)
    try:
        service = TradeService(pool)
        await service.create_participant("BANKA")
        await service.create_participant("BANKB")
        await build(service, 2, 3)
        async with pool.acquire() as c:
            before = await everything(c)
            assert (await archive(pool, await db_now(c))).moved == 4
    finally:
        await pool.close()
    await database.migrate(empty_db_url, "0001", downgrade=True)
    c = await asyncpg.connect(to_asyncpg_dsn(empty_db_url))
    try:
        rows = await c.fetch(f"SELECT to_jsonb(t) AS row FROM trades t ORDER BY {KEY}")  # noqa: S608
        assert len(rows) == 6
        assert [jsoncodec.loads(r["row"]) for r in rows] == [r["row"] for r in before]
        assert await c.fetchval("SELECT to_regclass('trades_archive')") is None
    finally:
        await c.close()
    await database.migrate(empty_db_url)
