"""``kevin bench``: run the ceiling and the service against one PostgreSQL server, print
the figures side by side, write them as JSON."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import secrets
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from kevin.bench import ceiling, pgbench
from kevin.bench import workload as w
from kevin.config import MAX_WORKERS, Settings
from kevin.dburl import to_asyncpg_dsn, with_database
from kevin.engine.service import TradeService
from kevin.runtime import database_url
from kevin.store import database
from kevin.store import feed as feed_store


class BenchFailed(Exception):
    """The benchmark could not run; the message says why, in one line."""


@dataclass(frozen=True)
class Options:
    mode: str = "all"  # pairs | batch | all
    concurrency: int = 8
    keys: int = 0  # distinct match keys; 0 = one per client
    warmup: float = 1.0
    duration: float = 5.0
    rounds: int = 3
    batch_lines: int = 10_000
    batch_requests: int = 6
    # kevin serve's processes: one per core, as the README advises for production.
    workers: int = field(default_factory=lambda: min(os.cpu_count() or 1, MAX_WORKERS))
    output: Path | None = None

    @property
    def match_keys(self) -> int:
        return self.keys or self.concurrency


# --- scratch databases and the server process -------------------------------------------


# The scratch databases this process created (reported, so a run can be checked clean).
created_databases: list[str] = []


@contextlib.asynccontextmanager
async def scratch_database(server_url: str, tag: str) -> AsyncIterator[str]:
    """A fresh database at schema head, dropped again on exit whatever happens."""
    name = f"kevin_bench_{uuid.uuid4().hex[:8]}_{tag}"
    created_databases.append(name)
    admin = await asyncpg.connect(to_asyncpg_dsn(server_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = with_database(server_url, name)
    try:
        await database.migrate(url)
        yield url
    finally:
        admin = await asyncpg.connect(to_asyncpg_dsn(server_url))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def create_participants(url: str) -> dict[str, str]:
    pool = await database.create_pool(url, min_size=1, max_size=1)
    try:
        service = TradeService(pool)
        return {name: await service.create_participant(name) for name in (w.SELLER, w.BUYER)}
    finally:
        await pool.close()


async def feed_head(url: str) -> int:
    """The highest seq assigned so far: where a slice's feed follower starts, so that it
    does not stream the earlier slices' updates again (in the service's CPU, and its own)."""
    conn = await asyncpg.connect(to_asyncpg_dsn(url))
    try:
        return await feed_store.max_seq(conn)
    finally:
        await conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_figures(pid: int) -> dict[str, float]:
    """proc_figures summed over a process and its children (a supervisor and its workers)."""
    pids = [pid]
    with contextlib.suppress(OSError):
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError):
                    stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                    if int(stat[1]) == pid:
                        pids.append(int(entry.name))
    figures = [f for f in map(proc_figures, pids) if f]
    if not figures:
        return {}
    return {"rss_mib": round(sum(f["rss_mib"] for f in figures), 1),
            "cpu_s": round(sum(f["cpu_s"] for f in figures), 2), "processes": len(figures)}


def proc_figures(pid: int) -> dict[str, float]:
    """RSS (MiB) and CPU seconds of a process, from /proc (Linux); {} elsewhere."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return {}
    rss_kib = next(int(line.split()[1]) for line in status.splitlines()
                   if line.startswith("VmRSS:"))
    ticks = os.sysconf("SC_CLK_TCK")
    return {"rss_mib": round(rss_kib / 1024, 1),
            "cpu_s": round((int(stat[11]) + int(stat[12])) / ticks, 2)}


