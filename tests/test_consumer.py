"""kevin.consumer against a real server and a real consumer database: any delivery order,
duplicates and losses end equal to Kevin; contiguous never plays out of order; a consumer
killed with SIGKILL and restarted neither loses nor doubles an effect."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections import defaultdict

import aiohttp
import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kevin import jsoncodec
from kevin.consumer import Consumer, Update
from kevin.dburl import to_asyncpg_dsn
from tests.conftest import ADMIN, ADMIN_TOKEN, trade_body, wait_for
from tests.feed_helpers import read_all
from tests.processes import Server, kevin_env
from tests.test_cutoffs_api import PROFILE, ours


def _key(headers: dict[str, str]) -> str:
    return headers["Authorization"].split(" ", 1)[1]


async def _history(client, headers) -> None:
    """Six trades of BANKA's with one to four versions each (amends, a cancel)."""
    for i in range(6):
        resp = await client.post("/v1/trades", json=trade_body(f"H-{i}", price=f"{100 + i}"),
                                 headers=headers)
        assert resp.status == 201
        for v in range(1, i % 4 + 1):
            if i == 5 and v == i % 4:
                resp = await client.delete(f"/v1/trades/H-{i}",
                                           headers={**headers, "If-Match": f'"{v}"'})
            else:
                resp = await client.put(f"/v1/trades/H-{i}",
                                        json=trade_body(f"H-{i}", price=f"{200 + v}"),
                                        headers={**headers, "If-Match": f'"{v}"'})
            assert resp.status == 200, await resp.text()


async def _server_versions(client, headers, trade_ids) -> dict[str, list[dict]]:
    out = {}
    for trade_id in trade_ids:
        resp = await client.get(f"/v1/trades/{trade_id}/versions", headers=headers)
        out[trade_id] = (await resp.json())["versions"]
    return out


def _expected_gaps(held: dict[str, set[int]]) -> list[tuple[str, int, int]]:
    gaps = []
    for trade_id, versions in sorted(held.items()):
        ordered, previous = sorted(versions), 0
        for v in ordered:
            if v > previous + 1:
                gaps.append((trade_id, previous + 1, v - 1))
            previous = v
    return gaps


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["contiguous", "drop-older"])
def test_any_delivery_ends_equal_to_the_server(db_url, empty_db_url, strategy, tmp_path):
    """A sync test on purpose: hypothesis runs in the main thread (CPython 3.11's ast is
    not thread-safe, and hypothesis parses), each example with its own event loop, against
    a real `kevin serve` in a subprocess."""
    server_process = Server(tmp_path / "serve.log", KEVIN_DATABASE_URL=db_url,
                            KEVIN_ADMIN_TOKEN=ADMIN_TOKEN).start()
    try:
        url = server_process.url
        key, updates, server = asyncio.run(_prepare(server_process))
        _run_examples(url, key, to_asyncpg_dsn(empty_db_url), strategy, updates, server)
    finally:
        asyncio.run(server_process.stop())


