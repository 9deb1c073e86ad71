"""``kevin serve | migrate | db-url | participant | check | archive | replay | …`` — the CLI.

Every command exits non-zero with a one-line reason on stderr when it cannot do its job.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import re
import socket
import sys
from collections.abc import Callable, Coroutine
from datetime import date, datetime
from pathlib import Path
from typing import Any, NoReturn

import asyncpg
import structlog
from aiohttp import web

from kevin import logs
from kevin.api.app import create_app
from kevin.api.server import AppRunner
from kevin.config import MAX_WORKERS, ConfigError, Settings
from kevin.consumer import command as consume_command
from kevin.domain.errors import KevinError
from kevin.engine.service import TradeService
from kevin.feed import command as relay_command
from kevin.lifecycle import Health, cancel_and_wait, stop_signals
from kevin.runtime import Database, EmbeddedPostgresLost, database_url, open_database
from kevin.store import database
from kevin.store.embedded import EmbeddedPostgres
from kevin.store.replica import Reads

log = structlog.get_logger("kevin")


class CommandFailed(Exception):
    """A command could not do its job; the message is the one line the user sees."""


def tune_garbage_collector() -> None:
    """Objects alive after start-up (modules, the app) move out of the collector's sight,
    and young-generation collections run every 50,000 allocations instead of 700: a
    10,000-line batch allocates millions of short-lived objects, and with the default
    thresholds the collector would spend much of the batch's CPU walking objects that
    are about to die anyway (docs/performance.md, change 7)."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


async def serve(settings: Settings, host: str, port: int, workers: int,
                listen_fd: int | None = None) -> None:
    """One process serving on host:port; or, with ``workers`` > 1, a supervisor of that
    many (kevin.workers); or, with ``listen_fd``, one of a supervisor's ``workers``."""
    if workers > 1 and listen_fd is None:
        from kevin.workers import WorkersFailed, supervise

        try:
            await supervise(settings, host, port, workers)
        except WorkersFailed as e:
            raise CommandFailed(str(e)) from e
        return
    # A worker's supervisor has migrated already (and runs any embedded PostgreSQL).
    async with open_database(settings, migrate=listen_fd is None) as db:
        pool = await database.create_pool(db.url, application_name="kevin serve")
        # No connection at start (min_size 0): a standby that is down costs its reads a
        # fallback to the primary, never the server's start.
        replica = (await database.create_pool(settings.read_database_url, min_size=0,
                                              application_name="kevin serve")
                   if settings.read_database_url else None)
        health = Health()
        try:
            reads = Reads(pool, replica, max_lag=settings.read_max_lag)
            service = TradeService(pool, reads, group_commit=settings.group_commit,
                                   processes=workers if listen_fd is not None else 1)
            app = create_app(service, settings.admin_tokens(), health=health)
            tune_garbage_collector()
            runner = AppRunner(app, head_timeout=settings.request_head_timeout,
                               access_log=None, handle_signals=False,
                               shutdown_timeout=HANDLER_GRACE)
            await runner.setup()
            try:
                site: web.BaseSite
                if listen_fd is None:
                    site = web.TCPSite(runner, host, port, reuse_address=True)
                else:
                    site = web.SockSite(runner, socket.socket(fileno=listen_fd))
                try:
                    await site.start()
                except OSError as e:
                    raise CommandFailed(f"cannot listen on {host}:{port}: {e.strerror}") from e
                if listen_fd is None:
                    log.info("serving", url=f"http://{host}:{port}",
                             database="embedded" if not settings.database_url else "configured")
                else:
                    log.info("worker ready", processes=workers)
                lost = await _wait_for_stop(db, health)
                log.info("shutting down")
            finally:
                await runner.cleanup()
        finally:
            if replica is not None:
                await _close_pool(replica)
            await _close_pool(pool)
    if lost is not None:
        raise CommandFailed(str(lost))


# SIGTERM must end the process within 10 s. aiohttp waits HANDLER_GRACE for in-flight
# requests, then cancels their request and waits HANDLER_GRACE again before cancelling the
# handler: a slow request gets 7 s to finish, a stuck one is cut off after 7 s, and the
# pool and an embedded PostgreSQL have the remaining seconds to close.
HANDLER_GRACE = 3.5
POOL_CLOSE_TIMEOUT = 1.0


async def _close_pool(pool: asyncpg.Pool) -> None:
    """Close gracefully; a connection still held by a cancelled task is terminated."""
    try:
        await asyncio.wait_for(pool.close(), POOL_CLOSE_TIMEOUT)
    except TimeoutError:
        log.warning("pool did not close in time; terminating its connections")
        pool.terminate()


