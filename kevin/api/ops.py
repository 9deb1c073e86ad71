"""Operational endpoints: liveness, readiness, the OpenAPI document."""

from __future__ import annotations

from aiohttp import web

from kevin.api.app_keys import KEVIN
from kevin.api.errors import error_response
from kevin.api.http import json_response
from kevin.api.openapi import openapi_document
from kevin.domain.errors import DatabaseUnavailable
from kevin.store import database

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    head = database.head_revision()
    try:
        async with database.connection(request.app[KEVIN].pool) as conn:
            revision = await database.schema_revision(conn)
    except DatabaseUnavailable:
        return error_response(503, "not_ready", "the database is unreachable")
    if revision != head:
        return error_response(503, "not_ready", "the schema is not at head",
                              {"revision": revision, "head": head})
    return json_response({"status": "ready", "revision": revision})


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document())
