"""The aiohttp application."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from kevin.api import (
    admin,
    alleged,
    batch,
    feed,
    formats,
    metrics,
    notes,
    ops,
    participants,
    profiles,
    proposals,
    replays,
    reports,
    rules,
    trades,
)
from kevin.api.app_keys import ADMIN_TOKEN, HEALTH, KEVIN, KEY_CACHE, WORKBENCH
from kevin.api.errors import echo_request_id, request_context
from kevin.api.http import MAX_BODY, forget_revoked_keys
from kevin.domain.keys import AdminTokens
from kevin.engine.health import keep_young_statistics
from kevin.engine.service import TradeService
from kevin.engine.workbench import Workbench
from kevin.feed.runtime import FeedOptions, install_feed
from kevin.lifecycle import Health, cancel_and_wait
from kevin.ui import install_workbench


def create_app(
    service: TradeService, admin_token: str | AdminTokens | None,
    feed_options: FeedOptions | None = None, health: Health | None = None,
) -> web.Application:
    """``admin_token``: the one token (None: no admin), or the tokens accepted while it is
    being changed (AdminTokens)."""
    admin_tokens = (admin_token if isinstance(admin_token, AdminTokens)
                    else AdminTokens.of(admin_token))
    # metrics.observe outermost: it times the whole request and sees the mapped status.
    app = web.Application(client_max_size=MAX_BODY,
                          middlewares=[metrics.observe, request_context])
    app[KEVIN] = service
    metrics.install(app)
    app.on_response_prepare.append(echo_request_id)
    app[ADMIN_TOKEN] = admin_tokens
    app[KEY_CACHE] = {}
    # The workbench reads the service's clock when it reads (a test may set it later).
    app[WORKBENCH] = Workbench(service.pool, admin_tokens, clock=lambda: service.clock())
    app[HEALTH] = health or Health()
    app.add_routes(ops.routes)
    app.add_routes(participants.routes)
    app.add_routes(batch.routes)  # before trades: its path is more specific
    app.add_routes(formats.routes)  # so is /v1/trades/import
    app.add_routes(trades.routes)
    app.add_routes(notes.routes)
    app.add_routes(rules.routes)
    app.add_routes(profiles.routes)
    app.add_routes(proposals.routes)
    app.add_routes(alleged.routes)
    app.add_routes(admin.routes)
    app.add_routes(replays.routes)
    app.add_routes(reports.routes)
    app.add_routes(feed.routes)
    install_workbench(app)  # the web pages under /ui/
    # The feed's watch and sequencer run in the background of every app (and so of every
    # `kevin serve` and every test client); SSE streams end on shutdown.
    install_feed(app, service.pool, feed_options or FeedOptions(), service.reads,
                 clock=lambda: service.clock())
    forget_revoked_keys(app)
    app.cleanup_ctx.append(_young_statistics)
    return app


async def _young_statistics(app: web.Application) -> AsyncIterator[None]:
    """A new database's first ANALYZE, not a minute late (kevin.engine.health)."""
    task = asyncio.create_task(keep_young_statistics(app[KEVIN].pool), name="statistics")
    try:
        yield
    finally:
        await cancel_and_wait([task])
