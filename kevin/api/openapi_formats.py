"""The standard formats' part of the OpenAPI document: BIC registration, imports of CSV,
SWIFT MT300 and FpML, and confirmations out."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from kevin.domain.models import ErrorBody, Trade
from kevin.domain.participants import Participant, ParticipantUpdate


class ImportRecordResult(BaseModel):
    """One record's outcome, as a batch line's: ``line`` is where the record starts in the
    file. ``amended``/``cancelled``: an MT300 AMND/CANC or an FpML correction changed the
    trade; ``exists``: the record restates what is stored and changed nothing."""

    line: int
    result: Literal["created", "exists", "exists_with_different_fields", "amended",
                    "cancelled", "invalid"]
    trade: Trade | None
    error: ErrorBody | None


class ImportResult(BaseModel):
    results: list[ImportRecordResult]


MODELS: list[tuple[type[BaseModel], JsonSchemaMode]] = [
    (ParticipantUpdate, "validation"), (Participant, "serialization"),
    (ImportResult, "serialization"),
]

IMPORT_TEXT = (
    "Import a file of trades in a standard format (a participant's key). Each record is "
    "handled exactly like a line of POST /v1/trades/batch: the same validation and limits "
    "(16 MiB of body, 10,000 records: 413 past either, nothing written), the same "
    "matching, one result per record in order, one bad record spoiling no other. "
    "format=csv (Content-Type text/csv): RFC 4180, UTF-8 with or without BOM; a header "
    "row of the trade's field names (location optional) and attributes.NAME columns "
    "(string attributes; an empty cell is none). format=mt300 (text/plain): one or more "
    "SWIFT MT300 messages; Party A (82a) must be the importer's registered BIC, Party B "
    "(87a) the counterparty's; :20: is the trade_id of a NEWT, AMND and CANC amend or "
    "cancel the trade named by :21:; the currency pair is the product, the base "
    "currency's amount the quantity, :36: the price, :30T:/:30V: the dates. format=fpml "
    "(application/xml): one FpML 5.x confirmation-view requestConfirmation of an "
    "fxSingleLeg, parties by BIC; document type declarations are refused. A malformed "
    "record is `invalid` with error malformed_record naming the tag, element or line; "
    "a record that is no valid trade is `invalid` with validation_failed, each detail's "
    "`source` naming where the field came from. 409 when the format names parties by "
    "BIC and the importer has none registered; 422 for a file that cannot be read at all "
    "(not UTF-8, a CSV header naming no trade fields, XML not well-formed or with a DTD); "
    "415 for another Content-Type or charset.")


def paths(existing: dict[str, Any]) -> dict[str, Any]:
    from kevin.api.openapi import (
        ERROR_STATUSES,
        PARTICIPANT,
        PARTICIPANT_NAME,
        TRADE_ID,
        _json,
        _param,
        _ref,
        _responses,
    )

    trade = existing["/v1/trades/{trade_id}"]
    text = {"schema": {"type": "string"}}
    kind = _param("format", "query", {"enum": ["csv", "mt300", "fpml"]}, True,
                  "The file's format.")
    return {
        "/v1/participants/{name}": {"put": {
            "summary": ("Register a participant's BIC (admin): SWIFT MT300 and FpML name the "
                        "parties by BIC. A BIC8 is stored in its 11-character form (branch "
                        "XXX); null removes it. 409 when another participant has it."),
            "parameters": [PARTICIPANT_NAME],
            "requestBody": {"required": True, **_json(_ref("ParticipantUpdate"))},
            "responses": _responses({"200": ("The participant", "Participant")},
                                    ("400", "401", "403", "404", "409", "413", "415", "422",
                                     "503")),
        }},
        # /v1/trades/import is also the path of a trade whose trade_id is "import".
        "/v1/trades/import": {**{m: trade[m] for m in ("get", "put", "delete")}, "post": {
            "summary": IMPORT_TEXT,
            "parameters": [kind],
            "requestBody": {"required": True, "content": {
                "text/csv": text, "text/plain": text, "application/xml": text}},
            "responses": _responses({"200": ("One result per record", "ImportResult")},
                                    ("401", "403", "409", "413", "415", "422", "503")),
        }},
        "/v1/trades/{trade_id}/confirmation": {
            "parameters": [TRADE_ID],
            "get": {
                "summary": ("The trade's latest version as a confirmation from its participant "
                            "(Party A) to its counterparty: format=mt300, an MT300 (NEWT, or "
                            "CANC once cancelled) as text/plain; format=fpml, an FpML 5.x "
                            "requestConfirmation of an fxSingleLeg as application/xml (none "
                            "for a cancelled trade). Importing it gives back the same trade. "
                            "409 while either party has no BIC registered; 422 for a trade "
                            "the format cannot state (a product that is no currency pair, "
                            "amounts or a reference past the format's sizes)."),
                "parameters": [_param("format", "query", {"enum": ["mt300", "fpml"]}, True,
                                      "The confirmation's format."), PARTICIPANT],
                "responses": {
                    "200": {"description": "The confirmation",
                            "headers": {"ETag": {"description": "The version rendered.",
                                                 "schema": {"type": "string"}}},
                            "content": {"text/plain": text, "application/xml": text}},
                    **{code: {"description": ERROR_STATUSES[code], **_json(_ref("ErrorBody"))}
                       for code in ("401", "404", "409", "422", "503")},
                },
            },
        },
    }