def kevin_env(**settings: str) -> dict[str, str]:
    """This process's environment for a child Kevin, with this Kevin importable first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEVIN_")}
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    env.update(settings)
    return env


class ServeProcess:
    """``kevin serve`` on a free port of 127.0.0.1, on the given database."""

    def __init__(self, url: str, admin_token: str, log_path: Path, workers: int = 1) -> None:
        self.workers = workers
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = kevin_env(KEVIN_DATABASE_URL=url, KEVIN_ADMIN_TOKEN=admin_token,
                             KEVIN_LOG_FORMAT="json")
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> ServeProcess:
        log = self.log_path.open("ab")  # noqa: ASYNC230 - opening a local log file
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "kevin.cli", "serve", "--port", str(self.port),
                "--workers", str(self.workers), env=self.env,
                stdout=asyncio.subprocess.DEVNULL, stderr=log)
        finally:
            log.close()
        await self._wait_ready()
        return self

    async def _wait_ready(self, timeout: float = 60) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.process.returncode is not None:
                    raise BenchFailed(f"kevin serve exited: {self.tail()}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{self.base}/readyz") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise BenchFailed(f"kevin serve was not ready within {timeout}s: {self.tail()}")

    def tail(self) -> str:
        lines = self.log_path.read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else "(no output)"

    async def __aexit__(self, *exc: object) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), 20)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


async def run_loadgen(config: dict[str, Any], timeout: float) -> dict[str, Any]:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kevin.bench.loadgen", env=kevin_env(),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(child.communicate(json.dumps(config).encode()),
                                          timeout)
    except TimeoutError:
        child.kill()
        await child.wait()
        raise BenchFailed(f"the load generator did not finish within {timeout:.0f}s") from None
    if child.returncode != 0:
        last = err.decode(errors="replace").strip().splitlines()
        raise BenchFailed(f"the load generator failed: {last[-1] if last else child.returncode}")
    return json.loads(out)


# --- the modes --------------------------------------------------------------------------


def _merged(slices: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Slices of one side (ceiling or service) as one figure: pairs summed over the
    measured time, latencies pooled."""
    merged = {k: v for k, v in slices[-1].items() if k != "latencies_s"}
    pairs = sum(s["pairs"] for s in slices)
    latencies = [x for s in slices for x in s["latencies_s"]]
    merged.update(pairs=pairs, seconds=seconds, pairs_per_s=round(pairs / seconds, 1),
                  latency=w.latency_summary(latencies))
    if isinstance(merged.get("errors"), int):
        merged["errors"] = sum(s["errors"] for s in slices)
    elif isinstance(merged.get("errors"), dict):
        errors: dict[str, int] = {}
        for s in slices:
            for status, n in s["errors"].items():
                errors[status] = errors.get(status, 0) + n
        merged["errors"] = errors
    for key in ("pairs_not_seen_on_feed", "matched_in_response", "feed_matched_updates_seen",
                "load_generator_cpu_s"):
        if merged.get(key) is not None:
            merged[key] = round(sum(s[key] for s in slices), 2)
    return merged


async def bench_pairs(server_url: str, options: Options, workdir: Path) -> dict[str, Any]:
    """The ceiling and the service in alternating slices (``rounds`` of each, the same
    length), so that a machine whose speed drifts — a shared one always does — tilts
    both sides alike; the ratio is of the sums."""
    run_id = secrets.token_hex(3)
    common: dict[str, Any] = {"concurrency": options.concurrency, "duration": options.duration,
              "warmup": options.warmup, "keys": options.match_keys}
    ceilings: list[dict[str, Any]] = []
    minimal: list[dict[str, Any]] = []
    services: list[dict[str, Any]] = []
    cpu = 0.0
    with_pgbench = pgbench.pgbench() is not None
    async with scratch_database(server_url, "ceiling") as ceiling_url, \
            scratch_database(server_url, "minimal") as minimal_url, \
            scratch_database(server_url, "service") as url:
        keys = await create_participants(url)
        admin_token = secrets.token_urlsafe(16)
        async with ServeProcess(url, admin_token, workdir / "serve.log",
                                options.workers) as server:
            assert server.process is not None
            for r in range(options.rounds):
                if with_pgbench:
                    minimal.append(await pgbench.run(minimal_url, options.concurrency,
                                                     options.duration))
                ceilings.append(await ceiling.run(ceiling_url, **common,
                                                  run_id=f"{run_id}c{r}"))
                before = tree_figures(server.process.pid)
                services.append(await run_loadgen(
                    {**common, "run_id": f"{run_id}s{r}", "url": server.base,
                     "seller_key": keys[w.SELLER], "buyer_key": keys[w.BUYER],
                     "admin_token": admin_token, "feed_after": await feed_head(url)},
                    timeout=options.warmup + options.duration + 120))
                after = tree_figures(server.process.pid)
                if before and after:
                    cpu += after["cpu_s"] - before["cpu_s"]
            at_end = tree_figures(server.process.pid)
    rss = at_end.get("rss_mib")
    seconds = options.duration * options.rounds
    ceiling_figures, service = _merged(ceilings, seconds), _merged(services, seconds)
    if rss is not None:
        # CPU per pair is steadier than pairs/s on a shared machine: the figure to
        # compare when judging a change to the service.
        measured = service["pairs"] * (options.warmup + options.duration) / options.duration
        service["server"] = {
            "rss_mib": rss, "processes": at_end["processes"], "cpu_s": round(cpu, 2),
            "cpu_ms_per_pair": round(1000 * cpu / measured, 3) if measured else None}
    ratio = service["pairs_per_s"] / ceiling_figures["pairs_per_s"] \
        if ceiling_figures["pairs_per_s"] else None
    rounds = [{"ceiling_pairs_per_s": c["pairs_per_s"], "service_pairs_per_s": s["pairs_per_s"],
               "ratio": round(s["pairs_per_s"] / c["pairs_per_s"], 3)
               if c["pairs_per_s"] else None} for c, s in zip(ceilings, services, strict=True)]
    figures: dict[str, Any] = {
        "ceiling": ceiling_figures, "service": service,
        "ratio": round(ratio, 3) if ratio is not None else None, "rounds": rounds,
        "minimal_ceiling": None, "minimal_ratio": None}
    if minimal:
        floor = pgbench.merged(minimal)
        figures["minimal_ceiling"] = floor
        figures["minimal_ratio"] = round(service["pairs_per_s"] / floor["pairs_per_s"], 3) \
            if floor["pairs_per_s"] else None
        for by_round, slice_ in zip(rounds, minimal, strict=True):
            by_round["minimal_pairs_per_s"] = slice_["pairs_per_s"]
            by_round["minimal_ratio"] = round(
                by_round["service_pairs_per_s"] / slice_["pairs_per_s"], 3) \
                if slice_["pairs_per_s"] else None
    return figures


