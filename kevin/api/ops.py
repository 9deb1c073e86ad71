"""Operational endpoints: liveness, readiness, the OpenAPI document."""

from __future__ import annotations

from aiohttp import web

from kevin.api.app_keys import HEALTH, KEVIN
from kevin.api.errors import error_response
from kevin.api.http import json_response
from kevin.api.openapi import openapi_document
from kevin.domain.errors import DatabaseUnavailable
from kevin.engine.health import schema_state

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """The process is up and can do its job by itself (kevin.lifecycle.Health); an
    unreachable database is /readyz's business, not this."""
    failure = request.app[HEALTH].failure
    if failure is not None:
        return error_response(503, "unhealthy", failure)
    return json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    try:
        schema = await schema_state(request.app[KEVIN].pool)
    except DatabaseUnavailable:
        return error_response(503, "not_ready", "the database is unreachable")
    if not schema.at_head:
        return error_response(503, "not_ready", "the schema is not at head",
                              {"revision": schema.revision, "head": schema.head})
    return json_response({"status": "ready", "revision": schema.revision})


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document())
