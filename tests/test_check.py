"""``kevin check``: a clean database passes; every hand-forged violation is reported,
naming the offending trade.

Violations are forged the only way they could arise — as a superuser who switches the
insert-only trigger off (or drops a constraint) inside this test's own database."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from decimal import Decimal

import asyncpg
import pytest

from kevin.check import check
from kevin.domain.models import MatchRef, TradeTerms
from kevin.store import database
from kevin.store import trades as store
from kevin.store.trades import NewVersion
from tests.conftest import trade_body

# These tests break the invariants on purpose to see the check report them (and check a
# clean database themselves).
pytestmark = pytest.mark.breaks_invariants


def terms(counterparty: str = "BANKB", side: str = "sell", **overrides: object) -> TradeTerms:
    body = trade_body(counterparty=counterparty, side=side, **overrides)
    body.pop("trade_id")
    return TradeTerms.model_validate(body)


async def submit(pool: asyncpg.Pool, participant: str, trade_id: str, **kw: object):
    async with database.transaction(pool) as c:
        return await store.insert_version(c, NewVersion(
            participant=participant, trade_id=trade_id, version=1, status="unmatched",
            reason="submitted", terms=terms(**kw), actor=participant))


async def amend(pool: asyncpg.Pool, participant: str, trade_id: str, **changes: object):
    async with database.transaction(pool) as c:
        current = await store.latest(c, participant, trade_id)
        changes.setdefault("status", "unmatched")
        changes.setdefault("reason", "amended")
        return await store.append_version(c, current, actor=participant, **changes)


async def match(pool: asyncpg.Pool, a: tuple[str, str], b: tuple[str, str],
                match_id: uuid.UUID | None = None) -> uuid.UUID:
    """Write a well-formed match of a and b the way the engine would: both get a new
    version, in one transaction, naming each other's new version."""
    match_id = match_id or uuid.uuid4()
    async with database.transaction(pool) as c:
        ta = await store.latest(c, *a)
        tb = await store.latest(c, *b)
        for mine, theirs in ((ta, tb), (tb, ta)):
            await store.append_version(
                c, mine, status="matched", reason="matched", actor="kevin",
                match=MatchRef(match_id=match_id, counterparty_trade_id=theirs.trade_id,
                               counterparty_version=theirs.version + 1))
    return match_id


async def forge(conn: asyncpg.Connection, *statements: str) -> None:
    """Run statements with the insert-only trigger off, then switch it back on."""
    async with conn.transaction():
        await conn.execute("ALTER TABLE trades DISABLE TRIGGER USER")
        for statement in statements:
            await conn.execute(statement)
        await conn.execute("ALTER TABLE trades ENABLE TRIGGER USER")


@pytest.fixture
async def book(pool):
    """A clean book: an amended trade, a cancelled one, an unmatched one, a live match."""
    await submit(pool, "BANKA", "A-1")
    await amend(pool, "BANKA", "A-1", terms=terms(price="1000.50"))
    await submit(pool, "BANKA", "A-2")
    await amend(pool, "BANKA", "A-2", status="cancelled", reason="cancelled")
    await submit(pool, "BANKA", "A-3", product="XAG")
    await submit(pool, "BANKA", "M-A")
    await submit(pool, "BANKB", "M-B", counterparty="BANKA", side="buy")
    await match(pool, ("BANKA", "M-A"), ("BANKB", "M-B"))


async def test_a_clean_database_passes(db_url, book, conn):
    await conn.execute("UPDATE feed SET seq = id")  # sequenced, as the sequencer would
    report = await check(db_url)
    assert report.ok, report.text()
    assert report.text().startswith("ok:")


async def test_an_empty_database_passes(db_url):
    assert (await check(db_url)).ok


async def test_a_disabled_trigger_is_reported(db_url, book, conn):
    await conn.execute("ALTER TABLE trades DISABLE TRIGGER trades_insert_only")
    report = await check(db_url)
    assert not report.ok
    assert [v.invariant for v in report.violations] == [1]
    assert "trades_insert_only disabled" in report.text()


