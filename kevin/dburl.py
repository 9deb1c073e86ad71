"""Database URLs as users write them, in the forms each driver wants."""

from __future__ import annotations


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