def machine() -> dict[str, Any]:
    mem = None
    with contextlib.suppress(OSError, StopIteration, ValueError):
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        mem_kib = int(next(line for line in meminfo if line.startswith("MemTotal:")).split()[1])
        mem = round(mem_kib / 1024 / 1024, 1)
    return {"cpus": os.cpu_count(), "memory_gib": mem, "python": platform.python_version(),
            "platform": platform.platform()}


async def run(settings: Settings, options: Options) -> dict[str, Any]:
    # No migration of the configured database: the bench only borrows its server.
    async with database_url(settings, migrate=False) as url:
        try:
            conn = await asyncpg.connect(to_asyncpg_dsn(url))
        except database.CONNECTIVITY_ERRORS as e:
            raise BenchFailed(f"cannot connect to the database: {e}") from e
        try:
            pg_version = await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()
        result: dict[str, Any] = {
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {**machine(), "postgresql": pg_version},
            "options": {k: (str(v) if isinstance(v, Path) else v)
                        for k, v in asdict(options).items()},
        }
        with tempfile.TemporaryDirectory(prefix="kevin-bench-") as tmp:
            if options.mode in ("pairs", "all"):
                result["pairs"] = await bench_pairs(url, options, Path(tmp))
                print(pairs_text(result["pairs"], options), flush=True)
            if options.mode in ("batch", "all"):
                from kevin.bench import batch

                result["batch"] = await batch.bench(url, options, Path(tmp))
                print(batch.text(result["batch"]), flush=True)
    result["scratch_databases"] = list(created_databases)
    if options.output is not None:
        options.output.write_text(json.dumps(result, indent=2) + "\n")
        print(f"figures written to {options.output}")
    return result


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def pairs_text(figures: dict[str, Any], options: Options) -> str:
    """The figures as lines: the service against the asyncpg ceiling (the engine's own
    statements) and, where pgbench is on PATH, against the minimal ceiling."""
    c, s = figures["ceiling"], figures["service"]
    lines = [
        f"pairs: {options.concurrency} clients, {options.match_keys} match keys; "
        f"{options.rounds} rounds of ceiling then service, each {options.duration:g} s "
        f"measured after {options.warmup:g} s warm-up; kevin serve --workers {options.workers}",
        f"  ceiling  {c['pairs_per_s']:>9.1f} pairs/s   p50 {_ms(c['latency']['p50_ms'])}"
        f"   p99 {_ms(c['latency']['p99_ms'])}   ({c['latency_is']})",
        f"  service  {s['pairs_per_s']:>9.1f} pairs/s   p50 {_ms(s['latency']['p50_ms'])}"
        f"   p99 {_ms(s['latency']['p99_ms'])}   ({s['latency_is']})",
        f"  ratio    {figures['ratio']} x ceiling"
        + (f"   (server: {s['server']['cpu_ms_per_pair']} CPU ms per pair, "
           f"RSS {s['server']['rss_mib']} MiB)" if "server" in s else ""),
    ]
    lines.append("  by round  " + ", ".join(
        f"{r['ratio']}" for r in figures["rounds"]) + "  (service / ceiling)")
    m = figures.get("minimal_ceiling")
    if m:
        lines.append(
            f"  minimal  {m['pairs_per_s']:>9.1f} pairs/s   (pgbench, {m['script']}: the least"
            f" SQL a pair needs, {m['seconds']} s in rounds with the others)")
        lines.append(f"  ratio    {figures['minimal_ratio']} x minimal ceiling   by round  "
                     + ", ".join(f"{r['minimal_ratio']}" for r in figures["rounds"]))
    else:
        lines.append("  minimal  pgbench is not on PATH (it ships with PostgreSQL): ratios are"
                     " to the asyncpg ceiling only")
    if s.get("errors"):
        lines.append(f"  service errors by status: {s['errors']}")
    if c.get("errors"):
        lines.append(f"  ceiling errors: {c['errors']}")
    return "\n".join(lines)