async def test_a_dropped_truncate_trigger_is_reported(db_url, book, conn):
    await conn.execute("DROP TRIGGER trades_no_truncate ON trades")
    report = await check(db_url)
    assert [v.problem for v in report.violations] == ["no enabled TRUNCATE trigger on trades"]


async def test_a_hole_in_the_versions_is_reported(db_url, book, conn):
    await forge(conn, "DELETE FROM trades WHERE trade_id = 'A-1' AND version = 1")
    report = await check(db_url)
    assert report.offenders(2) == {("BANKA", "A-1")}
    assert "versions 2 are not 1..1" in report.text()
    # ... and its feed update now announces a version that does not exist.
    assert report.offenders(5) == {("BANKA", "A-1")}


async def test_two_latest_rows_are_reported(db_url, book, conn):
    await conn.execute("DROP INDEX ix_trades_one_latest")
    await forge(conn, "UPDATE trades SET latest = true WHERE trade_id = 'A-2'")
    report = await check(db_url)
    assert report.offenders() == {("BANKA", "A-2")}
    assert "BANKA/A-2: 2 latest rows, not 1" in report.text()


async def test_no_latest_row_is_reported(db_url, book, conn):
    await forge(conn, "UPDATE trades SET latest = false WHERE trade_id = 'A-3'")
    report = await check(db_url)
    assert report.offenders(2) == {("BANKA", "A-3")}
    assert "0 latest rows" in report.text()


async def test_a_latest_row_that_is_not_the_highest_version_is_reported(db_url, book, conn):
    await forge(conn, "UPDATE trades SET latest = false WHERE trade_id = 'A-1'",
                "UPDATE trades SET latest = true WHERE trade_id = 'A-1' AND version = 1")
    report = await check(db_url)
    assert report.offenders() == {("BANKA", "A-1")}
    assert "latest is version 1, not the highest (2)" in report.text()


async def test_a_version_without_its_feed_update_is_reported(db_url, book, conn):
    await conn.execute("DELETE FROM feed WHERE trade_id = 'A-3'")
    report = await check(db_url)
    assert report.offenders() == {("BANKA", "A-3")}
    assert "BANKA/A-3 v1: version has no feed update" in report.text()


async def test_a_feed_update_without_a_version_and_a_duplicate_are_reported(
        db_url, book, conn):
    await conn.execute("ALTER TABLE feed DROP CONSTRAINT uq_feed_participant_trade_id_version")
    await conn.execute("INSERT INTO feed (participant, trade_id, version) VALUES "
                       "('BANKA', 'GHOST', 1), ('BANKA', 'A-3', 1)")
    report = await check(db_url)
    assert report.offenders(5) == {("BANKA", "GHOST"), ("BANKA", "A-3")}
    assert "feed update for a version that does not exist" in report.text()
    assert "BANKA/A-3 v1: 2 feed updates for one version" in report.text()


async def test_a_shared_seq_is_reported(db_url, book, conn):
    await conn.execute("UPDATE feed SET seq = id")
    await conn.execute("DROP INDEX uq_feed_seq")
    await conn.execute("UPDATE feed SET seq = (SELECT seq FROM feed WHERE trade_id = 'A-2' "
                       "AND version = 1) WHERE trade_id = 'A-3'")
    report = await check(db_url)
    assert report.offenders(6) == {("BANKA", "A-2"), ("BANKA", "A-3")}
    assert "is shared by 2 updates" in report.text()


async def test_a_version_sequenced_before_an_earlier_one_is_reported(db_url, book, conn):
    await conn.execute("UPDATE feed SET seq = id WHERE NOT (trade_id = 'A-1' AND version = 1)")
    await conn.execute("UPDATE feed SET seq = 1000 - id WHERE trade_id = 'A-2'")
    await conn.execute("UPDATE feed SET seq = -5 WHERE trade_id = 'A-3'")
    report = await check(db_url)
    assert report.offenders(6) == {("BANKA", "A-1"), ("BANKA", "A-2"), ("BANKA", "A-3")}
    text = report.text()
    assert "BANKA/A-1 v2: sequenced" in text and "before version 1" in text
    assert "BANKA/A-2 v2: seq" in text and "is not above version 1's seq" in text
    assert "BANKA/A-3 v1: seq -5 is not positive" in text


