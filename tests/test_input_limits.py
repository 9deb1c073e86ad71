"""Bad input a client can send, answered 400/413/422 in the error shape, never 500; and
the limits every route that takes a trade enforces (docs/api.md, Conventions)."""

from __future__ import annotations

import asyncio
import base64
import io
from typing import Any

from kevin import jsoncodec
from tests.conftest import ADMIN, ADMIN_TOKEN, trade_body, wait_for

NDJSON = "application/x-ndjson"
DEEP = b"[" * 100_000


def _error_shape(body: Any) -> None:
    assert set(body) == {"error", "message", "details"}, body
    assert isinstance(body["error"], str) and isinstance(body["message"], str)


async def _post_raw(client, path: str, raw: bytes, headers: dict[str, str],
                    method: str = "POST", content_type: str = "application/json"):
    resp = await client.request(method, path, data=io.BytesIO(raw),
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


def _with_attributes(trade_id: str, attributes: bytes) -> bytes:
    raw = jsoncodec.dumps(trade_body(trade_id))
    return raw.replace(b'"attributes":{"desk":"metals"}', b'"attributes":' + attributes)


def _nested(levels: int) -> bytes:
    """An attributes object nested ``levels`` deep (itself the first level)."""
    return b'{"a":' * (levels - 1) + b"{}" + b"}" * (levels - 1)


async def test_attributes_nested_past_16_levels_are_422_naming_the_attribute(client, banks):
    a, _ = banks
    status, body = await _post_raw(client, "/v1/trades", _with_attributes("A-16", _nested(16)), a)
    assert status == 201, body
    for levels in (17, 255, 300, 800, 990):
        status, body = await _post_raw(client, "/v1/trades",
                                       _with_attributes(f"A-{levels}", _nested(levels)), a)
        _error_shape(body)
        if levels > 800 and status == 400:  # near the parser's recursion limit: malformed
            assert body["error"] == "malformed_json"
            continue
        assert status == 422, (levels, body)
        assert [d["field"] for d in body["details"]] == [".".join(["attributes"] + ["a"] * 16)]
        assert body["details"][0]["type"] == "attributes_too_deep"
    lists = b'{"l":' + b"[" * 16 + b"]" * 16 + b"}"
    status, body = await _post_raw(client, "/v1/trades", _with_attributes("A-L", lists), a)
    assert status == 422 and body["details"][0]["field"] == "attributes.l" + ".0" * 15, body


NUMBERS = [b"1e99", b"1E+5", b"-0", b"-0.0", b"1e131072", b"1e-16384", b"-2.5e-3", b"1.50",
           b"123456789012345678901234567890123456789", b"0.000"]


async def test_numbers_in_attributes_come_back_as_written_on_every_path(client, banks, conn):
    a, _ = banks
    attributes = b'{"n":[' + b",".join(NUMBERS) + b'],"deep":{"x":1e99},"plain":2}'
    status, body = await _post_raw(client, "/v1/trades", _with_attributes("N-1", attributes), a)
    assert status == 201, body
    written = b'"attributes":' + attributes

    async def raw(path: str, **kw) -> bytes:
        resp = await client.get(path, **{"headers": a, **kw})
        assert resp.status == 200
        return await resp.read()

    assert written in await raw("/v1/trades/N-1")
    assert written in await raw("/v1/trades/N-1/versions")
    assert written in await raw("/v1/trades")

    async def on_the_feed() -> bool:  # the JSON page, once the sequencer placed it
        return written in await raw("/v1/feed", params={"after": "0"},
                                    headers={**a, "Accept": "application/json"})

    # Seqs wait for the cluster-wide xmin horizon (docs/feed.md): a shared server's other
    # work can hold it back for many seconds.
    await wait_for(on_the_feed, timeout=60)
    # Resubmitting the very same body is recognised as the same trade.
    status, _ = await _post_raw(client, "/v1/trades", _with_attributes("N-1", attributes), a)
    assert status == 200
    # An amendment and a batch line keep them as written too.
    amended = _with_attributes("N-1", b'{"m":1e99}').replace(b'"trade_id":"N-1",', b"")
    resp = await client.put("/v1/trades/N-1", data=amended,
                            headers={**a, "If-Match": '"1"', "Content-Type": "application/json"})
    assert resp.status == 200 and b'"attributes":{"m":1e99}' in await resp.read()
    line = _with_attributes("N-2", attributes)
    status, body = await _post_raw(client, "/v1/trades/batch", line, a, content_type=NDJSON)
    assert status == 200 and body["results"][0]["result"] == "created", body
    assert written in await raw("/v1/trades/N-2")
    # Attributes with only plain numbers stay a jsonb object, queryable in SQL.
    await _post_raw(client, "/v1/trades", _with_attributes("N-3", b'{"desk":"m","q":1.50}'), a)
    assert await conn.fetchval(
        "SELECT attributes->>'q' FROM trades WHERE trade_id = 'N-3'") == "1.50"


async def test_a_number_in_attributes_over_40_characters_is_422(client, banks):
    a, _ = banks
    ok = b"1" * 40
    status, _ = await _post_raw(client, "/v1/trades",
                                _with_attributes("L-1", b'{"n":' + ok + b"}"), a)
    assert status == 201
    for long in (b"1" * 41, b"1e" + b"0" * 39, b"0." + b"0" * 38 + b"1", b"1" * 100_000):
        status, body = await _post_raw(client, "/v1/trades",
                                       _with_attributes("L-2", b'{"k":[' + long + b"]}"), a)
        assert status == 422, body
        _error_shape(body)
        assert [(d["field"], d["type"]) for d in body["details"]] == [
            ("attributes.k.0", "number_too_long")]


async def test_a_trade_over_64_kib_as_json_is_422_naming_attributes_on_every_route(
        client, banks):
    a, _ = banks
    fits = trade_body("S-1", attributes={"blob": "x" * (64 * 1024 - 400)})
    assert len(jsoncodec.dumps(fits)) < 64 * 1024
    resp = await client.post("/v1/trades", json=fits, headers=a)
    assert resp.status == 201, await resp.text()
    too_large = [trade_body("S-2", attributes={"blob": "x" * (64 * 1024)}),
                 trade_body("S-2", attributes={"blob": "x" * (64 * 1024 - 300)},
                            location="\x01" * 64),
                 trade_body("S-2", attributes={f"k{i}": [1, 2, 3] for i in range(10_000)})]
    for body in too_large:
        resp = await client.post("/v1/trades", json=body, headers=a)
        assert resp.status == 422, await resp.text()
        answer = await resp.json()
        _error_shape(answer)
        assert [(d["field"], d["type"]) for d in answer["details"]] == [
            ("attributes", "trade_too_large")]
    amend = {k: v for k, v in too_large[0].items() if k != "trade_id"}
    resp = await client.put("/v1/trades/S-1", json=amend, headers={**a, "If-Match": '"1"'})
    assert resp.status == 422 and (await resp.json())["details"][0]["field"] == "attributes"
    # A batch line of 10 MiB fails alone.
    raw = b"\n".join([jsoncodec.dumps(trade_body("S-3")),
                      jsoncodec.dumps(trade_body("S-4", attributes={"b": "x" * 10_000_000}))])
    status, body = await _post_raw(client, "/v1/trades/batch", raw, a, content_type=NDJSON)
    assert status == 200
    assert [r["result"] for r in body["results"]] == ["created", "invalid"]
    assert body["results"][1]["error"]["details"][0]["field"] == "attributes"


async def test_amounts_outside_postgresql_numeric_range_are_422(client, banks):
    a, _ = banks
    for field in ("quantity", "price"):
        for value in (b"1e131072", b"1e-16384", b'"1e131072"', b'"1e-16384"'):
            raw = jsoncodec.dumps(trade_body("R-1")).replace(
                b'"%s":"%s"' % (field.encode(), trade_body()[field].encode()),
                b'"%s":%s' % (field.encode(), value))
            status, body = await _post_raw(client, "/v1/trades", raw, a)
            assert status == 422, (field, value, body)
            assert [d["field"] for d in body["details"]] == [field]


async def _raw_exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)  # the server closes after it
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split(" ")[1]), headers, body


