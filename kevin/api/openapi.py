"""The OpenAPI 3.1 document, generated from the pydantic models the handlers use."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

import kevin
from kevin.domain.feed import FeedPage, FeedUpdate, OverdueUpdate, RelayStub
from kevin.domain.keys import KEY_ID_PATTERN, REVOKED_EVERYWHERE_WITHIN_S
from kevin.domain.models import (
    AgedTrade,
    ErrorBody,
    ParticipantCreate,
    ParticipantCreated,
    Trade,
    TradeAmendment,
    TradePage,
    TradeSubmission,
    TradeVersions,
)
from kevin.domain.participants import ApiKey, ApiKeyCreated, ApiKeys, Participants

MODELS: list[tuple[type[BaseModel], JsonSchemaMode]] = [
    (TradeSubmission, "validation"), (TradeAmendment, "validation"), (Trade, "serialization"),
    (AgedTrade, "serialization"),
    (TradeVersions, "serialization"), (TradePage, "serialization"),
    (ParticipantCreate, "validation"), (ParticipantCreated, "serialization"),
    (ErrorBody, "serialization"),
    (FeedUpdate, "serialization"), (FeedPage, "serialization"),
    (OverdueUpdate, "serialization"),
    (RelayStub, "serialization"),
    (ApiKeyCreated, "serialization"), (ApiKeys, "serialization"), (ApiKey, "serialization"),
    (Participants, "serialization"),
]

ERROR_STATUSES = {
    "400": "Malformed JSON", "401": "No or bad API key", "403": "Not allowed",
    "404": "Unknown, or not yours", "409": "Conflict", "412": "Stale If-Match",
    "413": "Body over 1 MiB", "415": "Wrong content type", "422": "Validation failed",
    "428": "If-Match missing", "503": "Database unavailable",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _responses(ok: dict[str, tuple[str, str]], errors: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {
        code: {"description": text, **_json(_ref(model))} for code, (text, model) in ok.items()
    }
    for code in errors:
        out[code] = {"description": ERROR_STATUSES[code], **_json(_ref("ErrorBody"))}
    return out


def _param(name: str, where: str, schema: dict[str, Any], required: bool = False,
           description: str = "") -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": schema,
            "description": description}


TRADE_ID = _param("trade_id", "path", {"type": "string", "pattern": r"^[A-Za-z0-9._:-]{1,64}$"},
                  True, "The participant's own reference for the trade.")
# Not "required" in the schema: the contract answers a missing If-Match with 428, which
# OpenAPI tools take for a broken API (they expect 400/422). Any value is accepted on the
# wire; one that names no version ("3" as in the ETag, W/"3" or 3) is refused with 412.
IF_MATCH = _param("If-Match", "header", {"type": "string"}, False,
                  'The version the change derives from, as in the ETag: "3" (W/"3" and 3 '
                  'are read the same; "*" is whatever version is current, RFC 9110). '
                  "Needed: without it the change is refused with 428; a stale version, or "
                  "a value that names no version, with 412 and details.current_version.")
IF_NONE_MATCH = _param("If-None-Match", "header", {"type": "string"}, False,
                       'A version the caller has seen, as in the ETag ("3"): the answer '
                       "is never older than it (read on the primary when a replica has "
                       "not replayed it yet). The full representation is returned, never "
                       "304.")
AS_OF = _param("as_of", "query", {"type": "string", "format": "date-time"}, False,
               "An RFC 3339 instant with a zone; answers as of then (inclusive).")
OVERDUE = _param("overdue", "query", {"enum": ["true", "false"]}, False,
                 "only trades past their cut-off while unmatched or mismatched (true), or "
                 "only the others (false); computed at the instant read (docs/api.md, "
                 "Cut-offs and ageing)")
PARTICIPANT = _param("participant", "query",
                     {"type": "string", "pattern": r"^([A-Z0-9_]{1,32})?$"}, False,
                     "Admin only: whose trades to read (empty is the same as absent). A "
                     "participant naming another participant gets 404.")
AUTH = ("401",)
PARTICIPANT_NAME = _param("name", "path", {"type": "string", "pattern": r"^[A-Z0-9_]{1,32}$"},
                          True, "The participant.")


ETAG = {"description": 'The trade\'s current version, "3": send it back as If-Match.',
        "schema": {"type": "string", "pattern": r'^"[0-9]+"$'}}
LOCATION = {"description": "The new trade: /v1/trades/{trade_id}.",
            "schema": {"type": "string"}}
UNAUTHORIZED_HEADERS = {"WWW-Authenticate": {"description": 'Bearer realm="kevin"',
                                             "schema": {"type": "string"}}}


def _trade_headers(paths: dict[str, Any]) -> None:
    """Every answer carrying one trade says its version in ETag; a new one its Location."""
    for path in ("/v1/trades", "/v1/trades/{trade_id}"):
        for method, operation in paths[path].items():
            if method == "parameters" or (path, method) == ("/v1/trades", "get"):
                continue
            for code in ("200", "201"):
                if code in operation["responses"]:
                    headers = {"ETag": ETAG, **({"Location": LOCATION} if code == "201" else {})}
                    operation["responses"][code]["headers"] = headers


def _document_401(paths: dict[str, Any]) -> None:
    for item in paths.values():
        for method, operation in item.items():
            if method != "parameters" and "401" in operation.get("responses", {}):
                operation["responses"]["401"]["headers"] = UNAUTHORIZED_HEADERS


DESCRIPTION = """Post-trade confirmation matching on an append-only store.

