"""Chasers: a trade whose cut-off passes while it is unmatched or mismatched gets one
`overdue` notice, on its participant's feed and on its counterparty's — driven here by a
controlled clock through a cut-off (trades matched before, at and after it; a daylight-
saving change; a holiday), with two scanners at work on one database."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from kevin import jsoncodec
from kevin.consumer import Consumer, OverdueEvent
from kevin.dburl import to_asyncpg_dsn
from kevin.domain.cutoffs import trade_dates_passing
from kevin.domain.feed import OverdueUpdate
from kevin.domain.models import TradeSubmission
from kevin.domain.profiles import Cutoff
from kevin.engine.chasers import OverdueScanner
from kevin.engine.service import TradeService
from kevin.feed.relay import message_id
from kevin.store import database
from kevin.store import feed as feed_store
from kevin.store import overdue as q
from kevin.store.invariants import find_violations
from tests.conftest import ADMIN, wait_for
from tests.feed_helpers import read_all, relayed
from tests.test_cutoffs_api import PROFILE, XAU_CUTOFF, Clock, ours, read, submit, theirs

NATS_URL = "nats://127.0.0.1:4222"

Notice = tuple[str, str, str]  # (participant, trade_id, trade_date)


async def notices(conn: Any) -> set[Notice]:
    rows = await conn.fetch("SELECT participant, trade_id, trade_date FROM overdue_notices")
    return {(r["participant"], r["trade_id"], r["trade_date"].isoformat()) for r in rows}


async def scan(scanner: OverdueScanner, conn: Any) -> None:
    """A tick once every write so far is sequenced on the feed (the scan reads the
    trades re-opened since its last tick from there)."""
    async def sequenced() -> bool:
        return await conn.fetchval("SELECT count(*) FROM feed WHERE seq IS NULL") == 0
    await wait_for(sequenced, timeout=60)
    await scanner.tick()


async def overdue_events(client: Any, headers: dict[str, str], count: int
                         ) -> list[dict[str, Any]]:
    """The overdue updates on a feed, once ``count`` of them are sequenced."""
    async def enough() -> list[dict[str, Any]] | None:
        found = [u for u in await read_all(client, headers) if u["event"] == "overdue"]
        return found if len(found) >= count else None
    return await wait_for(enough)


def test_trade_dates_passing_a_window():
    cutoff = Cutoff.model_validate(XAU_CUTOFF)
    since = datetime.fromisoformat("2026-10-26T16:00:00+00:00")
    # Friday 23rd's cut-off is Monday 26th 17:00 GMT (after the clocks went back), and so
    # is the weekend's (one business day after Saturday or Sunday is Monday too).
    assert trade_dates_passing(cutoff, since, datetime.fromisoformat(
        "2026-10-26T17:00:00+00:00")) == []
    assert trade_dates_passing(cutoff, since, datetime.fromisoformat(
        "2026-10-26T17:00:01+00:00")) == [date(2026, 10, 23), date(2026, 10, 24),
                                          date(2026, 10, 25)]
    # Thursday 24th December's is Tuesday 29th (Christmas, and Boxing Day's substitute on
    # Monday 28th), as are the days up to Monday's; Wednesday 23rd's is Thursday 24th.
    assert trade_dates_passing(cutoff, datetime.fromisoformat("2026-12-24T00:00:00+00:00"),
                               datetime.fromisoformat("2026-12-29T17:00:01+00:00")) == [
        date(2026, 12, 23), date(2026, 12, 24), date(2026, 12, 25), date(2026, 12, 26),
        date(2026, 12, 27), date(2026, 12, 28)]
    assert trade_dates_passing(cutoff, datetime.fromisoformat("2026-12-29T17:00:01+00:00"),
                               datetime.fromisoformat("2026-12-30T17:00:01+00:00")) == [
        date(2026, 12, 29)]
    assert trade_dates_passing(cutoff, datetime.fromisoformat("2026-12-28T00:00:00+00:00"),
                               datetime.fromisoformat("2026-12-29T17:00:00+00:00")) == []


async def test_chasers_through_a_cutoff_dst_and_a_holiday(client, service: TradeService,
                                                          banks, pool, conn):
    a, b = banks
    clock = Clock()  # Monday 2026-10-26 12:00 UTC
    service.clock = clock  # the app's own scanner reads it too
    resp = await client.put("/v1/profiles/a-b-xau", json=PROFILE, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    # A second scanner beside the app's: the two may both see every trade.
    scanner = OverdueScanner(pool, clock)
    await scan(scanner, conn)

    # Trade date Friday 2026-10-23: cut-off Monday 26th 17:00 GMT (17:00 UTC; before the
    # clocks went back on Sunday it would have been 16:00 UTC).
    await submit(client, a, ours("A-BEFORE", "2026-10-23", price="1001"))
    assert (await submit(client, b, theirs("B-BEFORE", "2026-10-23", price="1001")))[
        "status"] == "matched"
    await submit(client, a, ours("A-AT", "2026-10-23", price="1002"))
    await submit(client, a, ours("A-AFTER", "2026-10-23", price="1003"))
    await submit(client, a, ours("A-MM", "2026-10-23", quantity="7"))
    assert (await submit(client, b, theirs("B-MM", "2026-10-23", quantity="8")))[
        "status"] == "mismatched"
    # Thursday 24th December: the holiday trade (cut-off Tuesday 29th 17:00 UTC).
    await submit(client, a, ours("A-XMAS", "2026-12-24", price="1004"))
    # No cut-off for XPT: never chased.
    await submit(client, a, ours("A-XPT", "2026-10-20", product="XPT"))

    clock.at("2026-10-26T16:30:00+00:00")  # past 17:00 BST, before 17:00 GMT
    await scan(scanner, conn)
    assert await notices(conn) == set()
    clock.at("2026-10-26T17:00:00+00:00")  # the cut-off itself: still in time
    await scan(scanner, conn)
    assert await notices(conn) == set()
    assert (await submit(client, b, theirs("B-AT", "2026-10-23", price="1002")))[
        "status"] == "matched"
    clock.at("2026-10-26T17:00:00.000001+00:00")
    await scan(scanner, conn)
    first = {("BANKA", "A-AFTER", "2026-10-23"), ("BANKA", "A-MM", "2026-10-23"),
             ("BANKB", "B-MM", "2026-10-23")}
    assert await notices(conn) == first
    for trade_id in ("A-AFTER", "A-MM"):  # what a read says agrees
        assert (await read(client, a, trade_id))["overdue"] is True
    for trade_id in ("A-BEFORE", "A-AT", "A-XMAS", "A-XPT"):
        assert (await read(client, a, trade_id))["overdue"] is False
    await scan(scanner, conn)
    assert await notices(conn) == first

    # Matched after the cut-off, then the match broken: open and overdue again, but its
    # notice for this trade date was sent; B-AFTER, open for the first time past the
    # cut-off, gets its own.
    matched = await submit(client, b, theirs("B-AFTER", "2026-10-23", price="1003"))
    assert matched["status"] == "matched"
    await scan(scanner, conn)
    assert await notices(conn) == first
    resp = await client.delete(f"/v1/admin/matches/{matched['match']['match_id']}",
                               json={"comment": "wrong"}, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    await scan(scanner, conn)
    second = first | {("BANKB", "B-AFTER", "2026-10-23")}
    assert await notices(conn) == second
    # Amended to a new trade date: chased again once that date's cut-off passes.
    current = await read(client, a, "A-AFTER")
    resp = await client.put("/v1/trades/A-AFTER", json=ours("A-AFTER", "2026-12-24",
                                                             price="1003"),
                            headers={**a, "If-Match": f'"{current["version"]}"'})
    assert resp.status == 200, await resp.text()
    await scan(scanner, conn)
    assert await notices(conn) == second

    # The holiday: Monday 28th December is Boxing Day's substitute.
    clock.at("2026-12-28T23:00:00+00:00")
    await scan(scanner, conn)
    assert await notices(conn) == second
    clock.at("2026-12-29T17:00:01+00:00")
    await scan(scanner, conn)
    third = second | {("BANKA", "A-XMAS", "2026-12-24"), ("BANKA", "A-AFTER", "2026-12-24")}
    assert await notices(conn) == third

    # A scanner that starts afresh (a restart, a new leader) walks every open trade and
    # finds nothing new to say.
    assert await OverdueScanner(pool, clock).tick() == 0
    assert await notices(conn) == third

    # On the feed: each notice once on the trade's participant's feed, once on its
    # counterparty's, each with its own seq.
    for headers, who in ((a, "BANKA"), (b, "BANKB")):
        events = await overdue_events(client, headers, len(third))
        assert len(events) == len(third)
        assert {(e["trade_participant"], e["trade_id"], e["trade_date"])
                for e in events} == third
        assert all(e["participant"] == who for e in events)
    everyone = await overdue_events(client, ADMIN, 2 * len(third))
    assert len(everyone) == 2 * len(third)
    assert len({e["seq"] for e in everyone}) == len(everyone)
    xmas = next(e for e in everyone if e["trade_id"] == "A-XMAS" and e["participant"] == "BANKB")
    assert xmas == {
        "seq": xmas["seq"], "event": "overdue", "participant": "BANKB",
        "notice_id": xmas["notice_id"], "trade_participant": "BANKA", "trade_id": "A-XMAS",
        "version": 1, "status": "unmatched", "counterparty": "BANKB", "product": "XAU",
        "trade_date": "2026-12-24", "cutoff_at": "2026-12-29T17:00:00.000000Z",
        "recorded_at": xmas["recorded_at"]}
    mm = next(e for e in everyone if e["trade_id"] == "B-MM" and e["participant"] == "BANKA")
    assert mm["status"] == "mismatched" and mm["trade_participant"] == "BANKB"
    assert await find_violations(conn) == []


async def test_the_consumer_and_the_relay_carry_overdue_updates(client, banks, empty_db_url):
    """A trade date long past: overdue at once, noticed by the app's own scanner."""
    a, b = banks
    resp = await client.put("/v1/profiles/a-b-xau", json=PROFILE, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    await submit(client, a, ours("A-OLD", "2026-01-05"))
    (event,) = await overdue_events(client, b, 1)
    assert event["trade_id"] == "A-OLD" and event["participant"] == "BANKB"
    feed = await read_all(client, b)
    metrics = await (await client.get("/metrics")).text()
    assert "kevin_overdue_notices_total 1.0" in metrics.splitlines()
    pool = await Consumer.create_pool(to_asyncpg_dsn(empty_db_url), min_size=1, max_size=2)
    got: list[OverdueEvent] = []

    async def on_overdue(conn, overdue: OverdueEvent):
        got.append(overdue)

    try:
        consumer = Consumer(url=str(client.make_url("")),
                            api_key=b["Authorization"].split(" ", 1)[1], pool=pool,
                            strategy="contiguous", on_overdue=on_overdue)
        await consumer.setup()
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))

        async def caught_up() -> bool:
            try:
                return await pool.fetchval("SELECT seq FROM kevin_feed_checkpoints") == \
                    feed[-1]["seq"]
            except Exception:  # the table does not exist before the consumer's first poll
                return False

        await wait_for(caught_up)
        stop.set()
        await asyncio.wait_for(task, 10)
        assert [(e.notice_id, e.participant, e.body["trade_id"]) for e in got] == [
            (event["notice_id"], "BANKB", "A-OLD")]
    finally:
        await pool.close()
    update = OverdueUpdate.model_validate(event)
    assert message_id(update) == f"BANKB/overdue/{event['notice_id']}"


