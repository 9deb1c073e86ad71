"""The replay endpoints' part of the OpenAPI document."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from kevin.domain.replay import ReplayRecord, ReplayRequest, ReplayResult

MODELS: list[tuple[type[BaseModel], JsonSchemaMode]] = [
    (ReplayRequest, "validation"), (ReplayResult, "serialization"),
    (ReplayRecord, "serialization"),
]


def paths() -> dict[str, Any]:
    from kevin.api.openapi import _json, _param, _ref, _responses

    return {
        "/v1/replays": {"post": {
            "summary": (
                "Re-run matching from `since` under the given rules (admin): what Kevin "
                "would have done had these rules been put in force at `since`. The book as "
                "it stood then (inclusive) is matched against everything participants and "
                "operators did afterwards, in order, by the same code as live matching. "
                "`rules` names the products to replay ({\"XAU\": {...rules...}}); products "
                "their trades can meet (amended into, force-matched with) come along under "
                "their stored rules. With no rules, every product active since `since` is "
                "replayed under the stored rules in force at each moment — which changes "
                "nothing unless matching has gone wrong. `changes` lists each trade whose "
                "matching state (status, whom it is matched with, mismatches) would differ "
                "from its current version. A dry run (`apply: false`, the default) changes "
                "no trade; it is recorded (`applied: false`, GET /v1/replays/{id}). "
                "`apply: true` appends one version per changed trade (reason `replayed`, "
                "never rewriting history) under the same locks as live matching, and is "
                "recorded too (`applied: true`)."),
            "requestBody": {"required": True, **_json(_ref("ReplayRequest"))},
            "responses": _responses({"200": ("The changes", "ReplayResult")},
                                    ("400", "401", "403", "412", "413", "415", "422", "503")),
        }},
        "/v1/replays/{replay_id}": {"get": {
            "summary": ("A replay, dry run or applied (`applied`): its rules, since, who ran "
                        "it and when (admin)."),
            "parameters": [_param("replay_id", "path", {"type": "string", "format": "uuid"},
                                  True, "The replay_id a replay returned.")],
            "responses": _responses({"200": ("The replay", "ReplayRecord")},
                                    ("401", "403", "404", "503")),
        }},
    }
