"""``kevin bench``: run the ceiling and the service against one PostgreSQL server, print
the figures side by side, write them as JSON."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import re
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
import psutil

from kevin.bench import ceiling, pgbench
from kevin.bench import workload as w
from kevin.bench.children import spawn
from kevin.config import Settings
from kevin.dburl import to_asyncpg_dsn, with_database
from kevin.engine.service import TradeService
from kevin.runtime import database_url
from kevin.store import database
from kevin.store import feed as feed_store


class BenchFailed(Exception):
    """The benchmark could not run; the message says why, in one line."""


# The targets `kevin bench` reports against (docs/performance.md, Targets).
TARGET_MINIMAL_RATIO = 0.30  # service pairs/s over the minimal (pgbench) ceiling's
TARGET_P99_MS = 50.0  # pair latency at half the peak rate, buy sent -> both matched on SSE


@dataclass(frozen=True)
class Options:
    mode: str = "all"  # pairs | batch | all
    concurrency: int = 16
    keys: int = 0  # distinct match keys; 0 = one per client
    warmup: float = 1.0
    duration: float = 5.0
    rounds: int = 3
    batch_lines: int = 10_000
    batch_requests: int = 6
    # The service configurations measured, as kevin serve --workers: the default (one
    # process) and one per core on this 2-core machine.
    workers: tuple[int, ...] = (1, 2)
    # Group commit in each configuration (KEVIN_GROUP_COMMIT): as this process's
    # environment says (on unless it says 0), or both, doubling the configurations.
    group_commit: tuple[bool, ...] = field(
        default_factory=lambda: (os.environ.get("KEVIN_GROUP_COMMIT", "1") != "0",))
    # The paced slices' rate, as a fraction of each configuration's peak (0: none).
    latency_at: float = 0.5
    output: Path | None = None

    @property
    def match_keys(self) -> int:
        return self.keys or self.concurrency


# --- scratch databases and the server process -------------------------------------------


# The scratch databases this process created (reported, so a run can be checked clean).
created_databases: list[str] = []


# A scratch database's comment names the run that owns it, so that a later run can tell
# the databases of a bench that was killed (nothing dropped them) from a live one's.
_OWNER = "kevin bench on {host}, pid {pid}"
_OWNER_PATTERN = re.compile(r"kevin bench on (?P<host>\S+), pid (?P<pid>\d+)\Z")

SCRATCH_DATABASES = """
SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database
WHERE datname LIKE 'kevin\\_bench\\_%'
"""


def _owner_is_gone(comment: str | None) -> bool:
    owner = _OWNER_PATTERN.match(comment or "")
    if owner is None or owner["host"] != socket.gethostname():
        return False  # not ours to judge: another machine's run, or no owner recorded
    return not psutil.pid_exists(int(owner["pid"]))


async def drop_abandoned_databases(server_url: str) -> list[str]:
    """Drop the scratch databases of runs on this host whose process is gone."""
    admin = await asyncpg.connect(to_asyncpg_dsn(server_url))
    try:
        abandoned = [name for name, comment in await admin.fetch(SCRATCH_DATABASES)
                     if _owner_is_gone(comment)]
        for name in abandoned:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
    return abandoned


@contextlib.asynccontextmanager
async def scratch_database(server_url: str, tag: str) -> AsyncIterator[str]:
    """A fresh database at schema head, dropped again on exit whatever happens."""
    name = f"kevin_bench_{uuid.uuid4().hex[:8]}_{tag}"
    created_databases.append(name)
    admin = await asyncpg.connect(to_asyncpg_dsn(server_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        owner = _OWNER.format(host=socket.gethostname(), pid=os.getpid())
        await admin.execute(f"COMMENT ON DATABASE \"{name}\" IS '{owner}'")
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
        return {name: (await service.create_participant(name)).api_key
                for name in (w.SELLER, w.BUYER)}
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


# The backends of the watching connection's database, with when each started: its own
# alone ($1 true), or every other ($1 false).
_BACKENDS = """
SELECT pid, extract(epoch FROM backend_start)::float8 AS started FROM pg_stat_activity
WHERE datname = current_database() AND (pid = pg_backend_pid()) = $1
"""


async def backends_cpu(conn: asyncpg.Connection, own: bool = False) -> dict[int, float] | None:
    """CPU seconds so far of each backend serving ``conn``'s database (``own``: of
    ``conn``'s own backend alone), by pid; None where PostgreSQL does not run on this
    machine (the pid is no postgres process here that started when the backend did)."""
    figures = {}
    for row in await conn.fetch(_BACKENDS, own):
        try:
            process = psutil.Process(row["pid"])
            if process.name() != "postgres" or abs(process.create_time() - row["started"]) > 2:
                return None
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue  # ended since it was listed
        except psutil.Error:
            return None
        figures[row["pid"]] = times.user + times.system
    return figures


def cpu_between(before: dict[int, float] | None,
                after: dict[int, float] | None) -> float | None:
    """The CPU seconds backends spent between two ``backends_cpu`` readings: each one
    listed at the second (one that started between counts from nothing). One that ended
    between is left out, its share with it: the figure is never more than was spent."""
    if before is None or after is None:
        return None
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


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

    def __init__(self, url: str, admin_token: str, log_path: Path, workers: int = 1,
                 group_commit: bool | None = None) -> None:
        self.workers = workers
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        # Group commit as asked, else KEVIN_GROUP_COMMIT passes through:
        # `KEVIN_GROUP_COMMIT=0 kevin bench` measures the service with each write its own
        # transaction.
        group = os.environ.get("KEVIN_GROUP_COMMIT", "1") if group_commit is None \
            else str(int(group_commit))
        self.env = kevin_env(KEVIN_DATABASE_URL=url, KEVIN_ADMIN_TOKEN=admin_token,
                             KEVIN_LOG_FORMAT="json", KEVIN_GROUP_COMMIT=group)
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> ServeProcess:
        log = self.log_path.open("ab")  # noqa: ASYNC230 - opening a local log file
        try:
            self.process = await spawn(
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
    child = await spawn(
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


@dataclass
class Service:
    """One configuration of the service: its own ``kevin serve`` on its own scratch
    database, and the slices measured on it."""

    workers: int
    group_commit: bool
    url: str
    keys: dict[str, str]
    admin_token: str
    server: ServeProcess
    slices: list[dict[str, Any]] = field(default_factory=list)
    paced: list[dict[str, Any]] = field(default_factory=list)
    cpu_s: float = 0.0

    async def load(self, common: dict[str, Any], run_id: str, **paced: Any) -> dict[str, Any]:
        """One slice of the load generator on this service (closed loop, or ``paced``)."""
        return await run_loadgen(
            {**common, **paced, "run_id": run_id, "url": self.server.base,
             "seller_key": self.keys[w.SELLER], "buyer_key": self.keys[w.BUYER],
             "admin_token": self.admin_token, "feed_after": await feed_head(self.url)},
            timeout=common["warmup"] + common["duration"] + 180)

    async def closed_slice(self, common: dict[str, Any], run_id: str) -> None:
        assert self.server.process is not None
        before = tree_figures(self.server.process.pid)
        self.slices.append(await self.load(common, run_id))
        after = tree_figures(self.server.process.pid)
        if before and after:
            self.cpu_s += after["cpu_s"] - before["cpu_s"]


# The oldest transaction holding an xid in any database but the bench's own: the feed
# sequences no commit newer than the oldest transaction still open on the whole server
# (kevin/store/feed_queries.py), so another session's long transaction delays every
# update on the feed, whatever the service does.
OLDEST_OTHER_TRANSACTION = """
SELECT coalesce(max(extract(epoch FROM clock_timestamp() - xact_start)), 0)::float8
FROM pg_stat_activity
WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() AND datname <> ALL($1::text[])
"""


@contextlib.asynccontextmanager
async def other_transactions(url: str) -> AsyncIterator[dict[str, Any]]:
    """Samples, every 50 ms while the block runs, the age of the oldest transaction of
    the server's other sessions; on exit the figures hold the longest and the share of
    samples that found one open longer than TARGET_P99_MS."""
    figures: dict[str, Any] = {}
    conn = await asyncpg.connect(to_asyncpg_dsn(url))
    ages: list[float] = []

    async def sample() -> None:
        while True:
            ages.append(await conn.fetchval(OLDEST_OTHER_TRANSACTION, created_databases))
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    try:
        yield figures
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        await conn.close()
        figures.update(
            longest_s=round(max(ages, default=0.0), 3),
            share_over_target=round(sum(a * 1000 > TARGET_P99_MS for a in ages)
                                    / len(ages), 3) if ages else None)


def _ratio(value: float, to: float) -> float | None:
    return round(value / to, 3) if to else None


def _merged_paced(slices: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Paced slices as one figure: their latencies pooled, the offered rate averaged."""
    merged = _merged(slices, seconds)
    merged.update(
        rate=round(slices[0]["rate"], 1),
        offered_pairs_per_s=round(sum(s["offered_pairs_per_s"] for s in slices)
                                  / len(slices), 1),
        start_lateness_p99_ms=max((s["start_lateness"]["p99_ms"] or 0.0) for s in slices),
        unfinished=sum(s["unfinished"] for s in slices),
        other_transactions={
            "longest_s": max(s["other_transactions"]["longest_s"] for s in slices),
            "share_over_target": round(sum(s["other_transactions"]["share_over_target"] or 0
                                           for s in slices) / len(slices), 3)})
    for key in ("start_lateness", "latencies_s"):
        merged.pop(key, None)
    return merged