Conventions (the contract, and what Kevin does where it is silent):
- JSON in and out, UTF-8; request bodies over 1 MiB are refused with 413 (the NDJSON
  batch has its own limits). A body that is not JSON (or is empty, or holds a lone UTF-16
  surrogate escape) is 400; JSON that is not the expected object is 422 (field "body").
- Limits on every trade (POST, PUT, each batch line): at most 64 KiB as JSON (only
  attributes can pass it: 422 naming "attributes", type "trade_too_large"); attributes
  nested at most 16 deep, the object itself the first level (type
  "attributes_too_deep"); a number in attributes at most 40 characters as written (type
  "number_too_long"), given back exactly as written (1e99 stays 1e99, -0 stays -0).
  JSON nested past about 900 levels is 400 (in a batch, only that line is invalid).
- Decimals are strings in responses; requests accept strings or JSON numbers, parsed
  exactly as decimals. Non-finite, negative or zero quantity/price is 422.
- Timestamps in responses are RFC 3339 in UTC with microseconds and "Z"; requests take RFC
  3339 with any zone (an unencoded "+" before a query offset, read as a space, is taken as
  "+"). Dates are YYYY-MM-DD.
- Every error is {"error", "message", "details"}; 422 details are a list of
  {"field", "message"}. 401 answers carry WWW-Authenticate: Bearer.
- A trade's version is its ETag; If-Match takes it back for PUT and DELETE.
- A workbench login (/ui/login) sets the kevin_session cookie, which the API and the feed
  accept in place of the Bearer header (a browser's EventSource cannot send headers).
  POST, PUT and DELETE so authenticated must also send the session's CSRF token in
  X-CSRF-Token: 403 without it.
- Another participant's trade, or a trade_id outside [A-Za-z0-9._:-]{1,64}, is 404.
  A new trade's trade_id must hold a character other than a dot ("." and ".." are path
  segments HTTP clients rewrite): ids of dots alone are refused with 422.
- Unknown query parameters are ignored; an unknown value of a known one is 422.
- A request HTTP itself refuses (a request or header line over 8,190 bytes, a header byte
  HTTP does not allow, a bad method) is 400 "bad_request" in the error shape, and the
  connection is closed.
