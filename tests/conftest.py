"""Tests run on a real PostgreSQL: KEVIN_TEST_DATABASE_URL (a server URL; its database is
used only to create others), else an embedded server started for the session.

The schema is migrated once into a template database; every test gets its own clone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from kevin.api.app import create_app
from kevin.dburl import to_asyncpg_dsn, with_database
from kevin.engine.service import TradeService
from kevin.store import database
from kevin.store.embedded import EmbeddedPostgres, PidFile
from kevin.store.invariants import find_violations

ADMIN_TOKEN = "test-admin-token"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that reaches PostgreSQL is out of the quick loop (`-m "not slow"`)."""
    for item in items:
        if "server_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


# Every directory a test made for an embedded PostgreSQL: none may outlive the session.
_DATA_DIRS: list[Path] = []


def make_data_dir() -> Path:
    """A KEVIN_DATA_DIR for an embedded PostgreSQL: kevin-test-* in the system temp
    directory, for remove_data_dir to delete. Not under tmp_path: PostgreSQL runs as
    another user (embedded_postgres, when we are root) and must traverse the path, but
    every pytest session resets /tmp/pytest-of-<user> to 0700 — a concurrent session
    would lock our server out of its own data directory."""
    path = Path(tempfile.mkdtemp(prefix="kevin-test-"))
    _DATA_DIRS.append(path)
    return path


def remove_data_dir(path: Path) -> None:
    """Stop the PostgreSQL still running in ``path``, if any (a test that killed its
    `kevin serve` leaves one), then delete the directory."""
    for pid_file in path.rglob("postmaster.pid"):  # also a server in a subdirectory
        embedded = EmbeddedPostgres(pid_file.parent.parent)
        if PidFile.read(embedded.pgdata) is not None:
            with contextlib.suppress(subprocess.CalledProcessError):  # not running
                embedded.pg_ctl("-w", "-m", "immediate", "stop")
    shutil.rmtree(path)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A KEVIN_DATA_DIR of this test's own (make_data_dir), removed afterwards."""
    path = make_data_dir()
    try:
        yield path
    finally:
        remove_data_dir(path)


@pytest.fixture(scope="session", autouse=True)
def no_data_dir_left_behind() -> Iterator[None]:
    """Set up first, so checked last: each test run used to leave ~87 MB behind."""
    yield
    left = [str(path) for path in _DATA_DIRS if path.exists()]
    assert not left, f"data directories left behind: {left}"


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    configured = os.environ.get("KEVIN_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    path = make_data_dir()
    embedded = EmbeddedPostgres(path)
    try:
        yield embedded.start()
    finally:
        embedded.stop()
        remove_data_dir(path)


async def _admin_execute(server_url: str, *statements: str) -> None:
    conn = await asyncpg.connect(to_asyncpg_dsn(server_url))
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def _scratch_database(server_url: str, name: str,
                            template: str | None = None) -> AsyncIterator[str]:
    """A database created for the block and dropped after it, even with sessions open."""
    clause = f' TEMPLATE "{template}"' if template else ""
    await _admin_execute(server_url, f'CREATE DATABASE "{name}"{clause}')
    try:
        yield name
    finally:
        await _admin_execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
async def template_database(server_url: str) -> AsyncIterator[str]:
    async with _scratch_database(
            server_url, f"kevin_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}") as name:
        await database.migrate(with_database(server_url, name))
        yield name


@pytest.fixture
async def db_url(request: pytest.FixtureRequest, server_url: str,
                 template_database: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this test alone. When the test is done, `kevin
    check`'s invariants must hold on it (unless the test breaks them on purpose: marker
    ``breaks_invariants``), so every test that writes through Kevin checks them too."""
    async with _scratch_database(server_url, f"kevin_t_{uuid.uuid4().hex[:12]}",
                                 template_database) as name:
        url = with_database(server_url, name)
        yield url
        if request.node.get_closest_marker("breaks_invariants") is None:
            conn = await asyncpg.connect(to_asyncpg_dsn(url))
            try:
                violations = await find_violations(conn)
            finally:
                await conn.close()
            assert violations == [], f"kevin check fails after the test: {violations[:5]}"


@pytest.fixture
async def empty_db_url(server_url: str) -> AsyncIterator[str]:
    """A database with no schema at all (migration tests)."""
    async with _scratch_database(server_url, f"kevin_e_{uuid.uuid4().hex[:12]}") as name:
        yield with_database(server_url, name)


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await database.create_pool(db_url, min_size=1, max_size=20)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A raw connection to the test database, for checking what was written."""
    c = await asyncpg.connect(to_asyncpg_dsn(db_url))
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
def service(pool: asyncpg.Pool) -> TradeService:
    return TradeService(pool)


@pytest.fixture
async def client(service: TradeService, aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(create_app(service, ADMIN_TOKEN))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ADMIN = bearer(ADMIN_TOKEN)


class Api:
    """Thin helpers over the test client, so tests read as the HTTP conversation."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    async def participant(self, name: str) -> dict[str, str]:
        resp = await self.client.post("/v1/participants", json={"name": name}, headers=ADMIN)
        assert resp.status == 201, await resp.text()
        return bearer((await resp.json())["api_key"])


@pytest.fixture
def api(client: TestClient) -> Api:
    return Api(client)


@pytest.fixture
async def banks(api: Api) -> tuple[dict[str, str], dict[str, str]]:
    """Two participants, BANKA and BANKB; their auth headers."""
    return await api.participant("BANKA"), await api.participant("BANKB")


def trade_body(trade_id: str = "A-0001", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "trade_id": trade_id, "counterparty": "BANKB", "side": "sell", "product": "XAU",
        "quantity": "100", "price": "1000.25", "currency": "USD",
        "trade_date": "2026-11-20", "settlement_date": "2026-11-24",
        "location": "LDN", "attributes": {"desk": "metals"},
    }
    body.update(overrides)
    return body


def as_read(version: dict[str, Any], cutoff_at: str | None = None,
            overdue: bool = False) -> dict[str, Any]:
    """A stored version (a write's answer, a feed update) as a read returns it: with the
    cut-off and overdue computed at read time (none configured: null and false)."""
    return {**version, "cutoff_at": cutoff_at, "overdue": overdue}


async def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll an async predicate until it returns something truthy, or fail after timeout."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