async def bench_pairs(server_url: str, options: Options, workdir: Path) -> dict[str, Any]:
    """The ceilings and every service configuration in alternating slices (``rounds`` of
    each, the same length), so that a machine whose speed drifts — a shared one always
    does — tilts all sides alike; the ratios are of the sums. Then, where ``latency_at``,
    ``rounds`` paced slices of each configuration at that fraction of its peak (its
    closed-loop pairs/s just measured), alternating too: the pair latency there."""
    run_id = secrets.token_hex(3)
    common: dict[str, Any] = {"concurrency": options.concurrency, "duration": options.duration,
                              "warmup": options.warmup, "keys": options.match_keys}
    ceilings: list[dict[str, Any]] = []
    minimal: list[dict[str, Any]] = []
    services: list[Service] = []
    with_pgbench = pgbench.pgbench() is not None
    async with contextlib.AsyncExitStack() as stack:
        ceiling_url = await stack.enter_async_context(scratch_database(server_url, "ceiling"))
        minimal_url = await stack.enter_async_context(scratch_database(server_url, "minimal"))
        configurations = [(workers, group) for workers in options.workers
                          for group in options.group_commit]
        for n, (workers, group) in enumerate(configurations):
            url = await stack.enter_async_context(
                scratch_database(server_url, f"service{n}"))
            keys = await create_participants(url)
            admin_token = secrets.token_urlsafe(16)
            server = await stack.enter_async_context(
                ServeProcess(url, admin_token, workdir / f"serve-{n}.log", workers, group))
            services.append(Service(workers, group, url, keys, admin_token, server))
        for r in range(options.rounds):
            if with_pgbench:
                try:
                    minimal.append(await pgbench.run(minimal_url, options.concurrency,
                                                     options.duration))
                except pgbench.PgbenchFailed as e:  # a clean message, servers stopped
                    raise BenchFailed(str(e)) from e
            ceilings.append(await ceiling.run(ceiling_url, **common, run_id=f"{run_id}c{r}"))
            for n, service in enumerate(services):
                await service.closed_slice(common, f"{run_id}s{n}r{r}")
        seconds = options.duration * options.rounds
        peaks = [_merged(s.slices, seconds)["pairs_per_s"] for s in services]
        for r in range(options.rounds if options.latency_at > 0 else 0):
            for n, (service, peak) in enumerate(zip(services, peaks, strict=True)):
                if peak > 0:
                    async with other_transactions(server_url) as others:
                        paced = await service.load(common, f"{run_id}p{n}r{r}", mode="paced",
                                                   rate=options.latency_at * peak)
                    service.paced.append({**paced, "other_transactions": others})
        at_end = [tree_figures(s.server.process.pid) if s.server.process else {}
                  for s in services]
    ceiling_figures = _merged(ceilings, seconds)
    floor = pgbench.merged(minimal) if minimal else None
    rounds: list[dict[str, Any]] = [{"ceiling_pairs_per_s": c["pairs_per_s"]} for c in ceilings]
    for round_figures, slice_ in zip(rounds, minimal, strict=False):
        round_figures["minimal_pairs_per_s"] = slice_["pairs_per_s"]
    measured = []
    for service, figures_at_end in zip(services, at_end, strict=True):
        merged = _merged(service.slices, seconds)
        if figures_at_end:
            # CPU per pair is steadier than pairs/s on a shared machine: the figure to
            # compare when judging a change to the service.
            pairs = merged["pairs"] * (options.warmup + options.duration) / options.duration
            merged["server"] = {
                "rss_mib": figures_at_end["rss_mib"], "processes": figures_at_end["processes"],
                "cpu_s": round(service.cpu_s, 2),
                "cpu_ms_per_pair": round(1000 * service.cpu_s / pairs, 3) if pairs else None}
        by_round = []
        for r, slice_ in enumerate(service.slices):
            entry = {"pairs_per_s": slice_["pairs_per_s"],
                     "ratio": _ratio(slice_["pairs_per_s"], ceilings[r]["pairs_per_s"])}
            if minimal:
                entry["minimal_ratio"] = _ratio(slice_["pairs_per_s"],
                                                minimal[r]["pairs_per_s"])
            by_round.append(entry)
        measured.append({
            "workers": service.workers, "group_commit": service.group_commit,
            "service": merged,
            "ratio": _ratio(merged["pairs_per_s"], ceiling_figures["pairs_per_s"]),
            "minimal_ratio": _ratio(merged["pairs_per_s"], floor["pairs_per_s"])
            if floor else None,
            "rounds": by_round,
            "paced": _merged_paced(service.paced, options.duration * len(service.paced))
            if service.paced else None})
    return {"ceiling": ceiling_figures, "minimal_ceiling": floor, "rounds": rounds,
            "services": measured, "latency_at": options.latency_at,
            "targets": {"minimal_ratio": TARGET_MINIMAL_RATIO, "paced_p99_ms": TARGET_P99_MS}}


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
        for name in await drop_abandoned_databases(url):
            print(f"dropped {name}, left behind by a bench that was killed", flush=True)
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