async def test_a_one_legged_match_is_reported(db_url, pool, conn):
    await submit(pool, "BANKA", "M-A")
    await submit(pool, "BANKB", "M-B", counterparty="BANKA", side="buy")
    await match(pool, ("BANKA", "M-A"), ("BANKB", "M-B"))
    # B's matched version vanishes: A now claims a match B knows nothing of.
    await forge(conn, "DELETE FROM trades WHERE trade_id = 'M-B' AND version = 2",
                "UPDATE trades SET latest = true WHERE trade_id = 'M-B' AND version = 1")
    report = await check(db_url)
    assert ("BANKA", "M-A") in report.offenders(4)
    assert "has 1 legs, not 2" in report.text()
    assert "counterparty trade BANKB/M-B is not in a live match" in report.text()


async def test_same_sides_and_unmirrored_participants_are_reported(db_url, pool, conn):
    await submit(pool, "BANKA", "S-A")
    await submit(pool, "BANKB", "S-B", counterparty="BANKA", side="sell")  # same side
    await match(pool, ("BANKA", "S-A"), ("BANKB", "S-B"))
    await submit(pool, "BANKA", "P-A")
    await submit(pool, "BANKB", "P-B", counterparty="BANKC", side="buy")  # not mirrored
    await match(pool, ("BANKA", "P-A"), ("BANKB", "P-B"))
    report = await check(db_url)
    assert report.offenders(4) == {("BANKA", "S-A"), ("BANKB", "S-B"), ("BANKA", "P-A"),
                                   ("BANKB", "P-B")}
    text = report.text()
    assert "both sides sell" in text
    assert "counterparty BANKB/P-B names BANKC, not BANKA" in text


async def test_legs_with_different_match_ids_or_stale_references_are_reported(
        db_url, pool, conn):
    await submit(pool, "BANKA", "M-A")
    await submit(pool, "BANKB", "M-B", counterparty="BANKA", side="buy")
    await match(pool, ("BANKA", "M-A"), ("BANKB", "M-B"))
    other = uuid.uuid4()
    await forge(conn, f"UPDATE trades SET match_id = '{other}' "
                      "WHERE trade_id = 'M-B' AND latest")
    report = await check(db_url)
    assert report.offenders(4) == {("BANKA", "M-A"), ("BANKB", "M-B")}
    assert f"is in match {other}" in report.text()

    await forge(conn, "UPDATE trades SET match_id = (SELECT match_id FROM trades "
                      "WHERE trade_id = 'M-A' AND latest) WHERE trade_id = 'M-B' AND latest",
                "UPDATE trades SET match_counterparty_version = 1 "
                "WHERE trade_id = 'M-A' AND latest")
    report = await check(db_url)
    assert report.offenders(4) == {("BANKA", "M-A")}
    assert "refers to version 1 of BANKB/M-B, whose latest is 2" in report.text()


async def test_a_trade_in_two_live_matches_is_reported(db_url, pool, conn):
    await submit(pool, "BANKA", "M-A")
    await submit(pool, "BANKB", "M-B", counterparty="BANKA", side="buy")
    await match(pool, ("BANKA", "M-A"), ("BANKB", "M-B"))
    # A second trade of BANKA claims BANKB's M-B too, under a match of its own.
    await submit(pool, "BANKA", "M-A2")
    async with database.transaction(pool) as c:
        current = await store.latest(c, "BANKA", "M-A2")
        await store.append_version(
            c, current, status="matched", reason="forced", actor="admin",
            match=MatchRef(match_id=uuid.uuid4(), counterparty_trade_id="M-B",
                           counterparty_version=2))
    report = await check(db_url)
    assert ("BANKA", "M-A2") in report.offenders(4)
    assert "BANKB/M-B is claimed by 2 live matches" in report.text()


