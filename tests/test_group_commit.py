"""Group commit (kevin.engine.group_commit): concurrent single writes decided and written
in one transaction, each answered exactly as it would have been alone.

To put chosen writes in one group for certain, a test holds the drain task: it holds
the match-key lock of a blocker trade (product XAG) in its own transaction, sends the
blocker (a group of one, waiting for that lock), sends the writes one after the other
(each waits until the one before it is queued: arrival order is the order sent), then
lets the blocker go — the writes queued meanwhile are the next group.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
import structlog.testing

from kevin.api.app import create_app
from kevin.dburl import to_asyncpg_dsn
from kevin.domain.models import TradeSubmission
from kevin.engine.group_commit import LIGHT_LOAD, LIGHT_WAIT
from kevin.engine.service import TradeService
from kevin.store import bulk
from kevin.store.batch_book import BatchBook
from kevin.store.matching import MATCH_LOCK_CLASS, MatchKey
from tests.conftest import ADMIN, ADMIN_TOKEN, as_read, wait_for
from tests.support import buy, get, sell, versions

Send = Callable[[], Awaitable[Any]]
BLOCKER_KEY = MatchKey("XAG", "USD", ("BANKA", "BANKB"))


async def _lock_waiters(conn: asyncpg.Connection) -> int:
    return await conn.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")


@asynccontextmanager
async def held_drain(service: TradeService, conn: asyncpg.Connection, send_blocker: Send,
                     max_wait: float = 60) -> AsyncIterator[Callable[[Send], Awaitable[Any]]]:
    """Yields ``queue(send)``: starts a write and waits until it is queued. On exit the
    blocker is let go and everything queued runs as one group. (``max_wait``: by
    default no second group starts beside the blocker's: the writes wait for it.)"""
    group = service.group
    assert group is not None
    group.max_wait = max_wait
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", MATCH_LOCK_CLASS,
                           BLOCKER_KEY.lock_id())
        blocker = asyncio.ensure_future(send_blocker())
        await wait_for(lambda: _lock_waiters(conn))

        async def queue(send: Send) -> asyncio.Future[Any]:
            before = group.queued
            task = asyncio.ensure_future(send())

            async def queued() -> bool:
                return group.queued > before

            await wait_for(queued)
            return task

        yield queue
    finally:
        await tx.rollback()
    await blocker


async def _group_sizes(client) -> dict[str, float]:
    text = await (await client.get("/metrics")).text()
    return {le: float(n) for le, n in re.findall(
        r'^kevin_group_commit_size_bucket\{le="([^"]+)"\} (\S+)$', text, re.M)}


def blocker_send(client, a) -> Send:
    return lambda: client.post("/v1/trades", json=sell("BLOCK-1", product="XAG"), headers=a)


async def _answer(resp) -> tuple[int, str | None, Any]:
    return resp.status, resp.headers.get("ETag"), await resp.json()


async def test_concurrent_submissions_form_groups(client, banks, conn):
    a, b = banks
    bodies = [(a, sell(f"A-{i:02d}")) for i in range(30)] + \
             [(b, buy(f"B-{i:02d}")) for i in range(30)]
    responses = await asyncio.gather(*(client.post("/v1/trades", json=body, headers=h)
                                       for h, body in bodies))
    assert [r.status for r in responses] == [201] * 60
    sizes = await _group_sizes(client)
    assert sizes["+Inf"] < 60, "every write went alone: no group formed"
    assert sizes["1.0"] < sizes["+Inf"]  # some group had more than one write
    assert await conn.fetchval("SELECT count(*) FROM trades WHERE latest AND status = "
                               "'matched'") == 60


async def test_a_sell_and_its_buy_in_one_group_are_answered_as_alone(client, service, banks,
                                                                     conn):
    a, b = banks
    async with held_drain(service, conn, blocker_send(client, a)) as queue:
        sell_sent = await queue(lambda: client.post("/v1/trades", json=sell("A-1"),
                                                    headers=a))
        buy_sent = await queue(lambda: client.post("/v1/trades", json=buy("B-1"), headers=b))
        assert not sell_sent.done() and not buy_sent.done()  # nothing before the commit
    sell_status, sell_etag, sell_answer = await _answer(await sell_sent)
    buy_status, buy_etag, buy_answer = await _answer(await buy_sent)
    # The sell, alone, rested: its answer is its version 1, as stored.
    assert (sell_status, sell_etag) == (201, '"1"')
    assert sell_answer["status"] == "unmatched"
    assert as_read(sell_answer) == (await versions(client, a, "A-1"))[0] | {
        "cutoff_at": None, "overdue": False}
    # The buy matched it: its answer is its matched version, exactly as stored.
    assert (buy_status, buy_etag) == (201, '"2"')
    assert as_read(buy_answer) == await get(client, b, "B-1")
    assert buy_answer["status"] == "matched"
    assert (await get(client, a, "A-1"))["match"]["match_id"] == buy_answer["match"]["match_id"]
    sizes = await _group_sizes(client)
    assert sizes["1.0"] == 1 and sizes["2.0"] == 2  # the blocker alone, then the pair
    assert await _transactions(conn, "_-1") == 1


