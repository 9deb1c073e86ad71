"""Participant administration."""

from __future__ import annotations

import re

from aiohttp import web

from kevin.api.app_keys import KEVIN
from kevin.api.http import json_response, read_model, require_admin, revoke_key
from kevin.domain import errors as e
from kevin.domain.keys import KEY_ID_PATTERN
from kevin.domain.models import PARTICIPANT_PATTERN, ParticipantCreate, ParticipantCreated
from kevin.domain.participants import (
    ApiKeyCreate,
    ApiKeys,
    Participant,
    Participants,
    ParticipantUpdate,
)

routes = web.RouteTableDef()


@routes.get("/v1/participants")
async def list_participants(request: web.Request) -> web.Response:
    await require_admin(request)
    return json_response(Participants(participants=await request.app[KEVIN].participants()))


@routes.post("/v1/participants")
async def create_participant(request: web.Request) -> web.Response:
    await require_admin(request)
    body = await read_model(request, ParticipantCreate)
    created = await request.app[KEVIN].create_participant(body.name, body.label)
    return json_response(ParticipantCreated(name=body.name, api_key=created.api_key), 201)


def _participant(request: web.Request) -> str:
    name = request.match_info["name"]
    if not re.fullmatch(PARTICIPANT_PATTERN, name):
        raise e.NotFound(f"no participant {name!r}")
    return name


# A participant's keys are the admin's to issue and revoke, never the participant's own:
# a leaked key must not be able to mint its successor.
@routes.post("/v1/participants/{name}/keys")
async def add_key(request: web.Request) -> web.Response:
    await require_admin(request)
    name = _participant(request)
    # The body is optional: a key without a label is issued as before.
    body = (await read_model(request, ApiKeyCreate) if request.can_read_body
            else ApiKeyCreate())
    return json_response(await request.app[KEVIN].add_key(name, body.label), 201)


@routes.get("/v1/participants/{name}/keys")
async def list_keys(request: web.Request) -> web.Response:
    await require_admin(request)
    return json_response(ApiKeys(keys=await request.app[KEVIN].keys(_participant(request))))


@routes.delete("/v1/participants/{name}/keys/{key_id}")
async def delete_key(request: web.Request) -> web.Response:
    await require_admin(request)
    name, key_id = _participant(request), request.match_info["key_id"]
    if not re.fullmatch(KEY_ID_PATTERN, key_id):
        raise e.NotFound(f"participant {name} has no key {key_id!r}")
    return json_response(await revoke_key(request, name, key_id))


@routes.put("/v1/participants/{name}")
async def update_participant(request: web.Request) -> web.Response:
    """Register the participant's BIC (admin): SWIFT MT300 and FpML name parties by BIC."""
    await require_admin(request)
    name = _participant(request)
    body = await read_model(request, ParticipantUpdate)
    await request.app[KEVIN].set_bic(name, body.bic)
    return json_response(Participant(name=name, bic=body.bic))