async def test_requests_aiohttp_refuses_itself_are_answered_in_the_error_shape(service):
    """The runner `kevin serve` uses (kevin.api.server.AppRunner), on a real socket."""
    from aiohttp import web

    from kevin.api.app import create_app
    from kevin.api.server import AppRunner

    runner = AppRunner(create_app(service, ADMIN_TOKEN), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    secret = b"kv_not-a-real-key-but-looks-like-one"
    try:
        for request in [
            b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: kevin\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nHost: kevin\r\nX-Long: " + b"b" * 9000 + b"\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nHost: kevin\r\nAuthorization: Bearer " + secret
            + b"\x00\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nHost: kevin\r\nAuthorization: Bearer " + secret
            + b"\x7f\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nHost: kevin\r\nBad Name: x\r\n\r\n",
            b"G(T /healthz HTTP/1.1\r\nHost: kevin\r\n\r\n",
            b"GET /healthz HTTP/9.9.9\r\nHost: kevin\r\n\r\n",
        ]:
            status, headers, body = await _raw_exchange(port, request)
            assert status == 400, (request[:60], status, body)
            assert headers["Content-Type"].startswith("application/json"), headers
            answer = jsoncodec.loads(body)
            _error_shape(answer)
            assert answer["error"] == "bad_request"
            assert secret not in body and b"bbbb" not in body
        # A well-formed request on the same server is served as usual.
        status, _, _ = await _raw_exchange(
            port, b"GET /healthz HTTP/1.1\r\nHost: kevin\r\nConnection: close\r\n\r\n")
        assert status == 200
    finally:
        await runner.cleanup()


async def test_the_limits_apply_to_imported_records_too(client, banks):
    a, _ = banks
    text = ("trade_id,counterparty,side,product,quantity,price,currency,trade_date,"
            "settlement_date,attributes.note\n"
            "I-1,BANKB,sell,XAU,100,1000.25,USD,2026-11-20,2026-11-24,fine\n"
            f"I-2,BANKB,sell,XAU,100,1000.25,USD,2026-11-20,2026-11-24,{'x' * 70_000}\n"
            "..,BANKB,sell,XAU,100,1000.25,USD,2026-11-20,2026-11-24,dots\n")
    resp = await client.post("/v1/trades/import?format=csv", data=io.BytesIO(text.encode()),
                             headers={**a, "Content-Type": "text/csv"})
    assert resp.status == 200, await resp.text()
    results = (await resp.json())["results"]
    assert [r["result"] for r in results] == ["created", "invalid", "invalid"]
    assert [(d["field"], d["type"]) for d in results[1]["error"]["details"]] == [
        ("attributes", "trade_too_large")]
    assert [d["field"] for d in results[2]["error"]["details"]] == ["trade_id"]
