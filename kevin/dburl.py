"""Database URLs as users write them, in the forms each driver wants."""

from __future__ import annotations

import urllib.parse


def to_sqlalchemy_url(url: str) -> str:
    """``postgresql://…`` (TCP or ``?host=/socket/dir``) → the asyncpg dialect's URL."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix):]
    raise ValueError(f"not a PostgreSQL URL: {url!r}")


def to_asyncpg_dsn(url: str) -> str:
    """Any accepted spelling → ``postgresql://…`` for asyncpg."""
    for prefix in ("postgresql+asyncpg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix):]
    if not url.startswith("postgresql://"):
        raise ValueError(f"not a PostgreSQL URL: {url!r}")
    return url


def with_database(url: str, database: str) -> str:
    """The same server and credentials, another database name."""
    head, sep, query = url.partition("?")
    scheme, _, rest = head.partition("://")
    authority, _, _ = rest.partition("/")
    return f"{scheme}://{authority}/{database}{sep}{query}"


def server_settings(url: str, application_name: str) -> dict[str, str]:
    """The session settings Kevin gives its connections: ``application_name``, which
    names the connection in pg_stat_activity and in the server's log — unless the URL
    sets one itself (``?application_name=…``), which is then kept."""
    query = urllib.parse.parse_qs(url.partition("?")[2])
    return {} if "application_name" in query else {"application_name": application_name}
