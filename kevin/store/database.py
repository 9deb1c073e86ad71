"""Connecting to PostgreSQL: the pool, migrations, and the edge where connectivity
failures become ``DatabaseUnavailable`` (the embedded server: kevin.store.embedded)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import structlog

import kevin
from kevin import jsoncodec
from kevin.dburl import server_settings, to_asyncpg_dsn
from kevin.domain.errors import DatabaseUnavailable, ValidationFailed

log = structlog.get_logger(__name__)

# Errors that mean "the database cannot be reached right now", not "your request is bad".
CONNECTIVITY_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
)

ACQUIRE_TIMEOUT = 5.0
# Every statement Kevin's requests run takes milliseconds; one that takes seconds means a
# hung or partitioned database, and the request should answer 503, not hang for a minute.
# Long jobs (archive, replay, bulk loads) pass their own ``timeout=`` or pool setting.
COMMAND_TIMEOUT = 5.0


# A statement whose client gave up must not run on. On a timeout Kevin terminates the
# connection at once (_dropped_if_broken), which also drops asyncpg's own cancel request;
# the backend would run the statement to its end, holding its locks — for a sequencer
# round, the sequencer's lead too, so no process could take over and the feed would stand
# still. With this the backend looks for its client every second and, gone, stops
# (PostgreSQL 14+; a server on a system without the kernel events it needs refuses the
# setting, and goes without).
CLIENT_CHECK = "SET client_connection_check_interval = '1s'"


def _json_column(text: str) -> Any:
    """A json/jsonb value read (kevin.jsoncodec.loads). Most rows' attributes and
    mismatch lists are empty: those need no parser (a replay reads every version)."""
    if text == "{}":
        return {}
    if text == "[]":
        return []
    return jsoncodec.loads(text)


async def _init_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name, encoder=jsoncodec.dumps_str, decoder=_json_column, schema="pg_catalog"
        )
    if conn.get_server_version() >= (14, 0):
        with contextlib.suppress(asyncpg.InvalidParameterValueError):
            await conn.execute(CLIENT_CHECK)


async def _release_connection(conn: asyncpg.Connection) -> None:
    """Called when a connection goes back to the pool, after asyncpg has rolled back any
    open transaction and dropped its listeners. asyncpg's default then sends RESET ALL /
    UNLISTEN * / pg_advisory_unlock_all() — a round trip on every release, a measurable
    share of a submission. Kevin leaves no session state on pooled connections to reset:
    its advisory locks and set_config() calls are transaction-scoped, and the one LISTEN
    (the feed watch) is removed by its owner before the connection is released."""


async def create_pool(
    url: str, *, min_size: int = 2, max_size: int = 10,
    command_timeout: float | None = COMMAND_TIMEOUT, application_name: str = "kevin",
) -> asyncpg.Pool:
    try:
        return await asyncpg.create_pool(
            to_asyncpg_dsn(url), min_size=min_size, max_size=max_size, init=_init_connection,
            reset=_release_connection, command_timeout=command_timeout,
            timeout=ACQUIRE_TIMEOUT, server_settings=server_settings(url, application_name),
        )
    except CONNECTIVITY_ERRORS as e:
        raise DatabaseUnavailable(f"cannot connect to the database: {e}") from e


# Callbacks run after each transaction() on a pool commits (the feed sequencer's wake-up:
# in-process, so writers need no NOTIFY, whose commit-time lock would serialise them).
# Keyed by id(pool): asyncpg pools take no weak references; every hook is removed again
# by its owner (the app's cleanup), so no entry outlives its pool.
_commit_hooks: dict[int, list[Callable[[], None]]] = {}


def on_commit(pool: asyncpg.Pool, callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` (cheap, never raising) after every committed transaction() on
    ``pool``; returns the function that removes it again."""
    hooks = _commit_hooks.setdefault(id(pool), [])
    hooks.append(callback)

    def remove() -> None:
        if callback in hooks:
            hooks.remove(callback)
        if not hooks and _commit_hooks.get(id(pool)) is hooks:
            del _commit_hooks[id(pool)]

    return remove


