"""The agreements' part of the OpenAPI document: matching profiles and proposals."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from kevin.domain.profiles import Profile, ProfilePage, ProfileVersion
from kevin.domain.proposals import Proposal, ProposalAnswer, ProposalPage, ProposalRequest

MODELS: list[tuple[type[BaseModel], JsonSchemaMode]] = [
    (Profile, "validation"), (ProfileVersion, "serialization"), (ProfilePage, "serialization"),
    (ProposalRequest, "validation"), (ProposalAnswer, "validation"),
    (Proposal, "serialization"), (ProposalPage, "serialization"),
]

PROPOSAL_TEXT = (
    " States: open, accepted, rejected, withdrawn, lapsed; every change is a new version,"
    " and both participants get it on their feed (event proposal). A new version of"
    " either trade lapses an open proposal. Only the two participants (and the admin, who"
    " reads but does not decide) see a proposal; anyone else gets 404.")

PROFILE_TEXT = (
    " A profile agrees tolerances for one pair of participants, for one product or for"
    " every product (\"*\"); it wins over the product's rules. Precedence, most specific"
    " first: pair + product, pair + \"*\", the product's rules, exact. fields: price and"
    " quantity \"exact\", \"ignore\", {\"abs\"}, {\"bps\"}, {\"pct\"} (relative forms of the"
    " resting trade's value, optionally with \"max_abs\") or {\"range\": {\"below\","
    " \"above\"}} (seen from the resting trade); settlement_date {\"days\": n} or"
    " {\"business_days\": n, \"calendar\": C} (a calendar of the holidays library: GB,"
    " US-NY, XLON, ...); location \"exact\", \"ignore\" or {\"equivalent\": [[...]]}."
    " Omitted fields are exact. matched_cancel \"by_agreement\": a matched trade of the"
    " pair is cancelled only through an accepted cancel proposal.")


def paths() -> dict[str, Any]:
    from kevin.api.openapi import AS_OF, _json, _param, _ref, _responses

    name = _param("name", "path", {"type": "string", "pattern": r"^[A-Za-z0-9._-]{1,64}$"},
                  True, "The profile's name.")
    proposal_id = _param("proposal_id", "path", {"type": "string", "format": "uuid"}, True,
                         "The proposal's id.")
    etag = {"ETag": {"description": 'The profile\'s version, "3".',
                     "schema": {"type": "string", "pattern": r'^"[0-9]+"$'}}}

    def with_etag(responses: dict[str, Any]) -> dict[str, Any]:
        responses["200"]["headers"] = etag
        return responses

    return {
        "/v1/profiles/{name}": {
            "parameters": [name],
            "put": {
                "summary": "Record a new version of a matching profile (admin)." + PROFILE_TEXT
                           + " 409 profile_claimed when another live profile has the same"
                           " pair and product; 422 naming the field for an unknown"
                           " participant, a bad product, form or calendar.",
                "requestBody": {"required": True, **_json(_ref("Profile"))},
                "responses": with_etag(_responses(
                    {"200": ("The new version", "ProfileVersion")},
                    ("400", "401", "403", "409", "413", "415", "422", "503"))),
            },
            "get": {
                "summary": "A profile's latest version, or the one in force at as_of (admin);"
                           " 404 when it did not exist then or was retired.",
                "parameters": [AS_OF],
                "responses": with_etag(_responses({"200": ("The profile", "ProfileVersion")},
                                                  ("401", "403", "404", "422", "503"))),
            },
            "delete": {
                "summary": "Retire a profile (admin): appends a retired version; history "
                           "stays readable with as_of. The pair falls back to the product's"
                           " rules.",
                "responses": with_etag(_responses(
                    {"200": ("The retiring version", "ProfileVersion")},
                    ("401", "403", "404", "503"))),
            },
        },
        "/v1/proposals": {
            "post": {
                "summary": "Propose (with your key) to match your trade with the "
                           "counterparty's (kind match: both live, unmatched or mismatched,"
                           " mirrored) or to cancel your match with it (kind cancel). 404 for"
                           " an unknown trade; 409 cannot_propose with details.reason"
                           " not_live, not_mirrored, already_matched or not_matched; 409"
                           " proposal_exists when one of the kind is open for the two"
                           " trades." + PROPOSAL_TEXT,
                "requestBody": {"required": True, **_json(_ref("ProposalRequest"))},
                "responses": _responses({"201": ("Open", "Proposal")},
                                        ("400", "401", "403", "404", "409", "413", "415",
                                         "422", "503")),
            },
            "get": {
                "summary": "The proposals I made or received (the admin: all), latest "
                           "versions, optionally of one state.",
                "parameters": [
                    _param("state", "query", {"enum": ["", "open", "accepted", "rejected",
                                                       "withdrawn", "lapsed"]}),
                    _param("limit", "query", {"type": "integer", "minimum": 1,
                                              "maximum": 1000}),
                    _param("cursor", "query", {"type": "string"},
                           description="next_cursor from the previous page"),
                ],
                "responses": _responses({"200": ("A page of proposals", "ProposalPage")},
                                        ("401", "422", "503")),
            },
        },
        "/v1/proposals/{proposal_id}": {
            "parameters": [proposal_id],
            "get": {
                "summary": "A proposal's latest version." + PROPOSAL_TEXT,
                "responses": _responses({"200": ("The proposal", "Proposal")},
                                        ("401", "404", "503")),
            },
        },
        **{f"/v1/proposals/{{proposal_id}}/{decision}": {
            "parameters": [proposal_id],
            "post": {
                "summary": summary + " 403 for anyone else of the two (accepting your own"
                           " proposal) and for the admin; 409 proposal_not_open when it is"
                           " no longer open (another decision or a lapse came first:"
                           " exactly one wins).",
                "requestBody": {"required": False, **_json(_ref("ProposalAnswer"))},
                "responses": _responses({"200": ("The new version", "Proposal")},
                                        ("400", "401", "403", "404", "409", "415", "422",
                                         "503")),
            }} for decision, summary in (
                ("accept", "Accept an open proposal (the counterparty). A match: both "
                           "trades become matched, reason agreed, the match_id is the "
                           "proposal's and the match lists accepted_differences. A cancel:"
                           " both legs become cancelled."),
                ("reject", "Reject an open proposal (the counterparty), with a comment."),
                ("withdraw", "Withdraw an open proposal (the proposer)."))},
        "/v1/profiles": {"get": {
            "summary": "The live profiles (or those live at as_of), by name (admin).",
            "parameters": [
                AS_OF,
                _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000}),
                _param("cursor", "query", {"type": "string"},
                       description="next_cursor from the previous page"),
            ],
            "responses": _responses({"200": ("A page of profiles", "ProfilePage")},
                                    ("401", "403", "422", "503")),
        }},
    }