async def test_scanners_racing_record_each_notice_once(client, banks, db_url, conn):
    """Four scanners on four pools (four processes' worth), each starting afresh and so
    walking every open trade at once: between them every overdue trade is recorded once,
    with its two feed updates."""
    a, _ = banks
    resp = await client.put("/v1/profiles/a-b-xau", json=PROFILE, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    lines = b"\n".join(jsoncodec.dumps(ours(f"A-{n}", "2026-01-05", quantity=str(n + 1)))
                       for n in range(300))
    resp = await client.post("/v1/trades/batch", data=lines,
                             headers={**a, "Content-Type": "application/x-ndjson"})
    assert resp.status == 200, await resp.text()
    assert await conn.fetchval("SELECT count(*) FROM trades WHERE latest") == 300
    pools = [await database.create_pool(db_url, min_size=1, max_size=2) for _ in range(4)]
    try:
        scanners = [OverdueScanner(p, batch=50) for p in pools]
        recorded = 0
        for _ in range(8):  # the walk is 50 a tick: 300 open trades take 6
            recorded += sum(await asyncio.gather(*(s.tick() for s in scanners)))
    finally:
        for p in pools:
            await p.close()
    in_database = await conn.fetchval("SELECT count(*) FROM overdue_notices")
    assert in_database == 300
    # The app's own scanner may have recorded some first; none was recorded twice.
    assert recorded <= 300
    assert await conn.fetchval("SELECT count(*) FROM feed WHERE notice_id IS NOT NULL") == 600
    assert await find_violations(conn) == []


class Rollback(Exception):
    pass


def _rows_read(node: dict, tables: tuple[str, ...]) -> int:
    """Rows and index entries a plan read from ``tables`` (EXPLAIN ANALYZE, JSON), each
    loop and each row a filter removed counted."""
    index = node.get("Index Name", "")
    on_table = node.get("Relation Name") in tables or any(
        index.startswith((f"pk_{t}", f"ix_{t}_", f"uq_{t}_")) for t in tables)
    own = (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) \
        * node["Actual Loops"] if on_table else 0
    return own + sum(_rows_read(child, tables) for child in node.get("Plans", []))


async def test_a_scan_reads_the_dates_that_passed_not_every_trade(service: TradeService, pool):
    """2,000 open trades over 40 trade dates: the statements of a tick, on the plan a
    scanner keeps (generic), read one date's trades, one batch of the walk, one window of
    the feed — never the whole book."""
    for name in ("BANKA", "BANKB"):
        await service.create_participant(name)
    first = date(2026, 1, 5)
    await service.submit_batch("BANKA", [TradeSubmission.model_validate(ours(
        f"A-{n}", (first + timedelta(days=n % 40)).isoformat(), quantity=str(n + 1)))
        for n in range(2000)])
    async with pool.acquire() as conn:
        assert await feed_store.take_lead(conn)

        async def sequenced() -> bool:  # the xmin horizon is cluster-wide: other runs
            await feed_store.sequence_round(conn, 5000)
            return await conn.fetchval("SELECT count(*) FROM feed WHERE seq IS NULL") == 0

        await wait_for(sequenced, timeout=60)
        await conn.execute("SELECT pg_advisory_unlock_all()")
        await conn.execute("ANALYZE trades; ANALYZE feed")
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        top = await conn.fetchval("SELECT max(seq) FROM feed")

        async def read(statement: str, *args: object) -> int:
            explained = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}",
                                            *args)
            (plan,) = json.loads(explained) if isinstance(explained, str) else explained
            return _rows_read(plan["Plan"], ("trades", "feed"))

        try:
            one_date = await read(q.OPEN_ON_DATES, [first + timedelta(days=3)],
                                  *q.WALK_START, 1000)
            walk = await read(q.OPEN_UNTIL, first + timedelta(days=39), *q.WALK_START, 100)
            window = await read(q.OPENED_ON_FEED, top - 100, top)
            async with conn.transaction():  # recording 100 notices, then not
                recorded = await read(q.RECORD_NOTICES, ["BANKA"] * 100,
                                      [f"A-{n}" for n in range(100)], [1] * 100,
                                      [datetime(2026, 1, 6, tzinfo=UTC)] * 100)
                raise Rollback
        except Rollback:
            pass
        finally:
            await conn.execute("RESET plan_cache_mode")
    # 50 trades a date: their index entries and rows; a batch of 100; 100 feed rows and
    # a version probe each (index entry and row).
    assert one_date <= 2 * 50 + 10, one_date
    assert walk <= 2 * 100 + 10, walk
    assert window <= 100 + 2 * 100 + 10, window
    # 100 candidates: a probe each (index entry and row), 100 notices and 200 feed rows.
    assert 100 <= recorded <= 2 * 100 + 10, recorded


@pytest.mark.slow
async def test_the_nats_relay_carries_overdue_updates(client, banks, pool):
    a, _ = banks
    resp = await client.put("/v1/profiles/a-b-xau", json=PROFILE, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    await submit(client, a, ours("A-OLD", "2026-01-05"))
    (event,) = await overdue_events(client, a, 1)
    feed = await read_all(client, ADMIN)
    prefix, carried = await relayed(pool, len(feed))
    overdue = sorted((subject, mid, body["trade_id"]) for subject, mid, body in carried
                     if body["event"] == "overdue")
    notice = event["notice_id"]
    assert overdue == [(f"{prefix}.BANKA", f"BANKA/overdue/{notice}", "A-OLD"),
                       (f"{prefix}.BANKB", f"BANKB/overdue/{notice}", "A-OLD")]