async def _prepare(server_process):
    await server_process.wait_ready()
    async with aiohttp.ClientSession(base_url=server_process.url) as session:
        client = _Client(session)
        resp = await session.post("/v1/participants", json={"name": "BANKA"},
                                  headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        a = {"Authorization": f"Bearer {(await resp.json())['api_key']}"}
        await session.post("/v1/participants", json={"name": "BANKB"},
                           headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        await _history(client, a)
        updates = await wait_for(lambda: _at_least(client, a, 13))
        server = await _server_versions(client, a, sorted({u["trade_id"] for u in updates}))
        return _key(a), updates, server


class _Client:
    """The bits of the aiohttp test client the helpers use, over a plain session."""

    def __init__(self, session):
        self.session = session

    def post(self, path, **kw):
        return self.session.post(path, **kw)

    def put(self, path, **kw):
        return self.session.put(path, **kw)

    def delete(self, path, **kw):
        return self.session.delete(path, **kw)

    def get(self, path, **kw):
        return self.session.get(path, **kw)


def _run_examples(url, key, dsn, strategy, updates, server):

    async def one_example(schedule: list[int]) -> None:
        played: dict[str, list[int]] = defaultdict(list)

        async def callback(conn: asyncpg.Connection, update: Update) -> None:
            played[update.trade_id].append(update.version)

        pool = await Consumer.create_pool(dsn, min_size=1, max_size=2)
        try:
            await pool.execute("DROP TABLE IF EXISTS kevin_trade_versions, kevin_feed_checkpoints")
            consumer = Consumer(url=url, api_key=key, pool=pool, strategy=strategy,
                                callback=callback)
            await consumer.setup()
            for i in schedule:  # duplicated, reordered, some never delivered
                await consumer.apply(Update.from_feed(updates[i]))

            delivered = [updates[i] for i in schedule]
            held: dict[str, set[int]] = defaultdict(set)
            if strategy == "contiguous":
                for u in delivered:
                    held[u["trade_id"]].add(u["version"])
                for trade_id, versions in played.items():  # an unbroken run from 1
                    assert versions == list(range(1, len(versions) + 1))
                    assert set(versions) <= held[trade_id]
            else:
                top: dict[str, int] = {}
                for u in delivered:
                    if u["version"] > top.get(u["trade_id"], 0):
                        top[u["trade_id"]] = u["version"]
                        held[u["trade_id"]].add(u["version"])
                for trade_id, versions in played.items():  # strictly newer each time
                    assert versions == sorted(held[trade_id])
            found = await consumer.gaps()  # the lead() gap query, against a model
            assert [(t, lo, hi) for _, t, lo, hi in found] == _expected_gaps(held)
            assert await consumer.checkpoint() == max((u["seq"] for u in delivered), default=0)

            await consumer.reconcile()  # read Kevin first: backfill holes and lost tails

            assert await consumer.gaps() == []
            rows = await pool.fetch("SELECT trade_id, version, latest, trade "
                                    "FROM kevin_trade_versions ORDER BY trade_id, version")
            latest = {r["trade_id"]: r for r in rows if r["latest"]}
            assert set(latest) == set(server)
            for trade_id, versions in server.items():
                assert latest[trade_id]["version"] == versions[-1]["version"]
                assert latest[trade_id]["trade"] == versions[-1]
                assert [r["version"] for r in rows if r["trade_id"] == trade_id] == [
                    v["version"] for v in versions]  # history complete after backfill
                if strategy == "contiguous":  # every transition exactly once, in order
                    assert played[trade_id] == [v["version"] for v in versions]
                else:
                    assert played[trade_id] == sorted(set(played[trade_id]))
                    assert played[trade_id][-1] == versions[-1]["version"]
        finally:
            await pool.close()

    @settings(max_examples=30, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(st.integers(0, len(updates) - 1), max_size=3 * len(updates)))
    def prop(schedule: list[int]) -> None:
        asyncio.run(one_example(schedule))

    prop()


async def _at_least(client, headers, n):
    updates = await read_all(client, headers)
    return updates if len(updates) >= n else None


async def test_following_the_feed_live_and_resuming(client, banks, empty_db_url):
    a, _ = banks
    pool = await Consumer.create_pool(to_asyncpg_dsn(empty_db_url), min_size=1, max_size=2)
    played: list[tuple[str, int]] = []

    async def callback(conn, update):
        played.append((update.trade_id, update.version))

    def consumer() -> Consumer:
        return Consumer(url=str(client.make_url("")), api_key=_key(a), pool=pool,
                        strategy="contiguous", callback=callback)

    async def holds(n):
        return await pool.fetchval("SELECT count(*) FROM kevin_trade_versions") == n

    try:
        first = consumer()
        await first.setup()  # its tables exist before holds() reads them (run() races it)
        stop = asyncio.Event()
        task = asyncio.create_task(first.run(stop))
        await client.post("/v1/trades", json=trade_body("L-1"), headers=a)
        await client.put("/v1/trades/L-1", json=trade_body("L-1", price="7"),
                         headers={**a, "If-Match": '"1"'})
        await wait_for(lambda: holds(2))
        stop.set()
        await asyncio.wait_for(task, 10)
        # Written while nobody listens; a new consumer resumes after its checkpoint.
        await client.post("/v1/trades", json=trade_body("L-2"), headers=a)
        stop = asyncio.Event()
        task = asyncio.create_task(consumer().run(stop))
        await wait_for(lambda: holds(3))
        stop.set()
        await asyncio.wait_for(task, 10)
        assert played == [("L-1", 1), ("L-1", 2), ("L-2", 1)]
        feed = await read_all(client, a)
        async with pool.acquire() as conn:
            checkpoint = await conn.fetchval("SELECT seq FROM kevin_feed_checkpoints")
        assert checkpoint == feed[-1]["seq"]
    finally:
        await pool.close()


async def test_a_bad_key_stops_the_consumer(client, banks, empty_db_url):
    from kevin.consumer import ConsumerError

    pool = await Consumer.create_pool(to_asyncpg_dsn(empty_db_url), min_size=1, max_size=2)
    try:
        bad = Consumer(url=str(client.make_url("")), api_key="wrong", pool=pool,
                       strategy="drop-older")
        with pytest.raises(ConsumerError, match="401"):
            await asyncio.wait_for(bad.run(), 10)
    finally:
        await pool.close()


@pytest.mark.slow
async def test_sigkilled_consumer_restarts_without_losing_or_doubling(
        client, banks, empty_db_url, tmp_path):
    a, _ = banks
    dsn = to_asyncpg_dsn(empty_db_url)
    check = await asyncpg.connect(dsn)
    await check.execute("CREATE TABLE effects (participant text, trade_id text, version int)")
    argv = [sys.executable, "-m", "kevin.cli", "consume", "--url", str(client.make_url("")),
            "--database-url", dsn, "--strategy", "contiguous",
            "--callback", "tests.consumer_hooks:record"]
    env = kevin_env(KEVIN_API_KEY=_key(a))

    def start() -> subprocess.Popen:
        with open(tmp_path / "consume.log", "ab") as log:
            return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=log)

    enough = asyncio.Event()
    written = [0]

    async def write() -> None:
        """Writes until told to stop: the kill below always lands mid-stream."""
        i = 0
        while not enough.is_set():
            resp = await client.post("/v1/trades", json=trade_body(f"K-{i}"), headers=a)
            assert resp.status == 201
            written[0] += 1
            if i % 2:
                resp = await client.put(f"/v1/trades/K-{i}", json=trade_body(f"K-{i}", price="9"),
                                        headers={**a, "If-Match": '"1"'})
                assert resp.status == 200
                written[0] += 1
            i += 1

    async def effects(n: int) -> bool:
        return await check.fetchval("SELECT count(*) FROM effects") >= n

    process = start()
    try:
        writing = asyncio.create_task(write())
        await wait_for(lambda: effects(40), timeout=60)
        process.send_signal(signal.SIGKILL)  # mid-run: updates keep coming
        process.wait(10)
        killed_at = written[0]
        process = start()
        await wait_for(lambda: _written(written, killed_at + 60), timeout=60)
        enough.set()
        await asyncio.wait_for(writing, 30)
        feed = await wait_for(lambda: _at_least(client, a, written[0]))
        assert len(feed) == written[0]
        await wait_for(lambda: effects(len(feed)), timeout=60)
        rows = await check.fetch("SELECT trade_id, version, count(*) AS n FROM effects "
                                 "GROUP BY trade_id, version")
        assert all(r["n"] == 1 for r in rows)  # nothing doubled
        assert {(r["trade_id"], r["version"]) for r in rows} == {
            (u["trade_id"], u["version"]) for u in feed}  # nothing lost
        assert await check.fetchval("SELECT seq FROM kevin_feed_checkpoints") == feed[-1]["seq"]
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        await check.close()


async def _written(written, n):
    return written[0] >= n


async def test_the_consumer_keeps_numbers_in_attributes_as_written(client, banks, empty_db_url):
    """1e131072 overflows jsonb's numeric and 1e99 would come back in 100 digits: the
    consumer stores such attributes as their text, as Kevin does, and plays them out as
    sent."""
    a, _ = banks
    attributes = b'{"huge":1e131072,"tiny":1e-16384,"neg":-0,"plain":1.50}'
    raw = jsoncodec.dumps(trade_body("J-1")).replace(b'{"desk":"metals"}', attributes)
    resp = await client.post("/v1/trades", data=raw,
                             headers={**a, "Content-Type": "application/json"})
    assert resp.status == 201, await resp.text()
    pool = await Consumer.create_pool(to_asyncpg_dsn(empty_db_url), min_size=1, max_size=2)
    played: list[dict] = []

    async def callback(conn, update):
        played.append(update.trade["attributes"])

    try:
        consumer = Consumer(url=str(client.make_url("")), api_key=_key(a), pool=pool,
                            strategy="contiguous", callback=callback)
        await consumer.setup()
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))

        async def stored() -> bool:
            return await pool.fetchval("SELECT count(*) FROM kevin_trade_versions") == 1

        await wait_for(stored)
        stop.set()
        await asyncio.wait_for(task, 10)
        assert [jsoncodec.dumps(p) for p in played] == [attributes]
    finally:
        await pool.close()


