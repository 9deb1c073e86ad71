"""Notes on a trade: ``GET`` and ``POST /v1/trades/{trade_id}/notes``."""

from __future__ import annotations

import base64
import binascii

from aiohttp import web

from kevin.api.app_keys import KEVIN
from kevin.api.http import (
    acting_participant,
    authenticate,
    json_response,
    query_int,
    read_model,
)
from kevin.api.trades import trade_id_in_path
from kevin.domain import errors as e
from kevin.domain.notes import NOTES_PAGE_LIMIT, NoteCreate, Notes

routes = web.RouteTableDef()


def _cursor(after: int) -> str:
    return base64.urlsafe_b64encode(str(after).encode()).decode().rstrip("=")


def _after(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, binascii.Error):
        text = ""
    if not (text.isascii() and text.isdigit() and 0 < int(text) < 2 ** 63):
        raise e.ValidationFailed("cursor is not one this service issued",
                                 [{"field": "cursor", "message": "use next_cursor as given"}])
    return int(text)


@routes.get("/v1/trades/{trade_id}/notes")
async def list_notes(request: web.Request) -> web.Response:
    participant = acting_participant(request, await authenticate(request))
    page = await request.app[KEVIN].notes(
        participant, trade_id_in_path(request), _after(request.query.get("cursor")),
        query_int(request, "limit", 100, 1, NOTES_PAGE_LIMIT))
    return json_response(Notes(
        notes=page.notes,
        next_cursor=None if page.next_after is None else _cursor(page.next_after)))


@routes.post("/v1/trades/{trade_id}/notes")
async def add_note(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    participant = acting_participant(request, principal)
    trade_id = trade_id_in_path(request)
    body = await read_model(request, NoteCreate)
    note = await request.app[KEVIN].add_note(participant, trade_id, body.text,
                                             principal.key_hash)
    return json_response(note, 201)