async def _wait_for_stop(db: Database, health: Health) -> EmbeddedPostgresLost | None:
    """Until SIGINT or SIGTERM, or until a worker's supervisor is gone (None); or until
    the embedded PostgreSQL this process runs stopped for good (why)."""
    from kevin.workers import watch_supervisor

    with stop_signals() as stop:
        stopped = asyncio.create_task(stop.wait(), name="stop")
        supervisor = asyncio.create_task(watch_supervisor(stop), name="supervisor")
        keeper = asyncio.create_task(db.keep_embedded_running(health), name="embedded")
        try:
            await asyncio.wait([stopped, keeper], return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait([stopped, supervisor])
            if not keeper.done():
                await cancel_and_wait([keeper])
    if keeper.cancelled():
        return None
    try:
        keeper.result()
    except EmbeddedPostgresLost as e:
        return e
    return None


async def migrate(settings: Settings) -> None:
    async with database_url(settings) as url:
        print(f"schema at {database.head_revision()} on {_safe(url)}")


async def print_database_url(settings: Settings) -> None:
    """KEVIN_DATABASE_URL, or the URL of the embedded database running in KEVIN_DATA_DIR
    (for psql, `kevin consume --database-url`, or a command pointed at it). Starts
    nothing: a server started here would outlive the command with no one to stop it."""
    if settings.database_url:
        print(settings.database_url)
        return
    url = EmbeddedPostgres(settings.data_dir).running_url()
    if url is None:
        raise CommandFailed(f"no embedded PostgreSQL is running in {settings.data_dir} "
                            "(start `kevin serve`, or set KEVIN_DATABASE_URL)")
    print(url)


def _key_label(label: str | None) -> str | None:
    """``--label`` as the API takes it (kevin.domain.notes.KeyLabel)."""
    from pydantic import ValidationError

    from kevin.domain.participants import ApiKeyCreate

    try:
        return ApiKeyCreate(label=label).label
    except ValidationError:
        raise CommandFailed(f"invalid key label {label!r}: 1 to 64 characters, "
                            "no control characters") from None


async def add_participant(settings: Settings, name: str, label: str | None = None) -> None:
    from pydantic import ValidationError

    from kevin.domain.models import ParticipantCreate

    try:
        ParticipantCreate(name=name)
    except ValidationError:
        raise CommandFailed(f"invalid participant name {name!r}: use [A-Z0-9_]{{1,32}}") from None
    label = _key_label(label)
    async with database_url(settings) as url:
        pool = await database.create_pool(url, min_size=1, max_size=1,
                                          application_name="kevin participant add")
        try:
            print((await TradeService(pool).create_participant(name, label)).api_key)
        finally:
            await pool.close()


async def participant_command(settings: Settings, args: argparse.Namespace) -> None:
    if args.action == "add":
        await add_participant(settings, args.name, args.label)
        return
    from kevin.domain import errors
    from kevin.domain.keys import KEY_ID_PATTERN, REVOKED_EVERYWHERE_WITHIN_S

    if args.action == "revoke-key" and not re.fullmatch(KEY_ID_PATTERN, args.key_id):
        raise CommandFailed(f"{args.key_id!r} is no key id: 16 hex digits, as `kevin "
                            f"participant keys {args.name}` lists them")
    async with database_url(settings) as url:
        pool = await database.create_pool(url, min_size=1, max_size=1,
                                          application_name=f"kevin participant {args.action}")
        try:
            service = TradeService(pool)
            if args.action == "add-key":
                created = await service.add_key(args.name, _key_label(args.label))
                print(f"{created.api_key}\nkey id {created.key_id}")
            elif args.action == "keys":
                for key in await service.keys(args.name):
                    revoked = (f"revoked {key.revoked_at.isoformat()}" if key.revoked_at
                               else "valid")
                    used = (f"last used {key.last_used_at.isoformat()}" if key.last_used_at
                            else "never used")
                    label = f"  {key.label}" if key.label else ""
                    print(f"{key.key_id}  issued {key.created_at.isoformat()}  {used}  "
                          f"{revoked}{label}")
            else:
                key = await service.revoke_key(args.name, args.key_id)
                assert key.revoked_at is not None
                print(f"{key.key_id} revoked {key.revoked_at.isoformat()} (every Kevin "
                      f"process refuses it once told, within {REVOKED_EVERYWHERE_WITHIN_S:g}"
                      " s at the latest)")
        except errors.NotFound as e:
            raise CommandFailed(e.message) from None
        finally:
            await pool.close()


async def check_invariants(settings: Settings, limit: int) -> None:
    from kevin.check import check

    # No migration: a check reads a live database as it is and changes nothing.
    async with database_url(settings, migrate=False) as url:
        report = await check(url, limit)
    print(report.text())
    if not report.ok:
        raise CheckFailed()


async def stp_report(settings: Settings, args: argparse.Namespace) -> None:
    from kevin import jsoncodec
    from kevin.domain.reports import StpQuery, csv_text
    from kevin.engine.reports import Reports

    query = StpQuery.of(args.start, args.end, args.participant, args.group_by, args.as_of)
    async with database_url(settings, migrate=False) as url:
        pool = await database.create_pool(url, min_size=1, max_size=1,
                                          application_name="kevin report stp")
        try:
            report = await Reports(Reads(pool)).stp(query)
        finally:
            await _close_pool(pool)
    if args.csv:
        sys.stdout.write(csv_text(report))
    else:
        print(jsoncodec.dumps(report.model_dump(mode="python")).decode())


async def bench(settings: Settings, args: argparse.Namespace) -> None:
    from pathlib import Path

    from kevin.bench.runner import BenchFailed, Options
    from kevin.bench.runner import run as run_bench

    options = Options(mode=args.mode, concurrency=args.concurrency, keys=args.keys,
                      warmup=args.warmup, duration=args.duration, rounds=args.rounds,
                      batch_lines=args.batch_lines, batch_requests=args.batch_requests,
                      workers=args.workers, latency_at=args.latency_at,
                      **({"group_commit": _GROUP_COMMIT[args.group_commit]}
                         if args.group_commit else {}),
                      output=Path(args.output) if args.output else None)
    try:
        await run_bench(settings, options)
    except BenchFailed as e:
        raise CommandFailed(str(e)) from e


class CheckFailed(Exception):
    """kevin check found violations; the report is already printed."""


def _date(text: str) -> date:
    """An argparse type: a date, YYYY-MM-DD."""
    try:
        return date.fromisoformat(text) if len(text) == 10 else _not_a_date(text)
    except ValueError:
        return _not_a_date(text)


def _not_a_date(text: str) -> NoReturn:
    raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)")


