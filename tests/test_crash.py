"""Crash test: `kevin serve` is SIGKILLed three times under HTTP load from a separate
process and restarted each time, while `kevin consume` follows the feed into a database
of its own. Afterwards every acknowledged (2xx) write exists with exactly the content the
client was told, `kevin check` is clean, the feed carries every version once, in seq
order, and the consumer that ran throughout holds exactly the server's versions."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from kevin import jsoncodec
from kevin.check import check
from kevin.dburl import to_asyncpg_dsn
from tests.conftest import wait_for
from tests.processes import ROOT, Server, kevin_env, request

pytestmark = pytest.mark.slow

ADMIN_TOKEN = "crash-admin"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
KILLS = 3
ACKS_PER_LIFE = 40  # acknowledged writes between two kills


def _acks(path: Path) -> list[dict]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    # The last line may be half-written while the load runs; it is complete at the end.
    return [json.loads(line) for line in lines if line.endswith("}")]


def _start_load(url: str, keys: list[str], acks: Path, stop: Path,
                log: Path) -> subprocess.Popen:
    """The load in a process of its own: killing the server must not touch the client."""
    with open(log, "wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.crash_load", url, *keys, str(acks), str(stop)],
            cwd=ROOT, env=kevin_env(), stderr=stderr)


def _start_consumer(url: str, consumer_db: str, log: Path) -> subprocess.Popen:
    """`kevin consume` for every participant (the admin token), from the start."""
    with open(log, "wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "kevin.cli", "consume", "--url", url,
             "--api-key", ADMIN_TOKEN, "--database-url", consumer_db,
             "--strategy", "contiguous"],
            cwd=ROOT, env=kevin_env(), stderr=stderr)


def _restart(old: Server, log: Path, db_url: str) -> Server:
    server = Server(log, KEVIN_DATABASE_URL=db_url, KEVIN_ADMIN_TOKEN=ADMIN_TOKEN)
    server.port, server.url = old.port, old.url  # the load keeps its URL
    return server.start()


async def test_sigkill_under_load_loses_no_acknowledged_write(db_url, empty_db_url, conn,
                                                              tmp_path):
    started = time.monotonic()
    server = Server(tmp_path / "serve-0.log", KEVIN_DATABASE_URL=db_url,
                    KEVIN_ADMIN_TOKEN=ADMIN_TOKEN).start()
    acks, stop = tmp_path / "acks.jsonl", tmp_path / "stop"
    load: subprocess.Popen | None = None
    consumer: subprocess.Popen | None = None
    try:
        await server.wait_ready()
        keys = []
        for name in ("BANKA", "BANKB"):
            status, body = await request("POST", f"{server.url}/v1/participants",
                                         json={"name": name}, headers=ADMIN)
            assert status == 201
            keys.append(body["api_key"])
        consumer = _start_consumer(server.url, empty_db_url, tmp_path / "consumer.log")
        load = _start_load(server.url, keys, acks, stop, tmp_path / "load.log")

        for kill in range(1, KILLS + 1):
            before = len(_acks(acks))
            await wait_for(lambda n=before: _grew(acks, n), timeout=30)
            assert server.process is not None
            server.process.send_signal(signal.SIGKILL)
            assert await server.stop(signal.SIGKILL) == -signal.SIGKILL
            server = _restart(server, tmp_path / f"serve-{kill}.log", db_url)
            await server.wait_ready()
        before = len(_acks(acks))
        await wait_for(lambda: _grew(acks, before), timeout=30)
        stop.touch()
        assert await asyncio.to_thread(load.wait, 30) == 0, (tmp_path / "load.log").read_text()

        acknowledged = _acks(acks)
        await _every_ack_is_stored_as_told(server.url, acknowledged)
        report = await check(db_url)
        assert report.ok, report.text()
        server_versions = await _server_versions(server.url)
        await _feed_carries_every_version(server.url, set(server_versions))
        await _consumer_holds(empty_db_url, server_versions)
        consumer.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(consumer.wait, 15) == 0
        versions = await conn.fetchval("SELECT count(*) FROM trades")
        retried = sum(a["status"] == 200 and a["method"] == "POST" for a in acknowledged)
        print(f"\ncrash: {KILLS} SIGKILLs under load, {len(acknowledged)} acknowledged writes "
              f"({retried} answered 200 to a retry), {versions} versions stored, "
              f"kevin check clean, {time.monotonic() - started:.1f} s")
        assert await server.stop() == 0
    finally:
        stop.touch()
        for process in (load, consumer):
            if process is not None and process.poll() is None:
                process.kill()
        await server.stop(signal.SIGKILL)


async def _grew(acks: Path, before: int) -> bool:
    return len(_acks(acks)) >= before + ACKS_PER_LIFE


async def _every_ack_is_stored_as_told(url: str, acknowledged: list[dict]) -> None:
    """Each acknowledged answer is a version that exists now with identical content."""
    assert acknowledged
    histories: dict[tuple[str, str], list[dict]] = {}
    async with aiohttp.ClientSession(headers=ADMIN) as session:
        for ack in acknowledged:
            told = ack["trade"]
            key = (ack["participant"], told["trade_id"])
            if key not in histories:
                async with session.get(f"{url}/v1/trades/{key[1]}/versions",
                                       params={"participant": key[0]}) as resp:
                    assert resp.status == 200, (key, await resp.text())
                    histories[key] = (await resp.json())["versions"]
            stored = histories[key]
            assert [v["version"] for v in stored] == list(range(1, len(stored) + 1))
            assert stored[told["version"] - 1] == told, key


Key = tuple[str, str, int]


async def _server_versions(url: str) -> dict[Key, dict]:
    """Every version of every trade, as the API serves it."""
    found: dict[Key, dict] = {}
    async with aiohttp.ClientSession(headers=ADMIN) as session:
        cursor = None
        while True:
            params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
            async with session.get(f"{url}/v1/trades", params=params) as resp:
                page = await resp.json()
            for trade in page["trades"]:
                async with session.get(f"{url}/v1/trades/{trade['trade_id']}/versions",
                                       params={"participant": trade["participant"]}) as resp:
                    for version in jsoncodec.loads(await resp.read())["versions"]:
                        found[(version["participant"], version["trade_id"],
                               version["version"])] = version
            cursor = page["next_cursor"]
            if cursor is None:
                return found


async def _feed_carries_every_version(url: str, versions: set[Key]) -> None:
    """The admin feed, read from the start in pages: every version exactly once, in
    strictly increasing seq (waiting for the sequencer to reach the last commits)."""
    async def read_all() -> list[dict]:
        updates, after = [], 0
        async with aiohttp.ClientSession(headers={**ADMIN, "Accept": "application/json"}) as s:
            while True:
                async with s.get(f"{url}/v1/feed", params={"after": after, "limit": 1000}) as r:
                    assert r.status == 200, await r.text()
                    page = await r.json()
                if not page["updates"]:
                    return updates
                updates += page["updates"]
                after = page["last_seq"]

    async def complete() -> list[dict] | None:
        updates = await read_all()
        return updates if len(updates) >= len(versions) else None

    updates = await wait_for(complete, timeout=30)
    seqs = [u["seq"] for u in updates]
    assert seqs == sorted(set(seqs))
    carried = [(u["participant"], u["trade_id"], u["version"]) for u in updates]
    assert len(carried) == len(set(carried)) and set(carried) == versions


async def _consumer_holds(consumer_db: str, versions: dict[Key, dict]) -> None:
    """The consumer's table equals the server's versions, body for body, and its latest
    row per trade is the server's latest version."""
    db = await asyncpg.connect(to_asyncpg_dsn(consumer_db))
    try:
        async def caught_up() -> bool:
            try:
                held = await db.fetchval("SELECT count(*) FROM kevin_trade_versions")
            except asyncpg.UndefinedTableError:
                return False
            return held >= len(versions)

        await wait_for(caught_up, timeout=30)
        rows = await db.fetch("SELECT participant, trade_id, version, latest, trade::text "
                              "FROM kevin_trade_versions")
    finally:
        await db.close()
    held = {(r["participant"], r["trade_id"], r["version"]): jsoncodec.loads(r["trade"])
            for r in rows}
    assert set(held) == set(versions)
    assert held == versions
    newest: dict[tuple[str, str], int] = {}
    for participant, trade_id, version in versions:
        newest[(participant, trade_id)] = max(version, newest.get((participant, trade_id), 0))
    assert {(r["participant"], r["trade_id"]): r["version"] for r in rows if r["latest"]} \
        == newest