- A connection that has not sent a complete request head within 10 s (of opening, or of
  a later request's first byte) is answered 408 (error "request_timeout") and closed.
- Every response (an event stream's too) carries X-Request-ID: the client's own when it
  is printable ASCII of at most 128 characters, otherwise a fresh one.
"""


@functools.cache
def openapi_document() -> dict[str, Any]:
    from kevin.api import (
        openapi_agreements,
        openapi_batch,
        openapi_formats,
        openapi_history,
        openapi_matching,
        openapi_notes,
        openapi_reports,
    )

    _, defs = models_json_schema(MODELS + openapi_matching.MODELS + openapi_history.MODELS
                                 + openapi_batch.MODELS + openapi_agreements.MODELS
                                 + openapi_formats.MODELS + openapi_reports.MODELS
                                 + openapi_notes.MODELS,
                                 ref_template="#/components/schemas/{model}")
    schemas = defs.get("$defs", {})
    trade_body = {"required": True, **_json(_ref("TradeSubmission"))}
    paths: dict[str, Any] = {
        "/v1/participants": {"post": {
            "summary": "Create a participant (admin); the API key is shown once.",
            "requestBody": {"required": True, **_json(_ref("ParticipantCreate"))},
            "responses": _responses({"201": ("Created", "ParticipantCreated")},
                                    ("400", *AUTH, "403", "409", "413", "415", "422")),
        }, "get": {
            "summary": "Every participant (admin), by name, with its BIC.",
            "responses": _responses({"200": ("The participants", "Participants")},
                                    (*AUTH, "403", "503")),
        }},
        "/v1/participants/{name}/keys": {
            "parameters": [PARTICIPANT_NAME],
            "post": {
                "summary": ("Issue another API key for the participant (admin); shown once. "
                            "Its other keys stay valid: issue, move the clients over, then "
                            "revoke the old key. The body is optional: a `label` says whom "
                            "the key is for, and names it as the author of its notes."),
                "requestBody": {"required": False, **_json(_ref("ApiKeyCreate"))},
                "responses": _responses({"201": ("The new key", "ApiKeyCreated")},
                                        ("400", *AUTH, "403", "404", "413", "415", "422",
                                         "503")),
            },
            "get": {
                "summary": ("The participant's keys (admin), revoked ones too, oldest first; "
                            "never the keys themselves."),
                "responses": _responses({"200": ("Its keys", "ApiKeys")},
                                        (*AUTH, "403", "404", "503")),
            },
        },
        "/v1/participants/{name}/keys/{key_id}": {
            "parameters": [PARTICIPANT_NAME, _param(
                "key_id", "path", {"type": "string", "pattern": KEY_ID_PATTERN}, True,
                "The key's id, as listed.")],
            "delete": {
                "summary": ("Revoke the key (admin): refused from the next request by the "
                            "process that revoked it, by every other Kevin process as soon "
                            "as it is told (LISTEN/NOTIFY, at commit), within "
                            f"{REVOKED_EVERYWHERE_WITHIN_S:g} s at the latest; the "
                            "workbench sessions it "
                            "opened end at once. Revoking it again changes nothing and "
                            "answers the same."),
                "responses": _responses({"200": ("The revoked key", "ApiKey")},
                                        (*AUTH, "403", "404", "503")),
            },
        },
        "/v1/trades": {
            "post": {
                "summary": "Submit a trade; resubmitting the same body is idempotent.",
                "requestBody": trade_body,
                "responses": _responses(
                    {"201": ("Created", "Trade"), "200": ("Already stored, same body", "Trade")},
                    ("400", *AUTH, "403", "409", "413", "415", "422", "503")),
            },
            "get": {
                "summary": "List trades as of now or as_of, keyset-paginated.",
                "parameters": [
                    _param("status", "query", {"enum": ["", "unmatched", "matched", "mismatched",
                                                        "cancelled"]},
                           description="empty is the same as absent: any status"),
                    _param("product", "query", {"type": "string"}),
                    AS_OF, PARTICIPANT, OVERDUE,
                    _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000}),
                    _param("cursor", "query", {"type": "string"},
                           description="next_cursor from the previous page"),
                ],
                "responses": _responses({"200": ("A page", "TradePage")},
                                        (*AUTH, "404", "422", "503")),
            },
        },
        "/v1/trades/{trade_id}": {
            "parameters": [TRADE_ID],
            "get": {
                "summary": "The latest version, or the one latest at as_of, with its cut-off "
                           "(cutoff_at) and whether it is overdue then (computed, not stored).",
                "parameters": [AS_OF, PARTICIPANT, IF_NONE_MATCH],
                "responses": _responses({"200": ("The trade", "AgedTrade")},
                                        (*AUTH, "404", "422", "503")),
            },
            "put": {
                "summary": "Amend: the full new terms, against the version in If-Match.",
                "parameters": [IF_MATCH],
                "requestBody": {"required": True, **_json(_ref("TradeAmendment"))},
                "responses": _responses({"200": ("The new version", "Trade")},
                                        ("400", *AUTH, "403", "404", "409", "412", "413",
                                         "415", "422", "428", "503")),
            },
            "delete": {
                "summary": "Cancel: appends a cancelled version; nothing is deleted.",
                "parameters": [IF_MATCH],
                "responses": _responses({"200": ("The cancelled version", "Trade")},
                                        (*AUTH, "403", "404", "409", "412", "428", "503")),
            },
        },
        "/v1/trades/{trade_id}/versions": {
            "parameters": [TRADE_ID],
            "get": {
                "summary": "Every version of the trade, ascending.",
                "parameters": [PARTICIPANT, IF_NONE_MATCH],
                "responses": _responses({"200": ("The history", "TradeVersions")},
                                        (*AUTH, "404", "422", "503")),
            },
        },
        "/v1/feed": {"get": {
            "summary": "The match feed: every new version of your trades (the admin: all), "
                       "in commit order, each with a global, strictly increasing seq. "
                       "Accept: text/event-stream streams Server-Sent Events (id: seq, "
                       "event: reason, data: FeedUpdate; a proposal's change is event "
                       "proposal, data: ProposalUpdate; an overdue notice is event "
                       "overdue, data: OverdueUpdate; comment lines as heartbeats); "
                       "Accept: application/json returns one FeedPage. At-least-once: "
                       "apply idempotently on (trade_id, version). A stream is sent at its "
                       "client's pace; a client that cannot take a 64 KiB write within 30 s is "
                       "disconnected and resumes with Last-Event-ID.",
            "parameters": [
                _param("after", "query", {"type": "integer", "minimum": 0}, False,
                       "Resume after this seq (default 0: from the start)."),
                _param("Last-Event-ID", "header", {"type": "string", "pattern": "^[0-9]+$"},
                       False, "SSE resume position; wins over after."),
                _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000},
                       False, "JSON pages: at most this many updates (default 100)."),
                _param("wait", "query", {"type": "integer", "minimum": 0, "maximum": 5},
                       False, "JSON pages: long-poll up to this many seconds when empty."),
                _param("participant", "query", {"type": "string"}, False,
                       "Admin only: one participant's updates."),
            ],
            "responses": {
                "200": {"description": "A page, or an event stream",
                        "content": {"application/json": {"schema": _ref("FeedPage")},
                                    "text/event-stream": {"schema": {"type": "string"}}}},
                **{code: {"description": ERROR_STATUSES[code], **_json(_ref("ErrorBody"))}
                   for code in ("401", "403", "422", "503")},
            },
        }},
        "/healthz": {"get": {"summary": "The process is up and can recover by itself "
                                        "(an unreachable database is /readyz's business).",
                             "security": [],
                             "responses": {"200": {"description": "up"},
                                           "503": {"description": "unhealthy: restart the "
                                                                  "process",
                                                   **_json(_ref("ErrorBody"))}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (text exposition format).",
                             "security": [],
                             "responses": {"200": {"description": "metrics", "content": {
                                 "text/plain": {"schema": {"type": "string"}}}}}}},
        "/readyz": {"get": {"summary": "The database is reachable and the schema at head.",
                            "security": [],
                            "responses": {"200": {"description": "ready"},
                                          "503": {"description": "not ready",
                                                  **_json(_ref("ErrorBody"))}}}},
    }
    _trade_headers(paths)
    paths.update(openapi_matching.paths())
    paths.update(openapi_agreements.paths())
    paths.update(openapi_history.paths())
    paths.update(openapi_batch.paths(paths))
    paths.update(openapi_formats.paths(paths))
    paths.update(openapi_reports.paths())
    paths.update(openapi_notes.paths())
    _document_401(paths)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Kevin", "version": kevin.__version__, "description": DESCRIPTION},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"session": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "kevin_session",
                            "description": "a workbench session (/ui/login); unsafe "
                                           "methods also need X-CSRF-Token"},
            },
        },
    }
