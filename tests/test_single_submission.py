"""A submission alone (group commit off, or a group's fallback): its transaction reads
what version 1 needs with the match key's lock, matches the new trade before writing it,
and writes version 1 with what matching derives in one statement (kevin.store.book,
PostgresBook.write_first) — and a trade_id another writer creates in between is
answered exactly as if it had been there first."""

from __future__ import annotations

import asyncio

import asyncpg
import structlog

from kevin.domain.models import TradeSubmission
from kevin.engine.service import TradeService
from kevin.store import bulk
from kevin.store import matching as match_store
from kevin.store.matching import MATCH_LOCK_CLASS, MatchKey
from tests.conftest import trade_body, wait_for


def _submission(body: dict[str, object]) -> TradeSubmission:
    return TradeSubmission.model_validate(body)


async def _single(pool: asyncpg.Pool) -> TradeService:
    kevin = TradeService(pool, group_commit=False)
    for name in ("BANKA", "BANKB"):
        await kevin.create_participant(name)
    return kevin


def _retries(logs: list[dict[str, object]]) -> int:
    return sum(1 for e in logs if str(e["event"]).startswith("submission's trade_id created"))


async def test_a_submission_takes_its_xid_only_to_write(pool, conn, monkeypatch):
    """Resting or matching, the transaction has no xid before its write of version 1
    (so the feed sequencer numbers the rows others commit meanwhile), and each writes
    once: the sell's version 1 alone, the buy's with both legs matched."""
    kevin = await _single(pool)
    write_versions = bulk.write_versions
    seen: list[tuple[object, list[tuple[str, int]]]] = []

    async def checked(conn_, versions, stored):
        seen.append((await conn_.fetchval("SELECT pg_current_xact_id_if_assigned()"),
                     [(v.trade_id, v.version) for v in versions]))
        return await write_versions(conn_, versions, stored)

    monkeypatch.setattr(bulk, "write_versions", checked)
    result, sold = await kevin.submit("BANKA", _submission(trade_body("A-1")))
    assert (result, sold.version, sold.status) == ("created", 1, "unmatched")
    result, bought = await kevin.submit("BANKB", _submission(trade_body(
        "B-1", side="buy", counterparty="BANKA")))
    assert (result, bought.version, bought.status) == ("created", 2, "matched")
    assert seen == [(None, [("A-1", 1)]), (None, [("B-1", 1), ("B-1", 2), ("A-1", 2)])]
    # What was answered is what was stored, and each version has its feed row.
    assert (await kevin.versions("BANKA", "A-1"))[0] == sold
    assert [v.version for v in await kevin.versions("BANKB", "B-1")] == [1, 2]
    assert await kevin.current("BANKB", "B-1") == bought
    assert await conn.fetchval("SELECT count(*) FROM trades") == \
        await conn.fetchval("SELECT count(*) FROM feed") == 4
    first = await conn.fetchval("SELECT first_submitted_at FROM trades WHERE trade_id = 'B-1'"
                                " AND version = 1")
    assert bought.first_submitted_at == first < bought.recorded_at


async def test_a_trade_id_created_after_it_was_read_free_is_answered_from_that_trade(
        pool, conn, monkeypatch):
    """Another writer creates A-1 (under another match key) after the submission read
    its trade_id free: the write of version 1 fails on the trade's key, and the
    submission, done again, finds it taken — 409, its product differs; nothing of the
    first attempt stays."""
    kevin = await _single(pool)
    other = TradeService(pool, group_commit=False)
    lock_and_read = match_store.lock_match_key_and_rules
    reads: list[object] = []

    async def another_writer_meanwhile(conn_, key, trade):
        read = await lock_and_read(conn_, key, trade)
        reads.append(read[2])
        if len(reads) == 1:  # the other writer's own read is the second
            await other.submit("BANKA", _submission(trade_body("A-1", product="XAG")))
        return read

    monkeypatch.setattr(match_store, "lock_match_key_and_rules", another_writer_meanwhile)
    with structlog.testing.capture_logs() as logs:
        try:
            await kevin.submit("BANKA", _submission(trade_body("A-1")))
            raise AssertionError("not refused")
        except Exception as e:  # noqa: BLE001 - the refusal's type is asserted below
            refused = e
    assert type(refused).__name__ == "ExistsWithDifferentFields"
    assert refused.fields == ["product"]  # type: ignore[attr-defined]
    assert _retries(logs) == 1
    # Read free by the first attempt, free by the other writer, taken by the second.
    assert [at is None for at in reads] == [False, False, True]
    stored = await kevin.current("BANKA", "A-1")
    assert (stored.version, stored.product) == (1, "XAG")
    assert await conn.fetchval("SELECT count(*) FROM trades") == \
        await conn.fetchval("SELECT count(*) FROM feed") == 1


async def test_the_same_submission_twice_at_once_is_created_once(pool, conn):
    """Both wait for the match key's lock with a snapshot from before it, so the second
    reads the trade_id free: its write fails on the trade's key and, done again, it is
    answered 200 with the trade the first created."""
    kevin = await _single(pool)
    body = trade_body("A-1")
    key = MatchKey.of("BANKA", _submission(body))  # type: ignore[arg-type]

    async def both_waiting() -> bool:
        return await conn.fetchval("SELECT count(*) FROM pg_locks "
                                   "WHERE locktype = 'advisory' AND NOT granted") == 2

    with structlog.testing.capture_logs() as logs:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1::int, $2::int)",
                               MATCH_LOCK_CLASS, key.lock_id())
            both = [asyncio.create_task(kevin.submit("BANKA", _submission(body)))
                    for _ in range(2)]
            await wait_for(both_waiting)
        answers = await asyncio.gather(*both)
    assert sorted(result for result, _ in answers) == ["created", "exists"]
    assert answers[0][1] == answers[1][1]
    assert _retries(logs) == 1
    assert await conn.fetchval("SELECT count(*) FROM trades") == \
        await conn.fetchval("SELECT count(*) FROM feed") == 1