async def test_three_legs_under_one_match_id_are_reported(db_url, pool, conn):
    await submit(pool, "BANKA", "M-A")
    await submit(pool, "BANKB", "M-B", counterparty="BANKA", side="buy")
    match_id = await match(pool, ("BANKA", "M-A"), ("BANKB", "M-B"))
    await submit(pool, "BANKC", "M-C", counterparty="BANKA", side="buy")
    async with database.transaction(pool) as c:
        current = await store.latest(c, "BANKC", "M-C")
        await store.append_version(
            c, current, status="matched", reason="forced", actor="admin",
            match=MatchRef(match_id=match_id, counterparty_trade_id="M-A",
                           counterparty_version=2))
    report = await check(db_url)
    assert report.offenders(4) >= {("BANKA", "M-A"), ("BANKB", "M-B"), ("BANKC", "M-C")}
    assert "has 3 legs, not 2" in report.text()


async def test_the_report_is_capped_per_invariant(db_url, pool, conn):
    for n in range(5):
        await submit(pool, "BANKA", f"T-{n}", quantity=Decimal(n + 1))
    await conn.execute("DELETE FROM feed")
    report = await check(db_url, limit=3)
    assert len(report.violations) == 3
    assert "(first 3 shown)" in report.text()


@pytest.mark.slow
async def test_the_command_exits_non_zero_and_names_the_offenders(db_url, book, conn):
    env = {**os.environ, "KEVIN_DATABASE_URL": db_url, "KEVIN_LOG_FORMAT": "json"}

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "kevin.cli", "check"], env=env,
                              capture_output=True, text=True, timeout=60)

    clean = run()
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout.startswith("ok:")
    await conn.execute("DELETE FROM feed WHERE trade_id = 'A-3'")
    dirty = run()
    assert dirty.returncode == 1
    assert "invariant 5" in dirty.stdout and "BANKA/A-3 v1" in dirty.stdout


@pytest.mark.slow
def test_the_command_fails_in_one_line_when_the_database_is_unreachable():
    env = {**os.environ, "KEVIN_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"}
    result = subprocess.run([sys.executable, "-m", "kevin.cli", "check"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("kevin: cannot connect to the database")
    assert len(result.stderr.strip().splitlines()) == 1


async def test_what_the_engine_writes_passes(db_url, client, banks, conn):
    """Matches, mismatches, amendments, cancels, a forced match and a break — all through
    the API — leave a database that kevin check finds clean."""
    from tests.conftest import ADMIN

    a, b = banks
    mirror = {"counterparty": "BANKA", "side": "buy", "attributes": {}}
    for n in range(6):
        await client.post("/v1/trades", json=trade_body(f"A-{n}", price=f"{1000 + n}"),
                          headers=a)
    for n in range(6):
        price = f"{1000 + n}" if n % 2 == 0 else f"{1000.5 + n}"
        await client.post("/v1/trades", json=trade_body(f"B-{n}", price=price, **mirror),
                          headers=b)
    await client.put("/v1/trades/B-1", json=trade_body(price="1001", **mirror),
                     headers={**b, "If-Match": '"1"'})
    await client.delete("/v1/trades/A-3", headers={**a, "If-Match": '"1"'})
    resp = await client.post("/v1/admin/matches", headers=ADMIN, json={"legs": [
        {"participant": "BANKA", "trade_id": "A-5"}, {"participant": "BANKB", "trade_id": "B-5"}],
        "comment": "forced"})
    assert resp.status == 201, await resp.text()
    match_id = (await resp.json())["match_id"]
    resp = await client.delete(f"/v1/admin/matches/{match_id}", headers=ADMIN,
                               json={"comment": "broken again"})
    assert resp.status == 200, await resp.text()
    assert await conn.fetchval(
        "SELECT count(*) FROM trades WHERE latest AND status = 'matched'") >= 4
    report = await check(db_url)
    assert report.ok, report.text()
