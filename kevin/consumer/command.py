"""``kevin consume``: run a consumer from the command line until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import importlib
import os
from typing import Any

import asyncpg

from kevin.consumer.consumer import (
    STRATEGIES,
    Callback,
    Consumer,
    ConsumerError,
    OverdueCallback,
    ProposalCallback,
)
from kevin.lifecycle import stop_signals


class ConsumeFailed(Exception):
    """One line for the user: why the consumer cannot run."""


def add_parser(commands: Any) -> None:
    p = commands.add_parser(
        "consume", help="follow the feed into your own PostgreSQL, exactly once per version")
    p.add_argument("--url", required=True, help="the Kevin server, e.g. http://127.0.0.1:8080")
    p.add_argument("--api-key", default=os.environ.get("KEVIN_API_KEY"),
                   help="a participant's key or the admin token (default: KEVIN_API_KEY)")
    p.add_argument("--database-url", required=True,
                   help="YOUR PostgreSQL (postgresql://user@host/db); tables are created "
                        "if missing")
    p.add_argument("--strategy", required=True, choices=STRATEGIES,
                   help="out-of-order updates: drop-older, or contiguous runs only")
    p.add_argument("--name", default="default", help="checkpoint name (default: default)")
    # One hook per kind of event the feed carries; each runs in the transaction that
    # moves the checkpoint past its event. Without one, the event only moves it.
    p.add_argument("--callback", metavar="MODULE:FUNCTION",
                   help="async def f(conn, update) called with each trade version "
                        "applied (kevin.consumer.Update), in the applying transaction")
    p.add_argument("--on-proposal", metavar="MODULE:FUNCTION",
                   help="async def f(conn, event) called with each proposal version "
                        "(kevin.consumer.ProposalEvent), in the same transaction as its "
                        "checkpoint")
    p.add_argument("--on-overdue", metavar="MODULE:FUNCTION",
                   help="async def f(conn, event) called with each overdue notice "
                        "(kevin.consumer.OverdueEvent), in the same transaction as its "
                        "checkpoint")


def _load_hook(option: str, spec: str | None) -> Any:
    if not spec:
        return None
    module_name, _, attribute = spec.partition(":")
    try:
        hook = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as e:
        raise ConsumeFailed(f"cannot load {option} {spec!r}: {e}") from e
    if not callable(hook):
        raise ConsumeFailed(f"cannot load {option} {spec!r}: not a function")
    return hook


async def consume(args: argparse.Namespace) -> None:
    if not args.api_key:
        raise ConsumeFailed("an API key is needed: --api-key or KEVIN_API_KEY")
    callback: Callback | None = _load_hook("--callback", args.callback)
    on_proposal: ProposalCallback | None = _load_hook("--on-proposal", args.on_proposal)
    on_overdue: OverdueCallback | None = _load_hook("--on-overdue", args.on_overdue)
    try:
        pool = await Consumer.create_pool(args.database_url, min_size=1, max_size=4)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        raise ConsumeFailed(f"cannot connect to the consumer database: {e}") from e
    try:
        consumer = Consumer(url=args.url, api_key=args.api_key, pool=pool,
                            strategy=args.strategy, callback=callback, name=args.name,
                            on_proposal=on_proposal, on_overdue=on_overdue)
        with stop_signals() as stop:
            await consumer.run(stop)
    except ConsumerError as e:
        raise ConsumeFailed(str(e)) from e
    finally:
        await pool.close()
