"""The reports' part of the OpenAPI document."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from kevin.domain.reports import StpReport

MODELS: list[tuple[type[BaseModel], JsonSchemaMode]] = [(StpReport, "serialization")]

STP_TEXT = (
    "The straight-through-processing report over the trades whose trade date is in"
    " from..to (at most 366 days), each in its state at as_of (default now): trades (not"
    " cancelled), cancelled, matched, the share matched on trade date and by T+1 (the next"
    " weekday; the first match's UTC date counts), auto/agreed/forced among the matched,"
    " open (unmatched or mismatched), overdue (of the open, those past their cut-off at"
    " the report's instant, as a read then says), time to match (the first matched version's"
    " recorded_at minus the first submission) at p50/p90/p99 in seconds, and per field the"
    " trades whose nearest candidate differed on it at some version (mismatch_fields)."
    " A participant reads its own trades; the admin every participant's, or one with"
    " ?participant=. group_by adds the figures per counterparty or product. Accept:"
    " text/csv gives the groups (or the whole as one row, key all) as CSV. With as_of the"
    " report reads as it would have then, and the same each time it is asked.")


def paths() -> dict[str, Any]:
    from kevin.api.openapi import AS_OF, _param, _responses

    responses = _responses({"200": ("The report", "StpReport")}, ("401", "404", "422", "503"))
    responses["200"]["content"]["text/csv"] = {"schema": {"type": "string"}}
    return {"/v1/reports/stp": {"get": {
        "summary": STP_TEXT,
        "parameters": [
            _param("from", "query", {"type": "string", "format": "date"}, True,
                   "The first trade date (YYYY-MM-DD)."),
            _param("to", "query", {"type": "string", "format": "date"}, True,
                   "The last trade date, inclusive."),
            _param("group_by", "query", {"enum": ["counterparty", "product"]}),
            _param("participant", "query", {"type": "string", "pattern": "^[A-Z0-9_]{1,32}$"},
                   description="The admin: one participant's trades (a participant: its"
                               " own name or nothing)."),
            AS_OF,
        ],
        "responses": responses,
    }}}
