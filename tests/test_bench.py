"""`kevin bench` runs end to end: a ceiling, a real server driven over HTTP, figures as
JSON, and no scratch database left behind. (Figures are printed, never asserted against
a threshold: this machine is shared and noisy.)"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import uuid
from pathlib import Path

import asyncpg
import psutil
import pytest

from kevin.bench import batch, pgbench, runner
from kevin.dburl import to_asyncpg_dsn
from kevin.store import feed as feed_store
from kevin.store.invariants import find_violations
from tests.processes import run_cli

pytestmark = pytest.mark.slow


async def _bench_databases(server_url: str) -> list[str]:
    conn = await asyncpg.connect(to_asyncpg_dsn(server_url))
    try:
        rows = await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE 'kevin_bench_%'")
    finally:
        await conn.close()
    return [r["datname"] for r in rows]


# Four servers, each driven closed-loop and paced twice: minutes on a loaded machine.
@pytest.mark.timeout(360)
async def test_bench_pairs_writes_figures_and_cleans_up(server_url: str, tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    done = run_cli("bench", "pairs", "--concurrency", "2", "--warmup", "0.2", "--duration", "1",
                   "--rounds", "2", "--workers", "1,2", "--group-commit", "both",
                   "--output", str(output), timeout=300, KEVIN_DATABASE_URL=server_url)
    assert done.returncode == 0, done.stderr
    for configuration in ("--workers 1, group commit on", "--workers 1, group commit off",
                          "--workers 2, group commit on", "--workers 2, group commit off"):
        assert f"kevin serve {configuration}:" in done.stdout
    assert "x ceiling" in done.stdout and "paced at 0.5 x its peak" in done.stdout
    figures = json.loads(output.read_text())
    pairs = figures["pairs"]
    ceiling = pairs["ceiling"]
    assert ceiling["pairs"] > 0 and ceiling["errors"] == 0
    # Two alternating rounds; the totals are their sums over the measured seconds.
    assert len(pairs["rounds"]) == 2 and ceiling["seconds"] == 2
    assert "latencies_s" not in ceiling
    assert figures["machine"]["cpus"] >= 1
    # The minimal ceiling: pgbench ships with PostgreSQL, on this machine and CI's.
    assert pgbench.pgbench() is not None, "pgbench is not on PATH"
    minimal = pairs["minimal_ceiling"]
    assert minimal["pairs"] > 0 and minimal["errors"] == 0 and "minimal ceiling" in done.stdout
    assert [(c["workers"], c["group_commit"]) for c in pairs["services"]] == [
        (1, True), (1, False), (2, True), (2, False)]
    for config, processes in zip(pairs["services"], (1, 1, 3, 3), strict=True):
        service = config["service"]
        assert service["pairs"] > 0 and not service["errors"]
        assert service["latency"]["p50_ms"] is not None and "latencies_s" not in service
        assert config["ratio"] == pytest.approx(
            service["pairs_per_s"] / ceiling["pairs_per_s"], abs=0.001)
        assert config["minimal_ratio"] == pytest.approx(
            service["pairs_per_s"] / minimal["pairs_per_s"], abs=0.001)
        assert len(config["rounds"]) == 2 and service["pairs_per_s"] == pytest.approx(
            sum(r["pairs_per_s"] for r in config["rounds"]) / 2, abs=0.1)
        # The server's CPU and memory: one process, or the supervisor and both workers.
        assert service["server"]["processes"] == processes
        # The paced slices ran at half this configuration's peak, every pair timed from
        # the buy sent to both legs matched on the feed.
        paced = config["paced"]
        assert paced["rate"] == pytest.approx(service["pairs_per_s"] / 2, abs=0.1)
        assert paced["pairs"] > 0 and not paced["errors"] and paced["unfinished"] == 0
        assert paced["pairs_not_seen_on_feed"] == 0
        assert paced["latency"]["p50_ms"] is not None and "latencies_s" not in paced
        assert paced["other_transactions"]["longest_s"] >= 0
    assert len(figures["scratch_databases"]) == 6
    assert not set(figures["scratch_databases"]) & set(await _bench_databases(server_url))


async def test_the_minimal_ceilings_pairs_are_matched_pairs_kevin_would_accept(
        db_url: str, conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO participants (name) VALUES ('BANKA'), ('BANKB')")
    figures = await pgbench.run(db_url, concurrency=2, duration=1)
    pairs = figures["pairs"]
    assert pairs > 0 and figures["errors"] == 0 and figures["pairs_per_s"] > 0
    latest = await conn.fetch(
        "SELECT status, count(*) FROM trades WHERE latest GROUP BY status")
    assert [(r["status"], r["count"]) for r in latest] == [("matched", 2 * pairs)]
    assert await conn.fetchval("SELECT count(*) FROM feed") == 4 * pairs
    # Each pair holds every invariant `kevin check` verifies.
    assert await find_violations(conn) == []


async def test_the_matched_copy_ceiling_stores_matched_pairs_kevin_would_accept(
        db_url: str, conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO participants (name) VALUES ('BANKA'), ('BANKB')")
    figures = await batch.copy_ceiling(db_url, "mc", lines=50, requests=4, matched=True)
    assert figures["trades"] == 200 and figures["trades_per_s"] > 0
    latest = await conn.fetch(
        "SELECT status, version, count(*) FROM trades WHERE latest GROUP BY 1, 2")
    assert [tuple(r) for r in latest] == [("matched", 2, 200)]
    assert await conn.fetchval("SELECT count(*) FROM trades") == 400
    assert await conn.fetchval("SELECT count(*) FROM feed") == 400
    # Each leg's matched version names the other's, and every invariant holds.
    assert await conn.fetchval("""
        SELECT count(*) FROM trades s JOIN trades b ON b.match_id = s.match_id
        WHERE s.side = 'sell' AND b.side = 'buy' AND s.latest AND b.latest
          AND s.match_counterparty_trade_id = b.trade_id
          AND b.match_counterparty_trade_id = s.trade_id""") == 100
    assert await find_violations(conn) == []


def test_bench_refuses_an_unreachable_database() -> None:
    done = run_cli("bench", "pairs", "--duration", "1", timeout=60,
                   KEVIN_DATABASE_URL="postgresql://postgres@127.0.0.1:1/postgres")
    assert done.returncode != 0
    assert done.stderr.startswith("kevin:") and "Traceback" not in done.stderr


async def test_ceiling_issues_the_engines_statements_for_a_pair(db_url: str) -> None:
    """The ceiling stays in step with the engine: the statements the engine issues for a
    matched pair (both submissions) are, in order, the ones the ceiling issues — apart
    from transaction control, which the ceiling does once per pair."""
    from kevin.bench import ceiling, workload
    from kevin.domain.models import TradeSubmission
    from kevin.engine.service import TradeService
    from kevin.store import database

    control = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")

    recorded: list[str] = []

    def record(logged) -> None:  # noqa: ANN001 - asyncpg's LoggedQuery
        text = " ".join(logged.query.split())
        # Transaction control, and asyncpg's own type introspection (once per connection).
        if not text.upper().startswith(control) and "jit" not in text \
                and "typeinfo_tree" not in text:
            recorded.append(text)

    pool = await database.create_pool(db_url, min_size=1, max_size=1)
    try:
        service = TradeService(pool)
        for name in (workload.SELLER, workload.BUYER):
            await service.create_participant(name)
        sell, buy = workload.pair_terms("eng", 0, 1, 1)
        async with pool.acquire() as conn:  # the pool's only connection: it logs from now on
            conn.add_query_logger(record)
        await service.submit(workload.SELLER, TradeSubmission.model_validate(sell))
        _, matched = await service.submit(workload.BUYER, TradeSubmission.model_validate(buy))
        assert matched.status == "matched"
        await asyncio.sleep(0)  # query loggers are called soon, not at once
        engine, recorded[:] = list(recorded), []
        async with pool.acquire() as conn:
            await ceiling.pair_statements()(conn, "cei", 0, 1, 1)
        await asyncio.sleep(0)
    finally:
        await pool.close()
    assert len(engine) >= 6, engine
    assert recorded == engine


async def test_bench_batch_against_a_copy_ceiling(server_url: str, tmp_path: Path) -> None:
    output = tmp_path / "batch.json"
    done = run_cli("bench", "batch", "--batch-lines", "200", "--batch-requests", "4",
                   "--rounds", "2", "--output", str(output), timeout=120,
                   KEVIN_DATABASE_URL=server_url)
    assert done.returncode == 0, done.stderr
    # The figures alone: no log line of the bench's own setup between them.
    assert "participant created" not in done.stderr + done.stdout
    batch = json.loads(output.read_text())["batch"]
    assert batch["ceiling"]["trades"] == batch["service"]["trades"] == 800
    assert batch["service"]["results"] == {"created": 800}
    assert batch["service"]["matched_lines"] == 400  # every buy matched its sell
    assert batch["service"]["requests"] == 4
    assert batch["ceiling"]["trades_per_s"] > 0 and batch["ratio"] > 0
    assert batch["matched_ceiling"]["trades"] == 800 and batch["matched_ratio"] > 0
    # Two rounds, each a pair of requests on every side; the ratio is of the sums.
    assert len(batch["rounds"]) == 2 and all(r["ratio"] > 0 for r in batch["rounds"])
    assert "by round " in done.stdout
    assert not set(json.loads(output.read_text())["scratch_databases"]) \
        & set(await _bench_databases(server_url))
    # The CPU a trade on each side, where PostgreSQL runs on this machine (as in CI).
    conn = await asyncpg.connect(to_asyncpg_dsn(server_url))
    try:
        local = await runner.backends_cpu(conn, own=True) is not None
    finally:
        await conn.close()
    service, bound = batch["service"], batch["cpu_bound"]
    if local:
        # Measured (in clock ticks: the ceilings' few ms of 400 trades may read as 0).
        assert service["server_cpu_ms_per_1000"] > 0
        assert service["postgresql_cpu_ms_per_1000"] >= 0
        assert batch["ceiling"]["postgresql_cpu_ms_per_1000"] >= 0
        assert batch["matched_ceiling"]["postgresql_cpu_ms_per_1000"] >= 0
        assert bound["cores"] == os.cpu_count() and bound["ratio"] > 0
        assert "cpu bound" in done.stdout
    else:
        assert service["postgresql_cpu_ms_per_1000"] is None and bound is None
        assert "cpu          not measured" in done.stdout


async def test_backends_cpu_reads_the_cpu_each_backend_of_the_database_spent(
        db_url: str, conn: asyncpg.Connection) -> None:
    watcher = await asyncpg.connect(to_asyncpg_dsn(db_url))
    try:
        own = await runner.backends_cpu(conn, own=True)
        assert own is not None, "PostgreSQL runs on this machine, here and in CI"
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        assert list(own) == [pid]
        before = await runner.backends_cpu(watcher)
        assert before is not None and pid in before
        assert await watcher.fetchval("SELECT pg_backend_pid()") not in before
        await conn.fetchval("SELECT count(*) FROM generate_series(1, 3000000)")
        spent = runner.cpu_between(before, await runner.backends_cpu(watcher))
        assert spent is not None and spent > 0
    finally:
        await watcher.close()


def test_cpu_between_counts_backends_that_started_and_leaves_out_those_that_ended() -> None:
    assert runner.cpu_between({1: 1.0, 2: 5.0}, {1: 1.5, 3: 0.25}) == 0.75
    assert runner.cpu_between(None, {1: 1.0}) is None
    assert runner.cpu_between({1: 1.0}, None) is None


async def test_the_batch_bench_waits_for_the_feed_to_be_sequenced_and_no_longer(
        db_url: str, conn: asyncpg.Connection) -> None:
    await batch._drained(conn, timeout=1)  # nothing waits: at once
    await conn.execute("INSERT INTO participants (name) VALUES ('BANKA'), ('BANKB')")
    # Two trades and their feed rows, which no sequencer numbers: the wait is bounded.
    await batch.copy_ceiling(db_url, "sq", lines=2, requests=1)
    with pytest.raises(runner.BenchFailed, match="not sequenced within 0s"):
        await batch._drained(conn, timeout=0.2)
    assert (await feed_store.sequence_round(conn, 100)).assigned == 2
    await batch._drained(conn, timeout=1)


def test_batch_rounds_are_slices_of_whole_pairs() -> None:
    assert batch.round_plans(6, 3) == [[(0, "sell"), (0, "buy")], [(1, "sell"), (1, "buy")],
                                       [(2, "sell"), (2, "buy")]]
    # Fewer pairs than rounds: a round a pair; a sell without its buy ends the last.
    assert batch.round_plans(2, 3) == [[(0, "sell"), (0, "buy")]]
    assert batch.round_plans(5, 2) == [[(0, "sell"), (0, "buy")],
                                       [(1, "sell"), (1, "buy"), (2, "sell")]]
    assert [len(p) for p in batch.round_plans(20, 3)] == [6, 6, 8]


def test_the_cpu_bound_is_the_rate_every_core_busy_allows() -> None:
    service = {"server_cpu_ms_per_1000": 80.0, "postgresql_cpu_ms_per_1000": 120.0}
    assert batch.cpu_bound(service, 40_000.0, 2) == {
        "cores": 2, "trades_per_s": 10_000.0, "ratio": 0.25}
    assert batch.cpu_bound({**service, "postgresql_cpu_ms_per_1000": None}, 40_000.0, 2) \
        is None


async def test_a_later_run_drops_only_the_scratch_databases_of_a_killed_bench(
        server_url: str) -> None:
    """A bench killed outright drops nothing; the next run drops what it left — and only
    that: not a live run's databases, nor those it cannot tell the owner of."""
    dead = await asyncio.create_subprocess_exec("true")
    await dead.wait()  # a pid that no longer runs
    host = socket.gethostname()
    owners = {"killed": f"kevin bench on {host}, pid {dead.pid}",
              "live": f"kevin bench on {host}, pid {os.getpid()}",
              "elsewhere": f"kevin bench on another-{host}, pid {dead.pid}",
              "unowned": None}
    names = {tag: f"kevin_bench_{uuid.uuid4().hex[:8]}_{tag}" for tag in owners}
    conn = await asyncpg.connect(to_asyncpg_dsn(server_url))
    try:
        for tag, name in names.items():
            await conn.execute(f'CREATE DATABASE "{name}"')
            if owners[tag] is not None:
                await conn.execute(f"COMMENT ON DATABASE \"{name}\" IS '{owners[tag]}'")
        dropped = await runner.drop_abandoned_databases(server_url)
        assert names["killed"] in dropped
        left = set(await _bench_databases(server_url))
        assert names["killed"] not in left
        assert {names["live"], names["elsewhere"], names["unowned"]} <= left
    finally:
        for name in names.values():
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


_PARENT = """
import asyncio, sys
from kevin.bench.children import spawn

async def main():
    child = await spawn(sys.executable, "-c", "import time; time.sleep(120)",
                        stdout=asyncio.subprocess.DEVNULL)
    print(child.pid, flush=True)
    await child.wait()

asyncio.run(main())
"""


async def test_the_benchs_children_end_when_the_bench_is_killed() -> None:
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _PARENT, stdout=asyncio.subprocess.PIPE)
    assert parent.stdout is not None
    child = psutil.Process(int(await asyncio.wait_for(parent.stdout.readline(), 30)))
    try:
        parent.kill()  # as a CI timeout would: no cleanup runs in the bench
        await parent.wait()
        gone, _ = await asyncio.to_thread(psutil.wait_procs, [child], 10)
        assert gone, "the child outlived the bench"
    finally:
        if child.is_running():
            child.kill()