def _verdict(met: bool | None) -> str:
    return "-" if met is None else ("met" if met else "NOT met")


def pairs_text(figures: dict[str, Any], options: Options) -> str:
    """The figures as lines: each service configuration against the minimal ceiling
    (pgbench, where it is on PATH) and the asyncpg one (the engine's own statements), and
    its pair latency at a fraction of its peak, with the targets."""
    c, m = figures["ceiling"], figures.get("minimal_ceiling")
    lines = [
        f"pairs: {options.concurrency} clients, {options.match_keys} match keys; "
        f"{options.rounds} rounds of the ceilings then each service configuration, each "
        f"{options.duration:g} s measured after {options.warmup:g} s warm-up",
    ]
    if m:
        lines.append(
            f"  minimal ceiling {m['pairs_per_s']:>8.1f} pairs/s   (pgbench, {m['script']}: "
            f"the least SQL a pair needs)   by round "
            + ", ".join(f"{r['minimal_pairs_per_s']}" for r in figures["rounds"]))
    else:
        lines.append("  minimal ceiling: pgbench is not on PATH (it ships with PostgreSQL): "
                     "ratios are to the asyncpg ceiling only")
    lines.append(
        f"  ceiling         {c['pairs_per_s']:>8.1f} pairs/s   p50 {_ms(c['latency']['p50_ms'])}"
        f"   p99 {_ms(c['latency']['p99_ms'])}   ({c['latency_is']}; the engine's statements "
        f"over asyncpg)")
    if c.get("errors"):
        lines.append(f"  ceiling errors: {c['errors']}")
    for config in figures["services"]:
        s = config["service"]
        lines.append(
            f"  kevin serve --workers {config['workers']}, group commit "
            f"{'on' if config['group_commit'] else 'off'}: {s['pairs_per_s']:.1f} pairs/s"
            f" closed loop, p50 {_ms(s['latency']['p50_ms'])} p99 {_ms(s['latency']['p99_ms'])}"
            + (f"; server {s['server']['cpu_ms_per_pair']} CPU ms per pair, "
               f"RSS {s['server']['rss_mib']} MiB" if "server" in s else ""))
        if config["minimal_ratio"] is not None:
            met = config["minimal_ratio"] >= TARGET_MINIMAL_RATIO
            lines.append(
                f"    {config['minimal_ratio']} x minimal ceiling (target >= "
                f"{TARGET_MINIMAL_RATIO}: {_verdict(met)})"
                f"   by round " + ", ".join(f"{r['minimal_ratio']}" for r in config["rounds"]))
        lines.append(f"    {config['ratio']} x ceiling   by round "
                     + ", ".join(f"{r['ratio']}" for r in config["rounds"]))
        p = config["paced"]
        if p is not None:
            p99 = p["latency"]["p99_ms"]
            lines.append(
                f"    paced at {figures['latency_at']:g} x its peak: {p['rate']:.1f} pairs/s "
                f"offered (open loop), {p['pairs']} pairs; {p['latency_is']}: p50 "
                f"{_ms(p['latency']['p50_ms'])} p99 {_ms(p99)} max {_ms(p['latency']['max_ms'])}"
                f" (target p99 < {TARGET_P99_MS:g} ms: "
                f"{_verdict(None if p99 is None else p99 < TARGET_P99_MS)})")
            if p.get("pairs_not_seen_on_feed") or p.get("unfinished") or p.get("errors"):
                lines.append(f"    paced: {p['pairs_not_seen_on_feed']} pairs not seen on the "
                             f"feed, {p['unfinished']} unfinished, errors {p['errors']}")
            others = p["other_transactions"]
            if others["longest_s"] * 1000 > TARGET_P99_MS:
                lines.append(
                    f"    paced: other sessions on this PostgreSQL server held transactions "
                    f"open up to {others['longest_s']:.1f} s ({others['share_over_target']:.0%}"
                    f" of samples over {TARGET_P99_MS:g} ms): the feed sequences no commit "
                    f"newer than the oldest, so they delay it")
            if p["start_lateness_p99_ms"] > 5:
                lines.append(f"    paced: the generator started pairs up to "
                             f"{p['start_lateness_p99_ms']:.1f} ms late (p99): less was offered")
        if s.get("errors"):
            lines.append(f"    service errors by status: {s['errors']}")
    return "\n".join(lines)