async def test_a_conflicting_resubmission_in_a_group_fails_only_itself(client, service,
                                                                       banks, conn):
    a, b = banks
    async with held_drain(service, conn, blocker_send(client, a)) as queue:
        first = await queue(lambda: client.post("/v1/trades", json=sell("A-1"), headers=a))
        conflicting = await queue(lambda: client.post(
            "/v1/trades", json=sell("A-1", price="999"), headers=a))
        same = await queue(lambda: client.post("/v1/trades", json=sell("A-1"), headers=a))
        other = await queue(lambda: client.post("/v1/trades", json=buy("B-1"), headers=b))
    assert (await first).status == 201
    refused = await conflicting
    assert refused.status == 409
    body = await refused.json()
    assert body["error"] == "exists_with_different_fields"
    assert body["details"] == {"fields": ["price"]}
    status, etag, again = await _answer(await same)
    assert (status, etag, again["version"], again["status"]) == (200, '"1"', 1, "unmatched")
    status, _, matched = await _answer(await other)
    assert (status, matched["status"]) == (201, "matched")
    assert (await get(client, a, "A-1"))["price"] == "1000.25"


async def test_a_stale_if_match_in_a_group_fails_only_itself(client, service, banks, conn):
    a, b = banks
    resp = await client.post("/v1/trades", json=sell("A-1"), headers=a)
    assert resp.status == 201
    async with held_drain(service, conn, blocker_send(client, a)) as queue:
        amended = await queue(lambda: client.put(
            "/v1/trades/A-1", json=sell("A-1", price="1001"), headers={**a, "If-Match": '"1"'}))
        stale = await queue(lambda: client.put(
            "/v1/trades/A-1", json=sell("A-1", price="1002"), headers={**a, "If-Match": '"1"'}))
        unconditional = await queue(lambda: client.delete("/v1/trades/A-1", headers=a))
        submitted = await queue(lambda: client.post(
            "/v1/trades", json=buy("B-1", price="1001"), headers=b))
        missing = await queue(lambda: client.delete(
            "/v1/trades/A-404", headers={**a, "If-Match": "*"}))
    status, etag, body = await _answer(await amended)
    assert (status, etag, body["price"]) == (200, '"2"', "1001")
    status, _, body = await _answer(await stale)
    assert status == 412 and body["details"] == {"current_version": 2}
    status, _, body = await _answer(await unconditional)
    assert status == 428 and body["details"] == {"current_version": 2}
    status, _, body = await _answer(await submitted)
    assert (status, body["status"], body["match"]["counterparty_trade_id"]) == \
        (201, "matched", "A-1")
    assert (await missing).status == 404
    latest = await get(client, a, "A-1")
    assert (latest["version"], latest["price"], latest["status"]) == (3, "1001", "matched")