def _instant(text: str) -> datetime:
    """An argparse type: an RFC 3339 timestamp with a zone."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an RFC 3339 timestamp with a zone (e.g. 2026-11-21T10:00:00Z)")
    return value


def _positive(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def _worker_count(text: str) -> int:
    count = _positive(text)
    if count > MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"at most {MAX_WORKERS} workers")
    return count


_GROUP_COMMIT = {"on": (True,), "off": (False,), "both": (True, False)}


def _worker_counts(text: str) -> tuple[int, ...]:
    return tuple(_worker_count(part.strip()) for part in text.split(","))


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 0 to 1")
    return value


async def archive_versions(settings: Settings, before: datetime, batch_size: int) -> None:
    from kevin.engine.archive import ArchiveReport, archive

    async def progress(report: ArchiveReport) -> None:
        print(f"batch {report.batches}: {report.moved} versions archived so far", flush=True)

    async with database_url(settings) as url:
        pool = await database.create_pool(url, min_size=1, max_size=1,
                                          application_name="kevin archive")
        try:
            report = await archive(pool, before, batch_size, after_batch=progress)
        finally:
            await pool.close()
    print(f"archived {report.moved} versions recorded before {before.isoformat()} "
          f"in {report.batches} batches", flush=True)


async def _json_file(path: str) -> object:
    from kevin import jsoncodec

    try:
        return jsoncodec.loads(await asyncio.to_thread(Path(path).read_bytes))
    except OSError as e:
        raise CommandFailed(f"cannot read {path}: {e.strerror}") from None
    except ValueError as e:
        raise CommandFailed(f"{path} is not valid JSON: {e}") from None


async def replay(settings: Settings, since: datetime, rules_file: str | None,
                 apply: bool, profiles_file: str | None = None) -> None:
    from pydantic import ValidationError

    from kevin.api.http import validation_details
    from kevin.domain.replay import ReplayRequest
    from kevin.engine.replay import Replayer

    rules = await _json_file(rules_file) if rules_file is not None else {}
    profiles = await _json_file(profiles_file) if profiles_file is not None else {}
    try:
        request = ReplayRequest.model_validate({"since": since, "rules": rules,
                                                "profiles": profiles, "apply": apply})
    except ValidationError as e:
        first = validation_details(e)[0]
        source = profiles_file if first["field"].startswith("profiles") else rules_file
        raise CommandFailed(f"{source}: {first['field']}: {first['message']}") from None
    tune_garbage_collector()  # a replay holds as many objects as a large batch
    async with database_url(settings) as url:
        pool = await database.create_pool(url, min_size=1, max_size=2,
                                          application_name="kevin replay")
        try:
            result = await Replayer(pool).replay(request.since, request.rules,
                                                 apply=request.apply, actor="cli",
                                                 profiles=request.profiles)
        finally:
            await pool.close()
    from kevin import jsoncodec

    sys.stdout.write(jsoncodec.dumps(result.model_dump(mode="python")).decode() + "\n")


def _safe(url: str) -> str:
    """A URL fit for output: no password."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    return f"{scheme}{sep}{userinfo}{at}{hostpart}"


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments fail like everything else: one line on stderr, no usage block
    (argparse's exit status 2 is kept). Subcommand parsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="kevin", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve_p = commands.add_parser("serve", help="run the HTTP service (migrates first)")
    serve_p.add_argument("--host", help="listen address (KEVIN_HOST, default 127.0.0.1)")
    serve_p.add_argument("--port", type=int, help="listen port (KEVIN_PORT, default 8080)")
    serve_p.add_argument("--workers", type=_worker_count, metavar="N",
                         help="worker processes sharing the port (KEVIN_WORKERS, default 1; "
                              "one per core is the usual choice)")
    # A supervisor's worker: serve on this inherited, already listening socket.
    serve_p.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)
    commands.add_parser("migrate", help="bring the schema to head and exit")
    commands.add_parser(
        "db-url", help="print the database URL: KEVIN_DATABASE_URL, or the running "
                       "embedded database's")
    participant_p = commands.add_parser("participant", help="manage participants")
    participant_cmds = participant_p.add_subparsers(dest="action", required=True, metavar="ACTION")
    add_p = participant_cmds.add_parser("add", help="create a participant and print its API key")
    add_p.add_argument("name", help="participant name, [A-Z0-9_]{1,32}")
    label_help = ("whom the key is for (a person, a system): the author of the notes it "
                  "writes, listed with the keys")
    add_p.add_argument("--label", help=label_help)
    add_key_p = participant_cmds.add_parser(
        "add-key", help="issue another API key for a participant and print it (its other "
                        "keys stay valid)")
    add_key_p.add_argument("name", help="the participant")
    add_key_p.add_argument("--label", help=label_help)
    keys_p = participant_cmds.add_parser(
        "keys", help="list a participant's keys: key id, issued, last used, revoked, label "
                     "(never the keys)")
    keys_p.add_argument("name", help="the participant")
    revoke_p = participant_cmds.add_parser("revoke-key", help="revoke one of a participant's keys")
    revoke_p.add_argument("name", help="the participant")
    revoke_p.add_argument("key_id", help="the key's id, as `keys` lists it")
    check_p = commands.add_parser(
        "check", help="verify the invariants (docs/design.md 1-6, 8-11) on the live database")
    check_p.add_argument("--limit", type=int, default=100,
                         help="report at most this many violations per invariant")
    archive_p = commands.add_parser(
        "archive", help="move non-latest versions recorded before T to trades_archive")
    archive_p.add_argument("--before", required=True, type=_instant, metavar="T",
                           help="RFC 3339 timestamp with a zone; versions recorded before it")
    archive_p.add_argument("--batch-size", type=_positive, default=5_000, metavar="N",
                           help="versions per transaction (default 5000)")
    bench_p = commands.add_parser(
        "bench", help="measure the service against a raw-PostgreSQL ceiling (scratch databases)")
    bench_p.add_argument("mode", nargs="?", choices=("pairs", "batch", "all"), default="all",
                         help="matched pairs over HTTP, bulk ingest, or both (default)")
    bench_p.add_argument("--concurrency", type=int, default=16,
                         help="clients / connections (default 16)")
    bench_p.add_argument("--keys", type=int, default=0,
                         help="distinct match keys (default: one per client)")
    bench_p.add_argument("--warmup", type=float, default=1.0,
                         help="seconds not measured, per slice (default 1)")
    bench_p.add_argument("--duration", type=float, default=5.0,
                         help="seconds measured, per slice (default 5)")
    bench_p.add_argument("--rounds", type=_positive, default=3,
                         help="alternating slices of the ceilings and the service (default 3; "
                              "batch: at most one a sell-and-buy pair of requests)")
    bench_p.add_argument("--batch-lines", type=int, default=10_000,
                         help="lines per POST /v1/trades/batch (at most 10,000)")
    bench_p.add_argument("--batch-requests", type=int, default=6,
                         help="batch requests per run")
    bench_p.add_argument("--workers", type=_worker_counts, default=(1, 2), metavar="N[,N...]",
                         help="pairs: one service configuration per kevin serve --workers "
                              "count, measured in alternating rounds (default 1,2); batch: "
                              "the largest")
    bench_p.add_argument("--group-commit", choices=tuple(_GROUP_COMMIT),
                         help="pairs: each configuration with group commit on, off, or both "
                              "(default: as KEVIN_GROUP_COMMIT, on)")
    bench_p.add_argument("--latency-at", type=_fraction, default=0.5, metavar="F",
                         help="pairs: time each configuration's pairs in paced (open-loop) "
                              "slices at F x its peak pairs/s (default 0.5; 0: none)")
    bench_p.add_argument("--output", metavar="FILE", help="write the figures as JSON")
    replay_p = commands.add_parser(
        "replay", help="re-run matching since T under other rules; --apply writes it")
    replay_p.add_argument("--since", required=True, type=_instant, metavar="T",
                          help="RFC 3339 timestamp with a zone")
    replay_p.add_argument("--rules", metavar="FILE",
                          help='JSON {"PRODUCT": {rules}}; default: every product active '
                               "since T, under the stored rules in force at each moment")
    replay_p.add_argument("--profiles", metavar="FILE",
                          help='JSON {"NAME": {profile}}: replaces the stored profiles of '
                               "the pairs it names")
    replay_p.add_argument("--apply", action="store_true",
                          help="write the changes (reason replayed); default: a dry run")
    report_p = commands.add_parser("report", help="reports over the versions")
    reports = report_p.add_subparsers(dest="report", required=True)
    stp_p = reports.add_parser("stp", help="the straight-through-processing report")
    stp_p.add_argument("--from", dest="start", required=True, type=_date, metavar="DATE",
                       help="the first trade date (YYYY-MM-DD)")
    stp_p.add_argument("--to", dest="end", required=True, type=_date, metavar="DATE",
                       help="the last trade date, inclusive")
    stp_p.add_argument("--group-by", choices=("counterparty", "product"))
    stp_p.add_argument("--participant", help="one participant's trades (default: all)")
    stp_p.add_argument("--as-of", type=_instant, metavar="T",
                       help="the report as it read at T (RFC 3339 with a zone)")
    stp_p.add_argument("--csv", action="store_true", help="CSV instead of JSON")
    consume_command.add_parser(commands)
    relay_command.add_parser(commands)
    return parser


