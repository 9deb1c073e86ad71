"""Typed application state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from kevin.domain.keys import AdminTokens
from kevin.lifecycle import Health

if TYPE_CHECKING:
    from kevin.engine.service import TradeService
    from kevin.engine.workbench import Workbench

# Annotated rather than subscripted with a string, so that the import above is seen as
# used and every handler's call into the engine is type-checked.
KEVIN: web.AppKey[TradeService] = web.AppKey("kevin")
ADMIN_TOKEN = web.AppKey[AdminTokens]("admin_tokens")
# API key hash -> (participant, when it was last found valid: time.monotonic())
KEY_CACHE = web.AppKey[dict[bytes, tuple[str, float]]]("key_cache")
WORKBENCH: web.AppKey[Workbench] = web.AppKey("workbench")
HEALTH = web.AppKey[Health]("health")
