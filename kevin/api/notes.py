"""Notes on a trade: ``GET`` and ``POST /v1/trades/{trade_id}/notes``."""

from __future__ import annotations

from aiohttp import web

from kevin.api.app_keys import KEVIN
from kevin.api.http import acting_participant, authenticate, json_response, read_model
from kevin.api.trades import trade_id_in_path
from kevin.domain.notes import NoteCreate, Notes

routes = web.RouteTableDef()


@routes.get("/v1/trades/{trade_id}/notes")
async def list_notes(request: web.Request) -> web.Response:
    participant = acting_participant(request, await authenticate(request))
    found = await request.app[KEVIN].notes(participant, trade_id_in_path(request))
    return json_response(Notes(notes=found))


@routes.post("/v1/trades/{trade_id}/notes")
async def add_note(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    participant = acting_participant(request, principal)
    trade_id = trade_id_in_path(request)
    body = await read_model(request, NoteCreate)
    note = await request.app[KEVIN].add_note(participant, trade_id, body.text,
                                             principal.key_hash)
    return json_response(note, 201)
