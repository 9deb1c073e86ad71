"""The matching endpoints' part of the OpenAPI document (rules, alleged, overrides)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from kevin.domain.match_models import AllegedPage, BreakMatch, ForceMatch, MatchLegs
from kevin.domain.rules import RulesUpdate, RulesVersion

MODELS: list[tuple[type[BaseModel], JsonSchemaMode]] = [
    (RulesUpdate, "validation"), (RulesVersion, "serialization"), (AllegedPage, "serialization"),
    (ForceMatch, "validation"), (BreakMatch, "validation"), (MatchLegs, "serialization"),
]


def paths() -> dict[str, Any]:
    from kevin.api.openapi import AS_OF, OVERDUE, PARTICIPANT, _json, _param, _ref, _responses

    product = _param("product", "path", {"type": "string", "pattern": r"^[A-Za-z0-9._/-]{1,32}$"},
                     True, "The product the rules apply to.")
    rules_text = (
        " price_tolerance is {\"abs\": x} (price units) or {\"bps\": x} (basis points of the"
        " resting trade's price: of the two, the one that entered the book first);"
        " quantity_tolerance {\"abs\": x}; settlement_date_window_days; location exact or"
        " ignore. Omitted fields are exact; tolerances are inclusive. A product with no"
        " rules matches exactly on every field. Matches record the rules version used. Or"
        " {\"fields\": {...}} with every tolerance form of matching profiles (see"
        " PUT /v1/profiles/{name}); not both spellings.")
    return {
        "/v1/rules/{product}": {
            "parameters": [product],
            "put": {
                "summary": "Record a new version of a product's matching rules (admin)."
                           + rules_text,
                "requestBody": {"required": True, **_json(_ref("RulesUpdate"))},
                "responses": _responses({"200": ("The new version", "RulesVersion")},
                                        ("400", "401", "403", "413", "415", "422", "503")),
            },
            "get": {
                "summary": "A product's latest rules, or those in force at as_of (admin).",
                "parameters": [AS_OF],
                "responses": _responses({"200": ("The rules", "RulesVersion")},
                                        ("401", "403", "404", "422", "503")),
            },
        },
        "/v1/alleged": {"get": {
            "summary": "Live, unmatched trades other participants submitted naming you as "
                       "counterparty: their trade_id, participant and economic terms.",
            "parameters": [
                _param("product", "query", {"type": "string"}), PARTICIPANT, OVERDUE,
                _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000}),
                _param("cursor", "query", {"type": "string"},
                       description="next_cursor from the previous page"),
            ],
            "responses": _responses({"200": ("Alleged trades", "AllegedPage")},
                                    ("401", "404", "422", "503")),
        }},
        "/v1/admin/matches": {"post": {
            "summary": "Force-match two live (unmatched or mismatched), opposite trades of "
                       "mirrored participants, whatever their terms (admin). Both get a "
                       "version with reason forced and the comment. 409 cannot_match when a "
                       "leg is matched or cancelled, or the legs are not opposite sides.",
            "requestBody": {"required": True, **_json(_ref("ForceMatch"))},
            "responses": _responses({"201": ("Matched", "MatchLegs")},
                                    ("400", "401", "403", "404", "409", "415", "422", "503")),
        }},
        "/v1/admin/matches/{match_id}": {"delete": {
            "summary": "Break a live match (admin): both legs get an unmatched version "
                       "(reason broken, with the comment), the pair is never matched "
                       "automatically again, and each goes back through matching. The body "
                       "{\"comment\": ...} is optional. Returns both legs' latest versions.",
            "parameters": [_param("match_id", "path", {"type": "string", "format": "uuid"},
                                  True)],
            "requestBody": {"required": False, **_json(_ref("BreakMatch"))},
            "responses": _responses({"200": ("Broken", "MatchLegs")},
                                    ("400", "401", "403", "404", "415", "422", "503")),
        }},
    }
