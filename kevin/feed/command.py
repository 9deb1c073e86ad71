"""``kevin relay nats``: the command line of the JetStream relay."""

from __future__ import annotations

import argparse
import os
from typing import Any

from kevin.config import Settings
from kevin.lifecycle import stop_signals
from kevin.runtime import database_url
from kevin.store import database

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


def _nats_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("KEVIN_NATS_URL", DEFAULT_NATS_URL),
                        help=f"the NATS server (KEVIN_NATS_URL, default {DEFAULT_NATS_URL})")
    parser.add_argument("--stream", default="KEVIN",
                        help="JetStream stream, created if missing (default KEVIN)")
    parser.add_argument("--subject-prefix", default="kevin.updates",
                        help="subjects are PREFIX.<participant> (default kevin.updates)")
    parser.add_argument("--name", help="checkpoint name (default nats:<stream>)")


def add_parser(commands: Any) -> None:
    relay_p = commands.add_parser(
        "relay", help="publish the feed to NATS JetStream (`kevin relay [nats] ...`)")
    # `kevin relay` alone is `kevin relay nats` with its settings from the environment
    # (deploy/ runs it so); NATS is the one broker today.
    _nats_options(relay_p)
    brokers = relay_p.add_subparsers(dest="broker", required=False, metavar="BROKER")
    _nats_options(brokers.add_parser("nats", help="into a NATS JetStream stream"))


async def relay(settings: Settings, args: argparse.Namespace) -> None:
    from kevin.feed.relay import NatsRelay  # nats-py only for this command

    async with database_url(settings) as url:
        pool = await database.create_pool(url, min_size=1, max_size=4,
                                          application_name="kevin relay")
        try:
            with stop_signals() as stop:
                await NatsRelay(pool, args.url, stream=args.stream,
                                subject_prefix=args.subject_prefix, name=args.name).run(stop)
        finally:
            await pool.close()
