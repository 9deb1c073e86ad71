"""`kevin serve` with no KEVIN_DATABASE_URL: an embedded PostgreSQL, kept across restarts,
stopped on a clean shutdown and adopted after a crash; shared with the commands run next
to it, which leave it running; started again when it dies under serve. Also: the JSON
request log, and `kevin db-url`."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time

import asyncpg
import psutil
import pytest

from kevin.api.app import create_app
from kevin.dburl import to_asyncpg_dsn
from kevin.lifecycle import Health
from kevin.store.embedded import EmbeddedPostgres
from tests.conftest import ADMIN_TOKEN, make_data_dir, remove_data_dir, trade_body, wait_for
from tests.processes import Server, request, run_cli

pytestmark = pytest.mark.slow

ADMIN = {"Authorization": "Bearer embedded-admin"}


def _settings(data_dir) -> dict[str, str | None]:
    return {"KEVIN_DATABASE_URL": None, "KEVIN_DATA_DIR": str(data_dir),
            "KEVIN_ADMIN_TOKEN": "embedded-admin"}


def _postgres_running(data_dir) -> bool:
    return EmbeddedPostgres(data_dir).running_pid() is not None


async def _cli(*args: str, **settings: str | None) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(run_cli, *args, **settings)


async def _serving(server: Server) -> str:
    """A participant created through the server: it serves, on its database."""
    status, created = await request("POST", f"{server.url}/v1/participants",
                                    json={"name": f"P{time.monotonic_ns() % 10**9}"},
                                    headers=ADMIN)
    assert status == 201, created
    return created["api_key"]


async def test_embedded_database_lifecycle(tmp_path, data_dir):
    settings = _settings(data_dir)
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

    # A crash (SIGKILL) leaves PostgreSQL running; the next start adopts it, data intact,
    # and owns it: its clean shutdown stops it.
    server = Server(tmp_path / "serve2.log", **settings).start()
    await server.wait_ready()
    assert await server.stop(signal.SIGKILL) == -signal.SIGKILL
    orphan = EmbeddedPostgres(data_dir).running_pid()
    assert orphan is not None, "a killed serve leaves its PostgreSQL running"
    server = Server(tmp_path / "serve3.log", **settings).start()
    try:
        await server.wait_ready()
        assert EmbeddedPostgres(data_dir).running_pid() == orphan, "adopted, not replaced"
        status, trade = await request("GET", f"{server.url}/v1/trades/A-0001", headers=auth)
        assert status == 200 and trade["version"] == 1
    finally:
        assert await server.stop(signal.SIGTERM) == 0
    assert not _postgres_running(data_dir)


async def test_commands_use_a_live_servers_postgresql_and_leave_it_running(tmp_path, data_dir):
    settings = _settings(data_dir)
    server = Server(tmp_path / "serve.log", **settings).start()
    try:
        # Racing serve's start: whichever of the two starts PostgreSQL, the other uses it,
        # and the command leaving stops nothing serve still uses.
        racing = await _cli("participant", "add", "BANKR", **settings)
        assert racing.returncode == 0, racing.stderr
        await server.wait_ready()
        postmaster = EmbeddedPostgres(data_dir).running_pid()

        added = await _cli("participant", "add", "BANKC", **settings)
        assert added.returncode == 0, added.stderr
        assert added.stdout.strip().startswith("kv_")
        checked = await _cli("check", **settings)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert checked.stdout.startswith("ok")
        # Two commands at once, next to serve.
        both = await asyncio.gather(*(_cli("participant", "add", name, **settings)
                                      for name in ("BANKD", "BANKE")))
        assert [done.returncode for done in both] == [0, 0], [d.stderr for d in both]

        # Every command has exited: serve still serves, on the same PostgreSQL.
        assert server.process is not None and server.process.poll() is None
        status, _ = await request("GET", f"{server.url}/readyz")
        assert status == 200
        key = await _serving(server)
        status, _ = await request("POST", f"{server.url}/v1/trades", json=trade_body(),
                                  headers={"Authorization": f"Bearer {added.stdout.strip()}"})
        assert status == 201
        assert key and EmbeddedPostgres(data_dir).running_pid() == postmaster
    finally:
        assert await server.stop(signal.SIGTERM) == 0, server.log()[-2000:]
    assert not _postgres_running(data_dir), "serve, the last user, stops it"


async def test_commands_at_once_without_a_server_leave_nothing_running(data_dir):
    settings = _settings(data_dir)
    migrated = await _cli("migrate", **settings)
    assert migrated.returncode == 0, migrated.stderr
    assert not _postgres_running(data_dir), "a command alone stops what it started"
    done = await asyncio.gather(*(_cli("participant", "add", f"BANK{n}", **settings)
                                  for n in range(4)))
    assert [d.returncode for d in done] == [0] * 4, [d.stderr for d in done]
    assert not _postgres_running(data_dir), "the last command out stops it"
    checked = await _cli("check", **settings)
    assert checked.returncode == 0 and checked.stdout.startswith("ok"), checked.stderr


async def test_a_command_that_cannot_start_postgresql_says_why_in_one_line(data_dir):
    settings = _settings(data_dir)
    assert (await _cli("migrate", **settings)).returncode == 0
    conf = EmbeddedPostgres(data_dir).pgdata / "postgresql.conf"
    conf.write_text(conf.read_text() + "\nmax_connections = 'lots'\n")
    done = await _cli("participant", "add", "BANKX", **settings)
    assert done.returncode == 1 and done.stdout == ""
    last = done.stderr.strip().splitlines()[-1]
    assert last == (f"kevin: cannot start the embedded PostgreSQL in "
                    f"{EmbeddedPostgres(data_dir).pgdata}: configuration file \"{conf}\" "
                    "contains errors"), done.stderr
    assert "Traceback" not in done.stderr


async def test_serve_restarts_its_postgresql_when_it_is_killed(tmp_path, data_dir):
    server = Server(tmp_path / "serve.log", **_settings(data_dir)).start()
    try:
        await server.wait_ready()
        key = await _serving(server)
        auth = {"Authorization": f"Bearer {key}"}
        assert (await request("POST", f"{server.url}/v1/trades", json=trade_body(),
                              headers=auth))[0] == 201
        for round_ in range(2):  # killed again after its restart too
            killed = EmbeddedPostgres(data_dir).running_pid()
            assert killed is not None
            os.kill(killed, signal.SIGKILL)

            async def running_again(killed=killed):
                pid = EmbeddedPostgres(data_dir).running_pid()
                status, _ = await request("GET", f"{server.url}/readyz")
                return pid not in (None, killed) and status == 200

            await wait_for(running_again, timeout=40, interval=0.2)
            status, trade = await request("GET", f"{server.url}/v1/trades/A-0001",
                                          headers=auth)
            assert status == 200 and trade["version"] == 1, (round_, trade)
            status, _ = await request("GET", f"{server.url}/healthz")
            assert status == 200
        assert server.process is not None and server.process.poll() is None
    finally:
        assert await server.stop(signal.SIGTERM) == 0, server.log()[-3000:]
    assert not _postgres_running(data_dir)
    assert "the embedded PostgreSQL stopped; starting it again" in server.log()


async def test_serve_exits_non_zero_when_its_postgresql_cannot_be_restarted(tmp_path, data_dir):
    server = Server(tmp_path / "serve.log", **_settings(data_dir)).start()
    try:
        await server.wait_ready()
        pgdata = EmbeddedPostgres(data_dir).pgdata
        conf = pgdata / "postgresql.conf"
        conf.write_text(conf.read_text() + "\nmax_connections = 'lots'\n")  # start refuses it
        os.kill(EmbeddedPostgres(data_dir).running_pid(), signal.SIGKILL)
        # START_TIMEOUT (15 s) of attempts, then the shutdown: well within a minute.
        assert server.process is not None
        code = await asyncio.to_thread(server.process.wait, 60)
    finally:
        if server.process is not None and server.process.poll() is None:
            await server.stop(signal.SIGKILL)
    assert code == 1
    last = server.log().strip().splitlines()[-1]
    assert last.startswith("kevin: the embedded PostgreSQL in ") and "not restarted" in last
    assert "postgresql.conf" in last and "contains errors" in last, last
    assert not _postgres_running(data_dir)


async def test_sigterm_while_serve_restarts_its_postgresql_stops_it_in_time(tmp_path, data_dir):
    server = Server(tmp_path / "serve.log", **_settings(data_dir)).start()
    try:
        await server.wait_ready()
        conf = EmbeddedPostgres(data_dir).pgdata / "postgresql.conf"
        conf.write_text(conf.read_text() + "\nmax_connections = 'lots'\n")  # start refuses it
        os.kill(EmbeddedPostgres(data_dir).running_pid(), signal.SIGKILL)

        async def retrying() -> bool:
            return "the embedded PostgreSQL did not start; retrying" in server.log()

        await wait_for(retrying, timeout=20)
        started = time.monotonic()
        code = await server.stop(signal.SIGTERM, timeout=15)
        assert time.monotonic() - started < 10, "SIGTERM ends serve within 10 s"
    finally:
        if server.process is not None and server.process.poll() is None:
            await server.stop(signal.SIGKILL)
    assert code == 0, server.log()[-2000:]
    assert not _postgres_running(data_dir)


async def test_a_stale_postmaster_pid_does_not_lock_the_data_directory(tmp_path, data_dir):
    """After a crash of everything, postmaster.pid names a pid that the system has given
    to another process (here one of the server's own user, as after a reboot): serve
    starts all the same, on the data it had."""
    settings = _settings(data_dir)
    server = Server(tmp_path / "serve.log", **settings).start()
    await server.wait_ready()
    auth = {"Authorization": f"Bearer {await _serving(server)}"}
    pgdata = EmbeddedPostgres(data_dir).pgdata
    postmaster = psutil.Process(EmbeddedPostgres(data_dir).running_pid())
    user = {"user": postmaster.username()} if os.geteuid() == 0 else {}
    assert await server.stop(signal.SIGKILL) == -signal.SIGKILL
    postmaster.kill()
    await asyncio.to_thread(postmaster.wait, 10)
    await wait_for(_no_process_in(pgdata), timeout=20)

    squatter = await asyncio.create_subprocess_exec(shutil.which("sleep") or "sleep", "120",
                                                    **user)
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        (pgdata / "postmaster.pid").write_text("\n".join([str(squatter.pid), *lines[1:]]) + "\n")
        socket_lock = pgdata / ".s.PGSQL.5432.lock"
        if socket_lock.exists():
            lock_lines = socket_lock.read_text().splitlines()
            socket_lock.write_text("\n".join([str(squatter.pid), *lock_lines[1:]]) + "\n")
        server = Server(tmp_path / "serve2.log", **settings).start()
        try:
            await server.wait_ready()
            status, _ = await request("POST", f"{server.url}/v1/trades", json=trade_body(),
                                      headers=auth)
            assert status == 201, "the participant made before the crash is there"
            assert EmbeddedPostgres(data_dir).running_pid() not in (None, squatter.pid)
        finally:
            assert await server.stop(signal.SIGTERM) == 0, server.log()[-3000:]
        assert squatter.returncode is None, "the process that had the pid is left alone"
    finally:
        squatter.kill()
        await squatter.wait()
    assert not _postgres_running(data_dir)


def _no_process_in(pgdata):
    async def check() -> bool:
        return not any(p.info["cwd"] == str(pgdata) and p.info["status"] != psutil.STATUS_ZOMBIE
                       for p in psutil.process_iter(["cwd", "status"]))
    return check


async def test_db_url_prints_the_running_embedded_database(tmp_path, data_dir):
    settings = _settings(data_dir)
    stopped = await _cli("db-url", **settings)
    assert stopped.returncode == 1 and stopped.stdout == ""
    assert stopped.stderr.strip() == (
        f"kevin: no embedded PostgreSQL is running in {data_dir} "
        "(start `kevin serve`, or set KEVIN_DATABASE_URL)")

    server = Server(tmp_path / "serve.log", **settings).start()
    try:
        await server.wait_ready()
        await _serving(server)
        done = await _cli("db-url", **settings)
        assert done.returncode == 0, done.stderr
        url = done.stdout.strip()
        conn = await asyncpg.connect(to_asyncpg_dsn(url))
        try:
            assert await conn.fetchval("SELECT count(*) FROM participants") == 1
        finally:
            await conn.close()
        # The URL is what other tools take: a command on it as KEVIN_DATABASE_URL.
        checked = await _cli("check", KEVIN_DATABASE_URL=url)
        assert checked.returncode == 0 and checked.stdout.startswith("ok"), checked.stderr
    finally:
        assert await server.stop(signal.SIGTERM) == 0
    configured = await _cli("db-url", KEVIN_DATABASE_URL="postgresql://u@db.example:5433/k")
    assert configured.returncode == 0
    assert configured.stdout == "postgresql://u@db.example:5433/k\n"


def test_a_data_dir_is_removed_with_the_postgresql_left_in_it():
    """The tests' own clean-up: a killed serve leaves PostgreSQL running in its data
    directory; remove_data_dir stops it and deletes everything."""
    path = make_data_dir()
    embedded = EmbeddedPostgres(path)
    embedded.start()
    pid = embedded.running_pid()
    assert pid is not None
    remove_data_dir(path)
    assert not path.exists()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    embedded.stop()  # its lock was in the directory: nothing left to do


async def test_healthz_says_unhealthy_once_the_process_cannot_recover(service, aiohttp_client):
    """What serve's watchdog does when it gives up on its PostgreSQL (above), on the
    app itself: /healthz turns 503 while /readyz keeps its own meaning."""
    health = Health()
    client = await aiohttp_client(create_app(service, ADMIN_TOKEN, health=health))
    assert (await client.get("/healthz")).status == 200
    reason = "the embedded PostgreSQL in /data/pgdata stopped and was not restarted: gone"
    health.fail(reason)
    resp = await client.get("/healthz")
    assert resp.status == 503
    body = await resp.json()
    assert set(body) == {"error", "message", "details"}
    assert body["error"] == "unhealthy" and body["message"] == reason
    assert (await client.get("/readyz")).status == 200, "the database is reachable"
