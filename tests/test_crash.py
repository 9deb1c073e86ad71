"""Crash test: `kevin serve` is SIGKILLed three times under HTTP load from a separate
process and restarted each time. Afterwards every acknowledged (2xx) write exists with
exactly the content the client was told, `kevin check` is clean, and the feed carries
every version."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from kevin.check import check
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


def _restart(old: Server, log: Path, db_url: str) -> Server:
    server = Server(log, KEVIN_DATABASE_URL=db_url, KEVIN_ADMIN_TOKEN=ADMIN_TOKEN)
    server.port, server.url = old.port, old.url  # the load keeps its URL
    return server.start()


async def test_sigkill_under_load_loses_no_acknowledged_write(db_url, conn, tmp_path):
    started = time.monotonic()
    server = Server(tmp_path / "serve-0.log", KEVIN_DATABASE_URL=db_url,
                    KEVIN_ADMIN_TOKEN=ADMIN_TOKEN).start()
    acks, stop = tmp_path / "acks.jsonl", tmp_path / "stop"
    load: subprocess.Popen | None = None
    try:
        await server.wait_ready()
        keys = []
        for name in ("BANKA", "BANKB"):
            status, body = await request("POST", f"{server.url}/v1/participants",
                                         json={"name": name}, headers=ADMIN)
            assert status == 201
            keys.append(body["api_key"])
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
        # The feed carries every version: one update each, all given a seq in the end.
        assert await conn.fetchval("""
            SELECT count(*) FROM trades t WHERE NOT EXISTS (
                SELECT 1 FROM feed f WHERE (f.participant, f.trade_id, f.version)
                                         = (t.participant, t.trade_id, t.version))""") == 0
        versions = await conn.fetchval("SELECT count(*) FROM trades")
        retried = sum(a["status"] == 200 and a["method"] == "POST" for a in acknowledged)
        print(f"\ncrash: {KILLS} SIGKILLs under load, {len(acknowledged)} acknowledged writes "
              f"({retried} answered 200 to a retry), {versions} versions stored, "
              f"kevin check clean, {time.monotonic() - started:.1f} s")
        assert await server.stop() == 0
    finally:
        stop.touch()
        if load is not None and load.poll() is None:
            load.kill()
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