@contextlib.asynccontextmanager
async def transaction(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """One connection, one transaction; a lost database surfaces as DatabaseUnavailable."""
    try:
        async with pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
            with _dropped_if_broken(conn):
                tx = conn.transaction()
                await tx.start()
                try:
                    yield conn
                except CONNECTIVITY_ERRORS:
                    raise  # no ROLLBACK on a broken connection: it is dropped instead
                except BaseException:
                    await tx.rollback()
                    raise
                await tx.commit()
    except CONNECTIVITY_ERRORS as e:
        raise DatabaseUnavailable() from e
    except UNSTORABLE_TEXT as e:
        raise _unstorable(e) from e
    for hook in _commit_hooks.get(id(pool), ()):
        hook()


@contextlib.asynccontextmanager
async def connection(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """One connection, autocommit reads; a lost database surfaces as DatabaseUnavailable."""
    try:
        async with pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
            with _dropped_if_broken(conn):
                yield conn
    except CONNECTIVITY_ERRORS as e:
        raise DatabaseUnavailable() from e
    except UNSTORABLE_TEXT as e:
        raise _unstorable(e) from e


# Text PostgreSQL refuses to store or compare: a NUL character ("\x00" in text, "\u0000"
# in jsonb). Input decides this, so it is the request's fault (422), wherever the text
# came from — a body field, an attribute, a query parameter.
UNSTORABLE_TEXT: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.CharacterNotInRepertoireError,
    asyncpg.exceptions.UntranslatableCharacterError,
)


def _unstorable(error: BaseException) -> ValidationFailed:
    return ValidationFailed(
        "the request contains text that cannot be stored (a NUL character?)",
        [{"field": "request", "message": str(error).splitlines()[0]}])


@contextlib.contextmanager
def _dropped_if_broken(conn: asyncpg.Connection) -> Iterator[None]:
    """On a connectivity error or a timeout, terminate the connection before anything else
    touches it. Otherwise a ROLLBACK, then the pool's wait for the query cancel and its
    reset, would each wait out a timeout against a database that does not answer: a request
    would take three timeouts to say 503 instead of one. The pool replaces the connection
    when it next needs one."""
    try:
        yield
    except CONNECTIVITY_ERRORS:
        terminate(conn)
        raise


def terminate(conn: asyncpg.Connection) -> None:
    """Close a pooled connection at once, whatever state it is in. One the server closed
    under us is already detached from its pool proxy, and asyncpg refuses the call
    (InterfaceError): raised from a cleanup, that error would replace the one in flight
    — a cancel once became a retry that hung a shutdown."""
    with contextlib.suppress(asyncpg.InterfaceError):
        conn.terminate()


# --- migrations -----------------------------------------------------------------------


_MIGRATING = threading.Lock()


def migrations_dir() -> Path:
    """alembic/ in a checkout; kevin/migrations inside an installed wheel."""
    package = Path(kevin.__file__).parent
    for candidate in (package / "migrations", package.parent / "alembic"):
        if (candidate / "env.py").exists():
            return candidate
    raise RuntimeError("Kevin's migration scripts are missing from this installation")


def alembic_config(url: str):  # noqa: ANN201 - alembic.config.Config, imported lazily
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["url"] = url
    return config


@functools.cache
def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("postgresql://unused")).get_current_head()
    assert head is not None
    return head


async def migrate(url: str, revision: str = "head", *, downgrade: bool = False) -> None:
    """Bring the schema to ``revision`` (alembic runs its own event loop, so in a thread)."""
    from alembic import command

    step = command.downgrade if downgrade else command.upgrade

    def run() -> None:
        with _MIGRATING:  # alembic's context is process-global: one migration at a time
            step(alembic_config(url), revision)

    try:
        await asyncio.to_thread(run)
    except CONNECTIVITY_ERRORS as e:
        raise DatabaseUnavailable(f"cannot migrate the database: {e}") from e


async def schema_revision(conn: asyncpg.Connection) -> str | None:
    try:
        return await conn.fetchval("SELECT version_num FROM alembic_version")
    except asyncpg.exceptions.UndefinedTableError:
        return None
