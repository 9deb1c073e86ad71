"""A database outage under load, on a PostgreSQL this test owns (an embedded server in a
temporary directory — never the machine's shared one): while it is down, every request
that needs it answers 503 quickly (no hang, no 500, no crash) and /readyz says not ready;
when it comes back, the service recovers by itself and nothing acknowledged is lost."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import aiohttp
import asyncpg
import psutil
import pytest

from kevin.check import check
from kevin.dburl import to_asyncpg_dsn
from kevin.store.database import COMMAND_TIMEOUT
from kevin.store.embedded import EmbeddedPostgres
from tests.conftest import trade_body, wait_for
from tests.processes import Server, request

pytestmark = pytest.mark.slow

ADMIN = {"Authorization": "Bearer outage-admin"}
WORKERS = 8
QUICK = 2.0  # seconds: "503 quickly" — far below any client's timeout


@dataclass
class Outcome:
    started: float
    seconds: float
    status: int  # 0: the connection itself failed
    error: str | None
    trade_id: str


@dataclass
class Load:
    """Workers submitting trades as fast as the service answers, recording every answer."""

    url: str
    auth: dict[str, str]
    outcomes: list[Outcome] = field(default_factory=list)
    running: bool = True
    sent: int = 0

    async def worker(self, n: int) -> None:
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while self.running:
                self.sent += 1
                trade_id = f"W{n}-{self.sent}"
                started = time.monotonic()
                status, error = 0, None
                try:
                    async with session.post(f"{self.url}/v1/trades", headers=self.auth,
                                            json=trade_body(trade_id)) as resp:
                        status = resp.status
                        body = await resp.json(content_type=None)
                        error = body.get("error") if status >= 400 else None
                except aiohttp.ClientError as e:
                    error = type(e).__name__
                self.outcomes.append(Outcome(started, time.monotonic() - started, status,
                                             error, trade_id))
                if status == 503:
                    await asyncio.sleep(0.02)  # a polite client backs off a little

    def since(self, instant: float) -> list[Outcome]:
        return [o for o in self.outcomes if o.started >= instant]

    async def count_since(self, instant: float, n: int, statuses: set[int]) -> bool:
        return sum(o.status in statuses for o in self.since(instant)) >= n


class OwnPostgres:
    """An embedded PostgreSQL in a data directory of the test's own, stoppable and
    restartable on the same socket."""

    def __init__(self, data_dir) -> None:
        self.embedded = EmbeddedPostgres(data_dir / "pg")
        self.url = ""

    async def start(self) -> str:
        server_url = await asyncio.to_thread(self.embedded.start)
        self.url = await self.embedded.ensure_database(server_url)
        return self.url

    def _pg_ctl(self, *args: str) -> None:
        self.embedded.pg_ctl(*args)

    def kill(self) -> None:
        """Immediate shutdown: backends die mid-statement, like a crash."""
        self._pg_ctl("-w", "-m", "immediate", "stop")

    def restart(self) -> None:
        socket_dir = parse_qs(urlsplit(self.url).query)["host"][0]
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {socket_dir}",
                     "-l", str(self.embedded.pgdata / "log"), "start")

    def stop(self) -> None:
        self.embedded.stop()


async def _status(url: str) -> int:
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s, \
                s.get(url) as resp:
            await resp.read()
            return resp.status
    except aiohttp.ClientError:
        return 0


@pytest.fixture
async def own(data_dir, tmp_path) -> AsyncIterator[tuple[OwnPostgres, Server, Load]]:
    """kevin serve on a PostgreSQL of our own, with the load running against it."""
    pg = OwnPostgres(data_dir)
    url = await pg.start()
    server = Server(tmp_path / "serve.log", KEVIN_DATABASE_URL=url,
                    KEVIN_ADMIN_TOKEN="outage-admin").start()
    workers: list[asyncio.Task] = []
    load = Load(server.url, {})
    try:
        await server.wait_ready()
        status, body = await request("POST", f"{server.url}/v1/participants",
                                     json={"name": "BANKA"}, headers=ADMIN)
        assert status == 201
        load.auth = {"Authorization": f"Bearer {body['api_key']}"}
        workers = [asyncio.create_task(load.worker(n)) for n in range(WORKERS)]
        await wait_for(lambda: load.count_since(0, 50, {201}))
        yield pg, server, load
        load.running = False
        await asyncio.gather(*workers)
    finally:
        load.running = False
        for task in workers:
            task.cancel()
        await server.stop(signal.SIGKILL)
        await asyncio.to_thread(pg.stop)


async def _nothing_lost(url: str, load: Load) -> None:
    """Every acknowledged submission is stored, and the invariants hold."""
    acknowledged = {o.trade_id for o in load.outcomes if o.status == 201}
    conn = await asyncpg.connect(to_asyncpg_dsn(url))
    try:
        stored = {r["trade_id"] for r in await conn.fetch("SELECT trade_id FROM trades")}
    finally:
        await conn.close()
    assert acknowledged <= stored
    report = await check(url)
    assert report.ok, report.text()


async def _recovers(server: Server, load: Load) -> float:
    """Seconds from now until the first 201, once 20 have come back."""
    back = time.monotonic()
    await wait_for(lambda: load.count_since(back, 20, {201}), timeout=30)
    assert await _status(f"{server.url}/readyz") == 200
    return min(o.started + o.seconds for o in load.since(back) if o.status == 201) - back


async def test_a_stopped_database_means_quick_503s_and_the_service_recovers(own):
    pg, server, load = own
    await asyncio.to_thread(pg.kill)
    down = time.monotonic()
    await wait_for(lambda: load.count_since(down, 100, {503}), timeout=20)
    assert await _status(f"{server.url}/readyz") == 503
    assert await _status(f"{server.url}/healthz") == 200
    assert await _status(f"{server.url}/metrics") == 200
    during = load.since(down)
    assert {o.status for o in during} == {503}, {(o.status, o.error) for o in during}
    assert {o.error for o in during} == {"database_unavailable"}
    slowest = max(o.seconds for o in during)
    assert slowest < QUICK, slowest
    assert server.process.poll() is None, "the service must survive the outage"

    await asyncio.to_thread(pg.restart)
    recovered = await _recovers(server, load)
    load.running = False
    # Nothing but 201 and 503 at any time: no 500, no broken connection.
    assert {o.status for o in load.outcomes} <= {201, 503}
    await _nothing_lost(pg.url, load)
    print(f"\nstopped database: {len(load.outcomes)} requests, {len(during)} answered 503 "
          f"while down (slowest {slowest * 1000:.0f} ms), first 201 {recovered:.2f} s after "
          f"PostgreSQL was back")
    assert await server.stop(signal.SIGTERM) == 0


async def test_a_frozen_database_means_503_within_the_statement_timeout(own):
    """SIGSTOP on every PostgreSQL process: connections stay open but nothing answers, as
    in a network partition. Requests must not hang for longer than the statement timeout."""
    pg, server, load = own
    postmaster = psutil.Process(pg.embedded._server.get_pid())
    frozen = [postmaster, *postmaster.children()]
    for process in frozen:
        process.send_signal(signal.SIGSTOP)
    down = time.monotonic()
    try:
        await wait_for(lambda: load.count_since(down, 2 * WORKERS, {503}), timeout=30)
        assert await _status(f"{server.url}/readyz") == 503
    finally:
        for process in frozen:
            process.send_signal(signal.SIGCONT)
    during = load.since(down)
    slowest = max(o.seconds for o in during)
    assert slowest < COMMAND_TIMEOUT + 1.5, slowest
    recovered = await _recovers(server, load)
    load.running = False
    assert {o.status for o in load.outcomes} <= {201, 503}
    await _nothing_lost(pg.url, load)
    print(f"\nfrozen database: {sum(o.status == 503 for o in during)} answered 503 while "
          f"frozen (slowest {slowest:.2f} s), first 201 {recovered:.2f} s after it thawed")


async def test_a_statement_given_up_on_stops_in_the_database_too(db_url, conn):
    """Kevin terminates a connection whose statement timed out; the backend must notice
    and stop, not run on with its locks (a sequencer round once ran 46 s that way,
    holding the sequencer's lead). Runs on the shared server: nothing is stopped."""
    from kevin.domain.errors import DatabaseUnavailable
    from kevin.store import database

    pool = await database.create_pool(db_url, min_size=1, max_size=1)
    try:
        with pytest.raises(DatabaseUnavailable):
            async with database.connection(pool) as pooled:
                await pooled.fetchval("SELECT pg_sleep(60), 'given up on'", timeout=0.5)
    finally:
        await pool.close()

    async def stopped() -> bool:
        return not await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%''given up on''%' "
            "AND pid <> pg_backend_pid()")

    await wait_for(stopped, timeout=10)