def run(args: argparse.Namespace, settings: Settings) -> Coroutine[Any, Any, None]:
    commands: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
        "serve": lambda: serve(settings, args.host or settings.host, args.port or settings.port,
                               args.workers or settings.workers, args.listen_fd),
        "migrate": lambda: migrate(settings),
        "db-url": lambda: print_database_url(settings),
        "participant": lambda: participant_command(settings, args),
        "check": lambda: check_invariants(settings, args.limit),
        "archive": lambda: archive_versions(settings, args.before, args.batch_size),
        "replay": lambda: replay(settings, args.since, args.rules, args.apply,
                                 args.profiles),
        "bench": lambda: bench(settings, args),
        "report": lambda: stp_report(settings, args),
        "consume": lambda: _feed_client(consume_command.consume(args)),
        "relay": lambda: relay_command.relay(settings, args),
    }
    return commands[args.command]()


async def _feed_client(command: Coroutine[Any, Any, None]) -> None:
    """The feed's client commands report their own one-line failures."""
    from kevin.consumer.command import ConsumeFailed

    try:
        await command
    except ConsumeFailed as e:
        raise CommandFailed(str(e)) from e


def run_event_loop(main_coroutine: Coroutine[Any, Any, None]) -> None:
    """uvloop where it is installed: its transports cost less per socket write and read,
    a submission's largest single cost (docs/performance.md, change 3)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        asyncio.run(main_coroutine)
        return
    uvloop.run(main_coroutine)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        # The bench prints its figures; what its own scratch databases' setup logs
        # (participants created, say) would only be noise between them.
        logs.configure(settings.log_format, worker=getattr(args, "listen_fd", None) is not None,
                       secrets=[settings.admin_token, settings.admin_token_previous],
                       level=logging.WARNING if args.command == "bench" else logging.INFO)
        run_event_loop(run(args, settings))
    except CheckFailed:
        return 1
    except (CommandFailed, ConfigError) as e:
        print(f"kevin: {e}", file=sys.stderr)
        return 1
    except KevinError as e:
        print(f"kevin: {e.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # the last line of defence: one line, never a bare traceback
        print(f"kevin: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
