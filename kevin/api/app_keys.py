"""Typed application state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    pass

KEVIN = web.AppKey["Kevin"]("kevin")
ADMIN_TOKEN = web.AppKey("admin_token", str | None)
KEY_CACHE = web.AppKey("key_cache", dict)
