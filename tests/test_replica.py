"""Reads on a replica (kevin.store.replica) against a real streaming standby: a primary and
a hot standby of this module's own, made with initdb, pg_basebackup -R and pg_ctl from the
PostgreSQL server binaries on the machine, on free ports under a temporary directory.

Missing binaries fail these tests (they never skip): CI must prove the replica path."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from kevin.api.app import create_app
from kevin.dburl import to_asyncpg_dsn
from kevin.engine.service import TradeService
from kevin.feed.runtime import FeedOptions
from kevin.store import database
from kevin.store.replica import Reads
from tests.conftest import ADMIN, ADMIN_TOKEN, Api, trade_body, wait_for
from tests.feed_helpers import sse_events

pytestmark = pytest.mark.slow

SERVER_PROGRAMS = ("initdb", "pg_ctl", "pg_basebackup", "postgres")


def _server_bin() -> Path:
    """The directory of the PostgreSQL server programs: KEVIN_TEST_PG_BIN, pg_config's
    bindir, or the newest /usr/lib/postgresql/*/bin."""
    candidates = [os.environ.get("KEVIN_TEST_PG_BIN")]
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        candidates.append(subprocess.run(["pg_config", "--bindir"], capture_output=True,
                                         text=True, check=True).stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for candidate in filter(None, candidates):
        if all((Path(candidate) / p).exists() for p in SERVER_PROGRAMS):
            return Path(candidate)
    pytest.fail("the replica tests need the PostgreSQL server programs "
                f"({', '.join(SERVER_PROGRAMS)}): install them or set KEVIN_TEST_PG_BIN")


def _server_user() -> str | None:
    """initdb refuses root: then the servers run as the system's postgres user."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres").pw_name
    except KeyError:
        pytest.fail("running as root, the replica tests need a 'postgres' system user")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    bin: Path
    pgdata: Path
    port: int
    user: str | None

    def run(self, program: str, *args: str) -> None:
        # No pipes: the server pg_ctl starts would inherit them, and a read to their
        # end would wait for the server to exit. Its output goes to its log file.
        subprocess.run([str(self.bin / program), *args], user=self.user, check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=120)

    def start(self) -> None:
        self.run("pg_ctl", "-D", str(self.pgdata), "-w", "-t", "60",
                 "-l", str(self.pgdata.parent / f"{self.pgdata.name}.log"),
                 "-o", f"-p {self.port} -c listen_addresses=127.0.0.1 "
                       f"-c unix_socket_directories={self.pgdata.parent}", "start")

    def stop(self, mode: str = "fast") -> None:
        self.run("pg_ctl", "-D", str(self.pgdata), "-w", "-m", mode, "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"


@dataclass
class Pair:
    primary: Server
    standby: Server


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    """A primary with Kevin's schema in database ``kevin``, and its hot standby."""
    bin_dir, user = _server_bin(), _server_user()
    root = Path(tempfile.mkdtemp(prefix="kevin-replica-"))
    if user is not None:
        shutil.chown(root, user)
    primary = Server(bin_dir, root / "primary", _free_port(), user)
    standby = Server(bin_dir, root / "standby", _free_port(), user)
    try:
        primary.run("initdb", "-D", str(primary.pgdata), "-U", "postgres", "-A", "trust",
                    "--no-sync")
        with open(primary.pgdata / "postgresql.conf", "a") as conf:
            conf.write("fsync = off\nmax_wal_senders = 4\nwal_level = replica\n")
        primary.start()
        asyncio.run(_create_kevin_database(primary))
        standby.run("pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port),
                    "-U", "postgres", "-D", str(standby.pgdata), "-R", "-X", "stream",
                    "--checkpoint=fast", "--no-sync")  # spread: minutes of waiting
        with open(standby.pgdata / "postgresql.conf", "a") as conf:
            conf.write("hot_standby = on\nhot_standby_feedback = on\n")
        standby.start()
        yield Pair(primary, standby)
    finally:
        for server in (standby, primary):
            with contextlib.suppress(subprocess.CalledProcessError):
                server.stop("immediate")
        shutil.rmtree(root)


async def _create_kevin_database(primary: Server) -> None:
    conn = await asyncpg.connect(to_asyncpg_dsn(primary.url()))
    try:
        await conn.execute("CREATE DATABASE kevin")
    finally:
        await conn.close()
    await database.migrate(primary.url("kevin"))


@dataclass
class Setup:
    client: Any
    reads: Reads
    pair: Pair
    api: Api

    async def caught_up(self) -> None:
        """Wait until the standby has replayed everything the primary has written."""
        async def replayed() -> bool:
            p = await asyncpg.connect(to_asyncpg_dsn(self.pair.primary.url("kevin")))
            s = await asyncpg.connect(to_asyncpg_dsn(self.pair.standby.url("kevin")))
            try:
                written = await p.fetchval("SELECT pg_current_wal_lsn()")
                return bool(await s.fetchval(
                    "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", written))
            finally:
                await p.close()
                await s.close()
        await wait_for(replayed, timeout=30)
        await wait_for(self._usable, timeout=30)

    async def _usable(self) -> bool:
        return await self.reads.settled_at() is not None


@pytest.fixture
async def setup(pair: Pair, aiohttp_client: Any) -> AsyncIterator[Setup]:
    primary = await database.create_pool(pair.primary.url("kevin"), min_size=1, max_size=20)
    replica = await database.create_pool(pair.standby.url("kevin"), min_size=0, max_size=20)
    reads = Reads(primary, replica, max_lag=60, probe_interval=0.05, retry_after=0.2)
    client = await aiohttp_client(create_app(
        TradeService(primary, reads), ADMIN_TOKEN,
        FeedOptions(watch_poll=0.05, sequencer_poll=0.02)))
    try:
        yield Setup(client, reads, pair, Api(client))
    finally:
        await client.close()  # the app's background tasks end before their pools
        await replica.close()
        await primary.close()


async def _participants(s: Setup, tag: str) -> tuple[dict[str, str], dict[str, str], str, str]:
    sell_name, buy_name = f"S{tag}", f"B{tag}"
    return (await s.api.participant(sell_name), await s.api.participant(buy_name),
            sell_name, buy_name)


async def _post(s: Setup, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    resp = await s.client.post("/v1/trades", json=body, headers=headers)
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def _get(s: Setup, path: str, headers: dict[str, str], **kw: Any) -> Any:
    resp = await s.client.get(path, headers=headers, **kw)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_reads_are_served_by_the_standby_once_replayed(setup: Setup):
    s = setup
    seller, buyer, sell_name, buy_name = await _participants(s, "READ")
    sold = await _post(s, seller, trade_body("R-1", counterparty=buy_name))
    await _post(s, buyer, trade_body("R-1B", counterparty=sell_name, side="buy"))
    await s.caught_up()
    s.reads.counts.__init__()  # type: ignore[misc]
    trade = await _get(s, "/v1/trades/R-1", seller)
    versions = await _get(s, "/v1/trades/R-1/versions", seller)
    listed = await _get(s, "/v1/trades", seller)
    as_of = await _get(s, "/v1/trades/R-1", seller, params={"as_of": sold["recorded_at"]})
    report = await _get(s, "/v1/reports/stp", ADMIN,
                        params={"from": "2026-11-01", "to": "2026-11-30"})
    feed = await _get(s, "/v1/feed", seller)
    assert (trade["version"], trade["status"]) == (2, "matched")  # the match replayed too
    assert [v["version"] for v in versions["versions"]] == [1, 2]
    assert [t["trade_id"] for t in listed["trades"]] == ["R-1"]
    assert as_of["version"] == 1
    assert report["trades"] >= 2
    assert [u["trade"]["version"] for u in feed["updates"]
            if u.get("trade", {}).get("trade_id") == "R-1"] == [1, 2]
    # Every read above on the standby (some requests read more than once), none on the primary.
    assert s.reads.counts.primary == 0 and s.reads.counts.replica >= 6, s.reads.counts


async def test_feed_from_the_standby_delivers_every_update_once_in_seq_order(setup: Setup):
    """Writers race on the primary while a reader pages the feed through the standby."""
    s = setup
    seller, buyer, sell_name, buy_name = await _participants(s, "FEED")
    start = (await _get(s, "/v1/feed", ADMIN, params={"after": 0, "limit": 1000}))["last_seq"]
    pairs = 60

    async def writer(first: int) -> None:
        for i in range(first, pairs, 4):
            await _post(s, seller, trade_body(f"F-{i}", counterparty=buy_name,
                                              quantity=str(100 + i)))
            await _post(s, buyer, trade_body(f"G-{i}", counterparty=sell_name, side="buy",
                                             quantity=str(100 + i)))

    seen: list[int] = []
    writers_done = asyncio.Event()

    async def reader() -> None:
        after = start
        while True:
            body = await _get(s, "/v1/feed", ADMIN, params={"after": after, "limit": 7})
            seen.extend(u["seq"] for u in body["updates"])
            after = body["last_seq"]
            if writers_done.is_set() and not body["updates"] and len(seen) >= 4 * pairs:
                return

    stream = await s.client.get("/v1/feed", params={"after": start},
                                headers={**ADMIN, "Accept": "text/event-stream"})
    assert stream.status == 200
    streamed = asyncio.create_task(sse_events(stream, 4 * pairs))
    reading = asyncio.create_task(reader())
    await asyncio.gather(*(writer(k) for k in range(4)))
    writers_done.set()
    await asyncio.wait_for(reading, 60)
    sse_seqs = [int(event_id) for event_id, _, _ in await asyncio.wait_for(streamed, 60)
                if event_id is not None]
    stream.close()
    conn = await asyncpg.connect(to_asyncpg_dsn(s.pair.primary.url("kevin")))
    try:
        on_primary = [r["seq"] for r in await conn.fetch(
            "SELECT seq FROM feed WHERE seq > $1 ORDER BY seq", start)]
    finally:
        await conn.close()
    assert len(on_primary) == 4 * pairs  # two submitted and two matched versions a pair
    assert seen == on_primary  # every update once, in seq order: JSON pages
    assert sse_seqs == on_primary  # ... and the SSE stream
    assert s.reads.counts.replica > 0  # the standby did serve pages


async def test_a_stopped_standby_costs_reads_a_fallback_to_the_primary(setup: Setup):
    s = setup
    seller, _, _, buy_name = await _participants(s, "STOP")
    await _post(s, seller, trade_body("S-1", counterparty=buy_name))
    await s.caught_up()
    s.pair.standby.stop()
    try:
        s.reads.counts.__init__()  # type: ignore[misc]
        await _post(s, seller, trade_body("S-2", counterparty=buy_name))
        assert (await _get(s, "/v1/trades/S-2", seller))["version"] == 1
        assert len((await _get(s, "/v1/trades", seller))["trades"]) == 2
        assert (await _get(s, "/v1/trades/S-1/versions", seller))["versions"]
        await _get(s, "/v1/reports/stp", ADMIN, params={"from": "2026-11-01",
                                                       "to": "2026-11-30"})
        feed = await _get(s, "/v1/feed", seller)
        assert {"S-1", "S-2"} <= {u["trade"]["trade_id"] for u in feed["updates"]}
        assert s.reads.counts.replica == 0 and s.reads.counts.primary >= 5
    finally:
        s.pair.standby.start()
    await s.caught_up()  # and back on the standby once it runs again
    s.reads.counts.__init__()  # type: ignore[misc]
    await _get(s, "/v1/trades/S-2", seller)
    assert s.reads.counts.replica >= 1 and s.reads.counts.primary == 0


async def test_a_paused_standby_never_answers_stale_a_read_of_the_callers_write(
        setup: Setup):
    s = setup
    seller, _, _, buy_name = await _participants(s, "LAG")
    await s.caught_up()
    standby = await asyncpg.connect(to_asyncpg_dsn(s.pair.standby.url("kevin")))
    try:
        await standby.execute("SELECT pg_wal_replay_pause()")
        created = await _post(s, seller, trade_body("L-1", counterparty=buy_name))
        # Not on the standby yet: read again on the primary.
        assert (await _get(s, "/v1/trades/L-1", seller))["version"] == 1
        assert s.reads.counts.fallbacks >= 1
        resp = await s.client.put("/v1/trades/L-1", headers={**seller, "If-Match": '"1"'},
                                  json={k: v for k, v in trade_body(
                                      "L-1", counterparty=buy_name, quantity="7").items()})
        assert resp.status == 200, await resp.text()
        etag = resp.headers["ETag"]
        assert etag == '"2"' and created["version"] == 1
        # The caller names the version it has seen: never an older answer.
        fallbacks = s.reads.counts.fallbacks
        got = await _get(s, "/v1/trades/L-1", {**seller, "If-None-Match": etag})
        assert (got["version"], got["quantity"]) == (2, "7")
        history = await _get(s, "/v1/trades/L-1/versions", {**seller, "If-None-Match": etag})
        assert [v["version"] for v in history["versions"]] == [1, 2]
        assert s.reads.counts.fallbacks == fallbacks + 2
        # The feed past what the standby has: read on the primary, nothing skipped.
        feed = await _get(s, "/v1/feed", seller, params={"wait": 1})
        assert [u["trade"]["version"] for u in feed["updates"]] == [1, 2]
        # Beyond the lag bound, every read goes to the primary.
        s.reads.max_lag = 0.2
        await wait_for(lambda: _on_primary(s))
        assert (await _get(s, "/v1/trades/L-1", seller))["version"] == 2
    finally:
        await standby.execute("SELECT pg_wal_replay_resume()")
        await standby.close()


async def _on_primary(s: Setup) -> bool:
    return await s.reads.settled_at() is None
