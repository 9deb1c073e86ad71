"""Matching rules per product (admin): versioned, append-only like trades."""

from __future__ import annotations

import re

from aiohttp import web

from kevin.api.app_keys import KEVIN
from kevin.api.http import json_response, query_instant, read_model, require_admin
from kevin.domain import errors as e
from kevin.domain.rules import RulesUpdate

routes = web.RouteTableDef()

# The same shape as a trade's product; `.+` in the route lets "EUR/USD" through.
PRODUCT = re.compile(r"^[A-Za-z0-9._/-]{1,32}$")


def _product(request: web.Request) -> str:
    product = request.match_info["product"]
    if not PRODUCT.match(product):
        raise e.ValidationFailed("not a product name", [{"field": "product",
                                                         "message": "[A-Za-z0-9._/-]{1,32}"}])
    return product


@routes.put("/v1/rules/{product:.+}")
async def put_rules(request: web.Request) -> web.Response:
    await require_admin(request)
    product = _product(request)
    body = await read_model(request, RulesUpdate)
    if body.product is not None and body.product != product:
        raise e.ValidationFailed("product in the body differs from the path",
                                 [{"field": "product", "message": "must equal the path's"}])
    stored = await request.app[KEVIN].put_rules(product, body.rules(), "admin")
    return json_response(stored, 200, {"ETag": f'"{stored.version}"'})


@routes.get("/v1/rules/{product:.+}")
async def get_rules(request: web.Request) -> web.Response:
    await require_admin(request)
    stored = await request.app[KEVIN].get_rules(_product(request), query_instant(request))
    return json_response(stored, 200, {"ETag": f'"{stored.version}"'})
