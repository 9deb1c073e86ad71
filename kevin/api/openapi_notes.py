"""The trade notes' part of the OpenAPI document."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from kevin.domain.notes import NOTES_PAGE_LIMIT, Note, NoteCreate, Notes
from kevin.domain.participants import ApiKeyCreate

MODELS: list[tuple[type[BaseModel], JsonSchemaMode]] = [
    (NoteCreate, "validation"), (Note, "serialization"), (Notes, "serialization"),
    (ApiKeyCreate, "validation"),
]


def paths() -> dict[str, Any]:
    from kevin.api.openapi import (
        AUTH,
        PARTICIPANT,
        TRADE_ID,
        _json,
        _param,
        _ref,
        _responses,
    )

    return {
        "/v1/trades/{trade_id}/notes": {
            "parameters": [TRADE_ID],
            "get": {
                "summary": ("The notes on your trade, oldest first, a page at a time "
                            "(the admin: on ?participant='s). A note is its participant's "
                            "own: the counterparty never sees it."),
                "parameters": [
                    PARTICIPANT,
                    _param("limit", "query", {"type": "integer", "minimum": 1,
                                              "maximum": NOTES_PAGE_LIMIT},
                           description="notes a page (default 100)"),
                    _param("cursor", "query", {"type": "string"},
                           description="next_cursor from the previous page"),
                ],
                "responses": _responses({"200": ("A page of the notes", "Notes")},
                                        (*AUTH, "404", "422", "503")),
            },
            "post": {
                "summary": ("Write a note on your trade (the admin: on ?participant='s): "
                            "what was done or learnt about it. Kept with the trade's "
                            "latest version and its author — the label of the key that "
                            "wrote it (else `key <key_id>`), or `admin` — and never "
                            "changed."),
                "parameters": [PARTICIPANT],
                "requestBody": {"required": True, **_json(_ref("NoteCreate"))},
                "responses": _responses({"201": ("The note", "Note")},
                                        ("400", *AUTH, "404", "413", "415", "422", "503")),
            },
        },
    }
