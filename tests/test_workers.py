"""`kevin serve --workers N`: one port, N processes. Pairs racing across workers match
exactly once, /metrics counts every worker's requests, SIGTERM stops them all, and a
worker or supervisor that dies takes the rest down instead of leaving a half service."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kevin.store.embedded import EmbeddedPostgres
from tests.conftest import ADMIN_TOKEN, bearer, trade_body, wait_for
from tests.matching_checks import check_matching_invariants
from tests.processes import Server, run_cli
from tests.test_serve_embedded import _postgres_running

pytestmark = pytest.mark.slow

PAIRS = 40


def _log_lines(server: Server) -> list[dict[str, Any]]:
    lines = []
    for raw in server.log().splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            continue
    return lines


def _worker_pids(server: Server) -> list[int]:
    serving = [line for line in _log_lines(server) if line.get("event") == "serving"]
    assert serving, server.log()
    return serving[0]["workers"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


async def _gone(pids: list[int]) -> bool:
    return not any(_alive(pid) for pid in pids)


async def _workers(db_url: str, tmp_path: Path, count: int = 2) -> Server:
    server = Server(tmp_path / "serve.log", "--workers", str(count),
                    KEVIN_DATABASE_URL=db_url, KEVIN_ADMIN_TOKEN=ADMIN_TOKEN).start()
    await server.wait_ready()
    return server


async def test_pairs_across_workers_match_once_and_metrics_count_every_worker(
        db_url, conn, tmp_path):
    keys = {}
    for name in ("BANKA", "BANKB"):
        done = run_cli("participant", "add", name, KEVIN_DATABASE_URL=db_url)
        assert done.returncode == 0, done.stderr
        keys[name] = bearer(done.stdout.strip())
    server = await _workers(db_url, tmp_path)
    workers = _worker_pids(server)
    try:
        bodies = [("BANKA", trade_body(f"A-{i:02d}")) for i in range(PAIRS)] + [
            ("BANKB", trade_body(f"B-{i:02d}", counterparty="BANKA", side="buy"))
            for i in range(PAIRS)]
        # A connection per request: the kernel hands each to whichever worker accepts.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def submit(who: str, body: dict[str, Any]) -> int:
                async with session.post(f"{server.url}/v1/trades", json=body,
                                        headers=keys[who]) as resp:
                    return resp.status

            statuses = await asyncio.gather(*(submit(who, body) for who, body in bodies))
            assert statuses == [201] * (2 * PAIRS), server.log()[-2000:]
            async with session.get(f"{server.url}/metrics") as resp:
                metrics = await resp.text()
        # Each worker knows it is one of two (group commit's light load is the server's).
        ready = {line["pid"]: line["processes"] for line in _log_lines(server)
                 if line.get("event") == "worker ready"}
        assert ready == dict.fromkeys(workers, 2)
        served_by = {line.get("pid") for line in _log_lines(server)
                     if line.get("event") == "request" and line.get("path") == "/v1/trades"}
        assert served_by == set(workers), "both workers should have taken submissions"
        assert f'kevin_submissions_total{{result="created"}} {2 * PAIRS}.0' in metrics
        assert f'kevin_matches_total{{kind="auto"}} {PAIRS}.0' in metrics
        assert "kevin_match_rate 1.0" in metrics
        # Per-process figures would describe only the worker that answered the scrape.
        assert "process_resident_memory_bytes" not in metrics
    finally:
        status = await server.stop(signal.SIGTERM, timeout=10)
    assert status == 0, server.log()[-2000:]
    assert await _gone(workers)
    assert await check_matching_invariants(conn) == PAIRS


async def test_a_worker_that_dies_stops_the_service_with_one_line(db_url, tmp_path):
    server = await _workers(db_url, tmp_path)
    workers = _worker_pids(server)
    os.kill(workers[0], signal.SIGKILL)
    assert server.process is not None
    status = await asyncio.to_thread(server.process.wait, 10)  # it stops by itself
    assert status == 1
    assert f"worker {workers[0]} exited with status -9; stopped the others" in server.log()
    assert await _gone(workers)


async def test_workers_of_a_killed_supervisor_stop_on_their_own(db_url, tmp_path):
    server = await _workers(db_url, tmp_path)
    workers = _worker_pids(server)
    await server.stop(signal.SIGKILL)
    await wait_for(lambda: _gone(workers), timeout=10)


async def test_a_port_in_use_fails_before_any_worker_starts(db_url, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli("serve", "--workers", "2", "--port", str(port),
                       KEVIN_DATABASE_URL=db_url)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"kevin: cannot listen on 127.0.0.1:{port}: Address already in use")
    assert "worker ready" not in done.stderr


@pytest.mark.parametrize("setting", ["0", "65", "two"])
def test_bad_worker_counts_fail_with_one_line(setting):
    done = run_cli("serve", KEVIN_WORKERS=setting)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"kevin: KEVIN_WORKERS must be a number from 1 to 64, not {setting!r}")
    flag = run_cli("serve", "--workers", setting)
    assert flag.returncode == 2 and "--workers" in flag.stderr


async def test_workers_share_the_supervisors_embedded_postgresql(tmp_path, data_dir):
    server = Server(tmp_path / "serve.log", "--workers", "2", KEVIN_DATABASE_URL=None,
                    KEVIN_DATA_DIR=str(data_dir), KEVIN_ADMIN_TOKEN=ADMIN_TOKEN).start()
    try:
        await server.wait_ready()
        workers = _worker_pids(server)
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{server.url}/v1/participants", json={"name": "BANKA"},
                                    headers=bearer(ADMIN_TOKEN)) as resp:
                assert resp.status == 201
                key = (await resp.json())["api_key"]
            async with session.post(f"{server.url}/v1/trades", json=trade_body(),
                                    headers=bearer(key)) as resp:
                assert resp.status == 201

            # Its PostgreSQL killed, the supervisor starts it again; the workers go on.
            killed = EmbeddedPostgres(data_dir).running_pid()
            assert killed is not None
            os.kill(killed, signal.SIGKILL)

            async def back() -> bool:
                if EmbeddedPostgres(data_dir).running_pid() in (None, killed):
                    return False
                # Fresh connections reach either worker (the kernel spreads them).
                statuses = []
                for _ in range(6):
                    async with aiohttp.ClientSession() as fresh, \
                            fresh.get(f"{server.url}/v1/trades/A-0001",
                                      headers=bearer(key)) as resp:
                        statuses.append(resp.status)
                return statuses == [200] * 6

            await wait_for(back, timeout=40, interval=0.2)
            assert all(_alive(pid) for pid in workers), "the same workers serve on"
    finally:
        assert await server.stop(signal.SIGTERM) == 0, server.log()[-2000:]
    assert await _gone(workers)
    assert not _postgres_running(data_dir), "the supervisor stops the embedded server"


async def test_a_revoked_key_is_refused_by_every_worker_at_once(db_url, tmp_path):
    """Each worker takes a key it found valid on trust for 5 s; a revocation through one
    worker reaches the other over LISTEN/NOTIFY, so that well within those 5 s no worker
    accepts the key any more."""
    done = run_cli("participant", "add", "BANKA", KEVIN_DATABASE_URL=db_url)
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    server = await _workers(db_url, tmp_path)
    admin = bearer(ADMIN_TOKEN)
    try:
        # A connection per request: the kernel hands each to whichever worker accepts.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def statuses(count: int = 20) -> list[int]:
                async def one() -> int:
                    async with session.get(f"{server.url}/v1/trades",
                                           headers=bearer(key)) as resp:
                        return resp.status
                return list(await asyncio.gather(*(one() for _ in range(count))))

            assert await statuses() == [200] * 20  # both workers have it cached now
            served_by = {line.get("pid") for line in _log_lines(server)
                         if line.get("event") == "request" and line.get("path") == "/v1/trades"}
            assert served_by == set(_worker_pids(server))
            from kevin.domain.keys import hash_key, key_id
            async with session.delete(
                    f"{server.url}/v1/participants/BANKA/keys/{key_id(hash_key(key))}",
                    headers=admin) as resp:
                assert resp.status == 200, await resp.text()
            revoked_at = asyncio.get_running_loop().time()

            async def refused_everywhere() -> bool:
                return await statuses() == [401] * 20

            await wait_for(refused_everywhere, timeout=2.5)
            assert asyncio.get_running_loop().time() - revoked_at < 4
    finally:
        status = await server.stop(signal.SIGTERM, timeout=10)
    assert status == 0, server.log()[-2000:]
