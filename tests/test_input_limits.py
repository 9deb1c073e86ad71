"""Bad input a client can send, answered 400/413/422 in the error shape, never 500; and
the limits every route that takes a trade enforces (docs/api.md, Conventions)."""

from __future__ import annotations

import base64
from typing import Any

from kevin import jsoncodec
from tests.conftest import ADMIN, trade_body

NDJSON = "application/x-ndjson"
DEEP = b"[" * 100_000


def _error_shape(body: Any) -> None:
    assert set(body) == {"error", "message", "details"}, body
    assert isinstance(body["error"], str) and isinstance(body["message"], str)


async def _post_raw(client, path: str, raw: bytes, headers: dict[str, str],
                    method: str = "POST", content_type: str = "application/json"):
    resp = await client.request(method, path, data=raw,
                                headers={**headers, "Content-Type": content_type})
    return resp.status, await resp.json()


async def test_json_nested_100000_deep_is_400_on_every_json_route(client, banks):
    a, _ = banks
    routes = [("POST", "/v1/trades", a), ("PUT", "/v1/trades/A-1", {**a, "If-Match": '"1"'}),
              ("POST", "/v1/participants", ADMIN), ("PUT", "/v1/rules/XAU", ADMIN),
              ("POST", "/v1/admin/matches", ADMIN), ("POST", "/v1/replays", ADMIN),
              ("DELETE", "/v1/admin/matches/00000000-0000-0000-0000-000000000000", ADMIN)]
    for method, path, headers in routes:
        for deep in (DEEP, b'{"a":' * 100_000):
            status, body = await _post_raw(client, path, deep, headers, method)
            assert status == 400, (method, path, body)
            _error_shape(body)
            assert body["error"] == "malformed_json"


async def test_a_deeply_nested_batch_line_fails_only_its_line(client, banks):
    a, _ = banks
    raw = b"\n".join([jsoncodec.dumps(trade_body("A-1")), DEEP,
                      jsoncodec.dumps(trade_body("A-2"))])
    status, body = await _post_raw(client, "/v1/trades/batch", raw, a, content_type=NDJSON)
    assert status == 200, body
    results = body["results"]
    assert [r["result"] for r in results] == ["created", "invalid", "created"]
    assert results[1]["error"]["error"] == "malformed_json"
    _error_shape(results[1]["error"])


async def test_a_crafted_cursor_is_422_not_500(client, banks):
    a, _ = banks
    crafted = base64.urlsafe_b64encode(b"[" * 3000).decode()
    for path in ("/v1/trades", "/v1/alleged"):
        resp = await client.get(path, params={"cursor": crafted}, headers=a)
        assert resp.status == 422, (path, await resp.text())
        body = await resp.json()
        _error_shape(body)
        assert [d["field"] for d in body["details"]] == ["cursor"]


async def test_trade_ids_made_only_of_dots_are_refused(client, banks):
    a, _ = banks
    for trade_id in (".", "..", "...", "." * 64):
        resp = await client.post("/v1/trades", json=trade_body(trade_id), headers=a)
        assert resp.status == 422, (trade_id, await resp.text())
        body = await resp.json()
        _error_shape(body)
        assert [d["field"] for d in body["details"]] == ["trade_id"]
    raw = b"\n".join(jsoncodec.dumps(trade_body(t)) for t in ("..", "A..1", ".5"))
    status, body = await _post_raw(client, "/v1/trades/batch", raw, a, content_type=NDJSON)
    assert status == 200, body
    assert [r["result"] for r in body["results"]] == ["invalid", "created", "created"]
    # Dots beside any other character are fine, and such a trade reads back by its path.
    resp = await client.get("/v1/trades/A..1", headers=a)
    assert resp.status == 200
