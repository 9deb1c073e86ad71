"""Matching profiles (admin): tolerances a pair of participants agreed; versioned,
append-only like rules."""

from __future__ import annotations

import base64
import binascii
import re

from aiohttp import web

from kevin.api.app_keys import KEVIN
from kevin.api.http import json_response, query_instant, query_int, read_model, require_admin
from kevin.domain import errors as e
from kevin.domain.profiles import PROFILE_NAME_PATTERN, Profile, ProfilePage

routes = web.RouteTableDef()

_NAME = re.compile(PROFILE_NAME_PATTERN)


def _name(request: web.Request, *, writing: bool) -> str:
    """The name in the path. When reading, a name that breaks the pattern names no
    profile anyone could have made: 404; when writing it is a bad name: 422."""
    name = request.match_info["name"]
    if not _NAME.fullmatch(name):
        if writing:
            raise e.ValidationFailed("not a profile name",
                                     [{"field": "name", "message": "[A-Za-z0-9._-]{1,64}"}])
        raise e.NotFound(f"no profile {name!r}")
    return name


def _etag(version: int) -> dict[str, str]:
    return {"ETag": f'"{version}"'}


@routes.put("/v1/profiles/{name}")
async def put_profile(request: web.Request) -> web.Response:
    await require_admin(request)
    name = _name(request, writing=True)
    profile = await read_model(request, Profile)
    stored = await request.app[KEVIN].agreements.put_profile(name, profile, "admin")
    return json_response(stored, 200, _etag(stored.version))


@routes.get("/v1/profiles/{name}")
async def get_profile(request: web.Request) -> web.Response:
    await require_admin(request)
    stored = await request.app[KEVIN].agreements.get_profile(
        _name(request, writing=False), query_instant(request))
    return json_response(stored, 200, _etag(stored.version))


@routes.delete("/v1/profiles/{name}")
async def retire_profile(request: web.Request) -> web.Response:
    await require_admin(request)
    stored = await request.app[KEVIN].agreements.retire_profile(
        _name(request, writing=False), "admin")
    return json_response(stored, 200, _etag(stored.version))


def _cursor(after: str) -> str:
    return base64.urlsafe_b64encode(after.encode()).decode().rstrip("=")


def _after(cursor: str | None) -> str:
    if not cursor:
        return ""
    try:
        name = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, binascii.Error):
        name = ""
    if not _NAME.fullmatch(name):
        raise e.ValidationFailed("cursor is not one this service issued",
                                 [{"field": "cursor", "message": "use next_cursor as given"}])
    return name


@routes.get("/v1/profiles")
async def list_profiles(request: web.Request) -> web.Response:
    await require_admin(request)
    page = await request.app[KEVIN].agreements.list_profiles(
        _after(request.query.get("cursor")), query_int(request, "limit", 100, 1, 1000),
        query_instant(request))
    return json_response(ProfilePage(
        profiles=page.profiles,
        next_cursor=_cursor(page.next_after) if page.next_after else None))