@pytest.mark.slow
async def test_kevin_consume_hands_each_kind_of_event_to_its_own_hook(
        client, banks, empty_db_url, tmp_path):
    """`kevin consume` as BANKB with --callback, --on-proposal and --on-overdue: every
    update on its feed reaches the hook for its kind, once, by the time the checkpoint is
    at the feed's end."""
    a, b = banks
    resp = await client.put("/v1/profiles/a-b-xau", json=PROFILE, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    # BANKA's XAU trade of a date long past: overdue at once, alleged against BANKB.
    resp = await client.post("/v1/trades", json=ours("A-OLD", "2026-01-05"), headers=a)
    assert resp.status == 201, await resp.text()
    # XAG has no cut-off: a mismatch, BANKA's proposal on it and BANKB's answer.
    for headers, body in ((a, trade_body("A-1", product="XAG")),
                          (b, trade_body("B-1", product="XAG", counterparty="BANKA",
                                         side="buy", price="1003.00"))):
        resp = await client.post("/v1/trades", json=body, headers=headers)
        assert resp.status == 201, await resp.text()
    resp = await client.post("/v1/proposals", headers=a, json={
        "trade_id": "A-1", "kind": "match", "counterparty_trade_id": "B-1"})
    assert resp.status == 201, await resp.text()
    proposal_id = (await resp.json())["proposal_id"]
    resp = await client.post(f"/v1/proposals/{proposal_id}/reject", headers=b)
    assert resp.status == 200, await resp.text()

    async def whole_feed() -> list[dict] | None:
        updates = await read_all(client, b)
        kinds = [u["event"] for u in updates]
        return updates if kinds.count("overdue") == 1 and kinds.count("proposal") == 2 \
            else None

    feed = await wait_for(whole_feed, timeout=30)
    trades = {(u["participant"], u["trade_id"], u["version"]) for u in feed
              if u["event"] not in ("proposal", "overdue")}
    assert {t[1] for t in trades} == {"B-1"}
    dsn = to_asyncpg_dsn(empty_db_url)
    check = await asyncpg.connect(dsn)
    await check.execute(
        "CREATE TABLE effects (participant text, trade_id text, version int);"
        "CREATE TABLE proposal_effects (participant text, proposal_id text, version int,"
        " state text);"
        "CREATE TABLE overdue_effects (participant text, notice_id bigint, trade_id text)")
    argv = [sys.executable, "-m", "kevin.cli", "consume", "--url", str(client.make_url("")),
            "--database-url", dsn, "--strategy", "contiguous",
            "--callback", "tests.consumer_hooks:record",
            "--on-proposal", "tests.consumer_hooks:record_proposal",
            "--on-overdue", "tests.consumer_hooks:record_overdue"]

    def start() -> subprocess.Popen:
        with open(tmp_path / "consume.log", "wb") as log:
            return subprocess.Popen(argv, env=kevin_env(KEVIN_API_KEY=_key(b)),
                                    stdout=subprocess.DEVNULL, stderr=log)

    process = start()

    async def caught_up() -> bool:
        try:
            return await check.fetchval("SELECT seq FROM kevin_feed_checkpoints") == \
                feed[-1]["seq"]
        except asyncpg.UndefinedTableError:  # before the consumer creates its tables
            return False

    try:
        await wait_for(caught_up, timeout=60)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 15) == 0
        effects = await check.fetch("SELECT participant, trade_id, version FROM effects")
        assert sorted(map(tuple, effects)) == sorted(trades)
        proposals = await check.fetch(
            "SELECT participant, proposal_id, version, state FROM proposal_effects")
        assert sorted(map(tuple, proposals)) == [
            ("BANKB", proposal_id, 1, "open"), ("BANKB", proposal_id, 2, "rejected")]
        (overdue,) = [u for u in feed if u["event"] == "overdue"]
        notices = await check.fetch(
            "SELECT participant, notice_id, trade_id FROM overdue_effects")
        assert list(map(tuple, notices)) == [("BANKB", overdue["notice_id"], "A-OLD")]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        await check.close()
