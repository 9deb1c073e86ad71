"""Settings from the environment (the README's Configuration section, docs/api.md)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from kevin.domain.keys import AdminTokens

MAX_WORKERS = 64


class ConfigError(Exception):
    """A setting has a value Kevin cannot use."""


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    data_dir: Path
    host: str
    port: int
    admin_token: str | None
    log_format: str
    # While the admin's clients move to a new KEVIN_ADMIN_TOKEN, the one before it is
    # still accepted (KEVIN_ADMIN_TOKEN_PREVIOUS); unset once they have.
    admin_token_previous: str | None = None
    workers: int = 1
    request_head_timeout: float = 10.0  # seconds a connection has to send a request head
    # A hot standby of the database for reads (kevin.store.replica), and how far behind
    # the primary it may be, in seconds, before its reads go to the primary instead.
    read_database_url: str | None = None
    read_max_lag: float = 5.0
    # Concurrent single writes decided and written in one transaction
    # (kevin.engine.group_commit); off: each its own transaction.
    group_commit: bool = True

    def admin_tokens(self) -> AdminTokens:
        return AdminTokens.of(self.admin_token, self.admin_token_previous)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        port_text = env.get("KEVIN_PORT", "8080")
        try:
            port = int(port_text)
        except ValueError:
            raise ConfigError(f"KEVIN_PORT must be a number, not {port_text!r}") from None
        log_format = env.get("KEVIN_LOG_FORMAT") or ("console" if sys.stderr.isatty() else "json")
        if log_format not in ("json", "console"):
            raise ConfigError(f"KEVIN_LOG_FORMAT must be json or console, not {log_format!r}")
        workers_text = env.get("KEVIN_WORKERS", "1")
        try:
            workers = int(workers_text)
        except ValueError:
            workers = 0
        if not 1 <= workers <= MAX_WORKERS:
            raise ConfigError(f"KEVIN_WORKERS must be a number from 1 to {MAX_WORKERS}, "
                              f"not {workers_text!r}")
        head_text = env.get("KEVIN_REQUEST_HEAD_TIMEOUT", "10")
        try:
            request_head_timeout = float(head_text)
        except ValueError:
            request_head_timeout = 0.0
        if not 0 < request_head_timeout <= 3600:
            raise ConfigError("KEVIN_REQUEST_HEAD_TIMEOUT must be seconds from 0 (excluded) "
                              f"to 3600, not {head_text!r}")
        lag_text = env.get("KEVIN_READ_MAX_LAG", "5")
        try:
            read_max_lag = float(lag_text)
        except ValueError:
            read_max_lag = -1.0
        if not 0 <= read_max_lag <= 3600:
            raise ConfigError("KEVIN_READ_MAX_LAG must be seconds from 0 to 3600, "
                              f"not {lag_text!r}")
        group_text = env.get("KEVIN_GROUP_COMMIT", "1")
        if group_text not in ("0", "1"):
            raise ConfigError(f"KEVIN_GROUP_COMMIT must be 1 (on) or 0 (off), not {group_text!r}")
        data_dir = env.get("KEVIN_DATA_DIR") or platformdirs.user_data_dir("kevin")
        return cls(
            database_url=env.get("KEVIN_DATABASE_URL") or None,
            data_dir=Path(data_dir).expanduser(),
            host=env.get("KEVIN_HOST", "127.0.0.1"),
            port=port,
            admin_token=env.get("KEVIN_ADMIN_TOKEN") or None,
            admin_token_previous=env.get("KEVIN_ADMIN_TOKEN_PREVIOUS") or None,
            log_format=log_format,
            workers=workers,
            request_head_timeout=request_head_timeout,
            read_database_url=env.get("KEVIN_READ_DATABASE_URL") or None,
            read_max_lag=read_max_lag,
            group_commit=group_text == "1",
        )