async def test_a_pair_an_operator_broke_is_never_matched_again_in_a_group(client, service,
                                                                         banks, conn):
    """The group reads the broken pairs under its locks, with its new trades: an amend
    back to the very terms of the trade it was broken from rests, a fresh buy matches."""
    a, b = banks
    await client.post("/v1/trades", json=sell("A-1"), headers=a)
    matched = await (await client.post("/v1/trades", json=buy("B-1"), headers=b)).json()
    resp = await client.delete(f"/v1/admin/matches/{matched['match']['match_id']}",
                               json={"comment": "wrong counterparty"}, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    b1 = await get(client, b, "B-1")
    resp = await client.put("/v1/trades/B-1", json=buy("B-1", price="1010"),
                            headers={**b, "If-Match": f'"{b1["version"]}"'})
    assert resp.status == 200, await resp.text()
    async with held_drain(service, conn, blocker_send(client, a)) as queue:
        amended = await queue(lambda: client.put(
            "/v1/trades/B-1", json=buy("B-1"), headers={**b, "If-Match": resp.headers["ETag"]}))
        fresh = await queue(lambda: client.post("/v1/trades", json=buy("B-9"), headers=b))
    status, _, body = await _answer(await amended)
    assert (status, body["status"]) == (200, "unmatched")
    status, _, body = await _answer(await fresh)
    assert (status, body["status"], body["match"]["counterparty_trade_id"]) == \
        (201, "matched", "A-1")
    sizes = await _group_sizes(client)
    # The first three writes, then the blocker, alone; then the amend and the buy together.
    assert sizes["1.0"] == 4 and sizes["2.0"] == 5


async def test_a_write_cancelled_mid_group_changes_nothing_for_the_others(client, service,
                                                                          banks, conn, db_url):
    """The group waits on a key the test holds with a second transaction; the client of
    one write in it goes away, and that of one still queued behind it."""
    a, b = banks
    other_key = MatchKey("XPT", "USD", ("BANKA", "BANKB"))
    holder = await asyncpg.connect(to_asyncpg_dsn(db_url))
    try:
        tx = holder.transaction()
        await tx.start()
        await holder.execute("SELECT pg_advisory_xact_lock($1, $2)", MATCH_LOCK_CLASS,
                             other_key.lock_id())
        try:
            async with held_drain(service, conn, blocker_send(client, a)) as queue:
                sold = await queue(lambda: service.submit("BANKA", _submission(sell("A-1"))))
                bought = await queue(lambda: service.submit("BANKB", _submission(buy("B-1"))))
                held = await queue(lambda: service.submit(
                    "BANKA", _submission(sell("A-2", product="XPT"))))
            # The group now waits for the XPT key (the blocker's lock is gone).
            await wait_for(lambda: _lock_waiters(conn))
            late = asyncio.ensure_future(service.submit("BANKA", _submission(sell("A-3"))))
            await wait_for(lambda: _queued(service))
            bought.cancel()
            late.cancel()
        finally:
            await tx.rollback()
    finally:
        await holder.close()
    result, trade = await sold
    assert (result, trade.version, trade.status) == ("created", 1, "unmatched")
    result, trade = await held
    assert (result, trade.status) == ("created", "unmatched")
    with pytest.raises(asyncio.CancelledError):
        await bought
    with pytest.raises(asyncio.CancelledError):
        await late
    # The write in the group was written with it (its client just never heard); the one
    # still queued was dropped before it ran.
    assert (await get(client, b, "B-1"))["status"] == "matched"
    assert (await get(client, a, "A-1"))["status"] == "matched"
    assert (await client.get("/v1/trades/A-3", headers=a)).status == 404


async def _queued(service: TradeService) -> bool:
    assert service.group is not None
    return service.group.queued > 0


def _submission(body: dict[str, Any]) -> TradeSubmission:
    return TradeSubmission.model_validate(body)


# One script of writes: each answered alone (group commit off, in order) and all in one
# group must get the same answers — status, ETag and body, but for what differs between
# two runs (instants, match ids) and the product each run uses (its own match keys).
SCRIPT: list[tuple[str, str, str, dict[str, Any] | None, str | None]] = [
    # (who, method, trade_id, body, If-Match)
    ("A", "POST", "A-1", sell("A-1"), None),
    ("B", "POST", "B-1", buy("B-1"), None),
    ("A", "POST", "A-1", sell("A-1"), None),
    ("A", "POST", "A-1", sell("A-1", price="1"), None),
    ("B", "POST", "B-2", buy("B-2", price="1001"), None),
    ("A", "POST", "A-2", sell("A-2", price="1002"), None),
    ("A", "PUT", "A-2", sell("A-2", price="1003"), '"1"'),
    ("A", "PUT", "A-2", sell("A-2", price="1001"), '"2"'),
    ("B", "DELETE", "B-1", None, None),
    ("B", "DELETE", "B-1", None, "*"),
    ("A", "PUT", "A-9", sell("A-9"), "*"),
    ("A", "DELETE", "A-1", None, "*"),
    ("A", "DELETE", "A-1", None, "*"),
    ("B", "PUT", "B-2", buy("B-2", price="1001", attributes={"book": "x"}), '"3"'),
]


def _request(client, headers: dict[str, dict[str, str]], run: str, product: str,
             step: tuple[str, str, str, dict[str, Any] | None, str | None]) -> Send:
    """The step for one run: its own product and trade_ids (``run`` before each)."""
    who, method, trade_id, body, if_match = step
    trade_id = run + trade_id
    sent = {**headers[who], **({"If-Match": if_match} if if_match else {})}
    payload = None if body is None else {**body, "trade_id": trade_id, "product": product}
    if method == "POST":
        return lambda: client.post("/v1/trades", json=payload, headers=sent)
    if method == "PUT":
        return lambda: client.put(f"/v1/trades/{trade_id}", json=payload, headers=sent)
    return lambda: client.delete(f"/v1/trades/{trade_id}", headers=sent)


def _comparable(answer: tuple[int, str | None, Any], run: str, product: str) -> str:
    text = json.dumps(answer, sort_keys=True).replace(f'"{product}"', '"PRODUCT"')
    text = text.replace(run, "")
    text = re.sub(r'"(recorded_at|first_submitted_at)": "[^"]*"', r'"\1": "T"', text)
    return re.sub(r'"match_id": "[^"]*"', '"match_id": "M"', text)


# Under a profile of the pair (every product): a tolerance, a matched cancel kept for
# agreement.
PROFILE = {"participants": ["BANKA", "BANKB"], "product": "*",
           "fields": {"price": {"abs": "1"}}, "matched_cancel": "by_agreement"}
PROFILE_SCRIPT: list[tuple[str, str, str, dict[str, Any] | None, str | None]] = [
    ("A", "POST", "A-1", sell("A-1", price="1000"), None),
    ("B", "POST", "B-1", buy("B-1", price="1000.5"), None),
    ("A", "DELETE", "A-1", None, "*"),
    ("B", "POST", "B-2", buy("B-2", price="1003"), None),
    ("A", "POST", "A-2", sell("A-2", price="1004.5"), None),
    ("A", "PUT", "A-2", sell("A-2", price="1003.5"), "*"),
    ("B", "DELETE", "B-2", None, '"2"'),
]


@pytest.mark.parametrize("script,profile,statuses", [
    (SCRIPT, None, [201, 201, 200, 409, 201, 201, 412, 200, 428, 200, 404, 200, 409, 200]),
    (PROFILE_SCRIPT, PROFILE, [201, 201, 409, 201, 201, 200, 412]),
], ids=["exact", "profile"])
async def test_a_group_answers_every_write_exactly_as_alone(client, service, banks, conn,
                                                            pool, aiohttp_client, script,
                                                            profile, statuses):
    a, b = banks
    headers = {"A": a, "B": b}
    if profile is not None:
        resp = await client.put("/v1/profiles/a-b", json=profile, headers=ADMIN)
        assert resp.status == 200, await resp.text()
    alone_client = await aiohttp_client(create_app(TradeService(pool, group_commit=False),
                                                   ADMIN_TOKEN))
    alone = [_comparable(await _answer(await _request(alone_client, headers, "solo-", "XAU",
                                                      step)()), "solo-", "XAU")
             for step in script]
    async with held_drain(service, conn, blocker_send(client, a)) as queue:
        sent = [await queue(_request(client, headers, "grp-", "XPT", step))
                for step in script]
    grouped = [_comparable(await _answer(await s), "grp-", "XPT") for s in sent]
    assert grouped == alone
    assert [json.loads(answer)[0] for answer in alone] == statuses
    assert (await _group_sizes(client))["+Inf"] == 2  # the blocker, then all of them
    assert await _transactions(conn, "grp-%") == 1  # decided together, not one by one


async def _transactions(conn: asyncpg.Connection, trade_ids: str) -> int:
    """How many transactions wrote the versions of these trades."""
    return await conn.fetchval("SELECT count(DISTINCT xmin::text) FROM trades "
                               "WHERE trade_id LIKE $1", trade_ids)


async def test_a_write_the_database_refuses_fails_only_itself(client, service, banks, conn):
    """A NUL character, which no request body gets past validation, but which
    PostgreSQL refuses: the group's transaction fails as a whole, and each write runs
    again alone."""
    from kevin.domain.errors import ValidationFailed

    a, _ = banks
    unstorable = _submission(sell("A-2")).model_copy(update={"location": "a\u0000b"})
    with structlog.testing.capture_logs() as logs:
        async with held_drain(service, conn, blocker_send(client, a)) as queue:
            sold = await queue(lambda: service.submit("BANKA", _submission(sell("A-1"))))
            refused = await queue(lambda: service.submit("BANKA", unstorable))
            bought = await queue(lambda: service.submit("BANKB", _submission(buy("B-1"))))
        result, trade = await sold
    assert [e["size"] for e in logs if e["event"].startswith("group commit failed")] == [3]
    assert (result, trade.version, trade.status) == ("created", 1, "unmatched")
    with pytest.raises(ValidationFailed):
        await refused
    result, trade = await bought
    assert (result, trade.status, trade.match.counterparty_trade_id) == \
        ("created", "matched", "A-1")
    assert (await client.get("/v1/trades/A-2", headers=a)).status == 404


async def test_a_group_s_transaction_writes_nothing_before_its_last_statement(
        client, service, banks, conn, monkeypatch):
    """The group reads, matches, and writes every version (each new trade's version 1
    among them) at the end: until then its transaction has no xid, so the feed
    sequencer numbers the rows other writers commit meanwhile (kevin.feed.sequencer)."""
    a, b = banks
    flush = BatchBook.flush
    xids: list[object] = []

    async def checked_flush(book: BatchBook) -> None:
        xids.append(await book.conn.fetchval("SELECT pg_current_xact_id_if_assigned()"))
        await flush(book)

    monkeypatch.setattr(BatchBook, "flush", checked_flush)
    async with held_drain(service, conn, blocker_send(client, a)) as queue:
        sold = await queue(lambda: client.post("/v1/trades", json=sell("A-1"), headers=a))
        bought = await queue(lambda: client.post("/v1/trades", json=buy("B-1"), headers=b))
    assert (await sold).status == (await bought).status == 201
    assert xids == [None]
    assert (await get(client, b, "B-1"))["status"] == "matched"
    assert await _transactions(conn, "_-1") == 1


async def test_a_trade_id_created_after_the_group_read_it_free_is_answered_as_alone(
        client, service, banks, conn, pool, monkeypatch):
    """Another writer creates A-1 (under another match key) after the group read its
    trade_id free: the group's last statement fails on the trade's key, the transaction
    as a whole, and each write runs again alone — A-1's submission is answered from that
    trade (409: its product differs), B-1 finds nothing to match."""
    a, b = banks
    first_submissions_and_broken = bulk.first_submissions_and_broken
    other = TradeService(pool, group_commit=False)

    async def another_writer_meanwhile(conn_, news, participants):
        read = await first_submissions_and_broken(conn_, news, participants)
        if any(new.trade_id == "A-1" for new in news):
            await other.submit("BANKA", _submission(sell("A-1", product="XAG")))
        return read

    monkeypatch.setattr(bulk, "first_submissions_and_broken", another_writer_meanwhile)
    with structlog.testing.capture_logs() as logs:
        async with held_drain(service, conn, blocker_send(client, a)) as queue:
            sold = await queue(lambda: client.post("/v1/trades", json=sell("A-1"), headers=a))
            bought = await queue(lambda: client.post("/v1/trades", json=buy("B-1"),
                                                     headers=b))
        refused, created = await sold, await bought
    assert [e["size"] for e in logs if e["event"].startswith("group commit failed")] == [2]
    assert refused.status == 409
    assert (await refused.json())["details"] == {"fields": ["product"]}
    assert created.status == 201
    assert (await created.json())["status"] == "unmatched"
    stored = await get(client, a, "A-1")
    assert (stored["version"], stored["product"]) == (1, "XAG")
    assert await conn.fetchval("SELECT count(*) FROM trades WHERE trade_id LIKE '_-1'") == \
        await conn.fetchval("SELECT count(*) FROM feed WHERE trade_id LIKE '_-1'") == 2


async def test_a_trade_id_taken_before_the_group_read_it_is_answered_from_the_trade(
        client, service, banks, conn, pool, monkeypatch):
    """Another writer created A-1 (under another match key) after the group took its
    locks, before it read its first submissions: the group reads it taken and answers
    A-1's submission from that trade (409: its product differs), as alone, in its one
    transaction — no write runs again."""
    a, b = banks
    open_group = bulk.open_group
    other = TradeService(pool, group_commit=False)

    async def another_writer_first(conn_, keys, participants):
        opened = await open_group(conn_, keys, participants)
        await other.submit("BANKA", _submission(sell("A-1", product="XAG")))
        return opened

    monkeypatch.setattr(bulk, "open_group", another_writer_first)
    with structlog.testing.capture_logs() as logs:
        async with held_drain(service, conn, blocker_send(client, a)) as queue:
            refused = await queue(lambda: client.post("/v1/trades", json=sell("A-1"),
                                                      headers=a))
            bought = await queue(lambda: client.post("/v1/trades", json=buy("B-1"),
                                                     headers=b))
        refused_resp, bought_resp = await refused, await bought
    assert not [e for e in logs if e["event"].startswith("group commit failed")]
    assert refused_resp.status == 409
    assert (await refused_resp.json())["details"] == {"fields": ["product"]}
    status, _, body = await _answer(bought_resp)
    assert (status, body["status"]) == (201, "unmatched")
    stored = await get(client, a, "A-1")
    assert (stored["version"], stored["product"]) == (1, "XAG")


async def test_a_write_waits_for_a_stuck_group_at_most_max_wait(client, service, banks, conn):
    """The cap on the latency grouping adds: the blocker's group is stuck on a lock, and
    a write arriving meanwhile starts its own group beside it after ``max_wait``."""
    a, b = banks
    assert service.group is not None and service.group.max_wait == 0.025
    async with held_drain(service, conn, blocker_send(client, a), max_wait=0.025):
        started = asyncio.get_running_loop().time()
        resp = await client.post("/v1/trades", json=sell("A-1"), headers=a)
        assert resp.status == 201
        # Answered while the blocker still waits: well within its statement timeout.
        assert asyncio.get_running_loop().time() - started < 4
        assert await _lock_waiters(conn) == 1


async def test_under_light_load_a_write_waits_light_wait_of_max_wait(client, service,
                                                                     banks, conn):
    """Fewer than LIGHT_LOAD writes in flight and queued: grouping would save little, so
    a write waits only LIGHT_WAIT x ``max_wait`` for the stuck group before starting its
    own beside it — not ``max_wait`` itself."""
    a, _ = banks
    assert LIGHT_WAIT * 5 < 5
    async with held_drain(service, conn, blocker_send(client, a), max_wait=5):
        loop = asyncio.get_running_loop()
        started = loop.time()
        resp = await client.post("/v1/trades", json=sell("A-1"), headers=a)
        waited = loop.time() - started
        assert resp.status == 201
        assert LIGHT_WAIT * 5 <= waited < 5
        assert await _lock_waiters(conn) == 1  # the blocker is still stuck


async def test_light_load_is_the_servers_load_across_its_processes(client, service, banks,
                                                                   conn):
    """Four writes in this process (the stuck group's and three queued) are light load
    for a server of one process, not for one of two (each sees its share of the
    clients): there the write at the queue's head, on another key, waits ``max_wait``
    for the stuck group instead of starting a group beside it."""
    a, _ = banks
    assert service.group is not None
    assert 4 < LIGHT_LOAD <= 4 * 2
    max_wait = 20  # the light wait, 0.4 s: time to queue the two writes behind the head
    for processes, light in ((1, True), (2, False)):
        service.group.processes = processes
        async with held_drain(service, conn, blocker_send(client, a),
                              max_wait=max_wait) as queue:
            other = await queue(lambda p=processes: client.post(
                "/v1/trades", json=sell(f"A-{p}"), headers=a))
            same_key = [await queue(lambda i=i, p=processes: client.post(
                "/v1/trades", json=sell(f"BLOCK-{p}{i}", product="XAG"), headers=a))
                for i in range(2)]
            # Four times the light wait: under light load it started beside the blocker.
            done, _ = await asyncio.wait([other], timeout=4 * LIGHT_WAIT * max_wait)
            assert bool(done) is light
            assert service.group.queued == (2 if light else 3)
        assert [(await r).status for r in (other, *same_key)] == [201] * 3


async def test_under_light_load_a_write_on_a_busy_key_still_waits_for_its_group(
        client, service, banks, conn):
    """A submission on the match key of the stuck group would only wait for that group's
    lock beside it: it starts no group before ``max_wait``, light load or not."""
    a, _ = banks
    async with held_drain(service, conn, blocker_send(client, a), max_wait=5) as queue:
        assert service.group is not None
        same_key = await queue(lambda: client.post(
            "/v1/trades", json=sell("BLOCK-2", product="XAG"), headers=a))
        # Four times the light wait: a group beside the blocker would have started.
        await asyncio.sleep(4 * LIGHT_WAIT * 5)
        assert service.group.queued == 1
        assert await _lock_waiters(conn) == 1
    assert (await same_key).status == 201
