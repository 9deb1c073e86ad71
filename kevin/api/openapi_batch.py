"""The bulk endpoint's part of the OpenAPI document."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from kevin.domain.models import ErrorBody, Trade


class BatchLineResult(BaseModel):
    """One non-blank line's outcome. ``trade``: the trade's latest version after the
    batch (created or exists); ``error``: why the line was refused (invalid, conflict)."""

    line: int
    result: Literal["created", "exists", "exists_with_different_fields", "invalid"]
    trade: Trade | None
    error: ErrorBody | None


class BatchResult(BaseModel):
    results: list[BatchLineResult]


MODELS: list[tuple[type[BaseModel], JsonSchemaMode]] = [(BatchResult, "serialization")]


def paths(existing: dict[str, Any]) -> dict[str, Any]:
    """The batch path. /v1/trades/batch is also the path of a trade whose trade_id is
    "batch" (GET, PUT, DELETE there are the trade's), so those operations are listed too."""
    from kevin.api.openapi import _responses

    trade = existing["/v1/trades/{trade_id}"]
    return {"/v1/trades/batch": {**{m: trade[m] for m in ("get", "put", "delete")}, "post": {
        "summary": (
            "Submit many trades: NDJSON (Content-Type application/x-ndjson), one trade per "
            "line as for POST /v1/trades, at most 10,000 lines (blank lines are skipped) and "
            "16 MiB of body (this route's own limit; others keep 1 MiB). Each line stands "
            "alone: one that is not JSON or not a valid trade is `invalid` with the error a "
            "single POST would give, and spoils no other. The valid lines are submitted in "
            "one transaction and matched as if submitted one by one, in order: `created`, "
            "`exists` (the same body again) or `exists_with_different_fields`. One result "
            "per non-blank line, in order; 413 past either limit, nothing written."),
        "requestBody": {"required": True, "content": {
            # Any bytes are a batch: every line is judged on its own (no type to violate).
            "application/x-ndjson": {"schema": {
                "description": "Text: one JSON trade (as for POST /v1/trades) per line"}}}},
        "responses": _responses({"200": ("One result per line", "BatchResult")},
                                ("401", "403", "413", "415", "503")),
    }}}
