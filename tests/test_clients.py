"""Clients nobody here wrote: ones that leave, stall, or dawdle over a request head. Each
against a real `kevin serve` on real sockets, where the behaviour is the server's."""

from __future__ import annotations

import asyncio
import json
import re

import aiohttp
import pytest

from kevin.api.app import create_app
from tests.conftest import ADMIN_TOKEN, wait_for
from tests.processes import Server

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SSE = {**AUTH, "Accept": "text/event-stream"}


async def _serve(db_url: str, tmp_path, **settings: str) -> Server:
    server = Server(tmp_path / "serve.log", KEVIN_DATABASE_URL=db_url,
                    KEVIN_ADMIN_TOKEN=ADMIN_TOKEN, **settings).start()
    await server.wait_ready()
    return server


async def _metric(url: str, name: str, **labels: str) -> float | None:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.partition(" ")[0]))
        if line.partition("{")[0].split(" ")[0] == name and found == labels:
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.mark.slow
async def test_an_sse_disconnect_is_a_499_freed_at_once_and_not_an_error(db_url, tmp_path):
    server = await _serve(db_url, tmp_path)  # the default 15 s heartbeat
    try:
        async with aiohttp.ClientSession() as session:
            resp = await session.get(f"{server.url}/v1/feed",
                                     headers={**SSE, "X-Request-ID": "sse-one"})
            assert resp.status == 200
            assert resp.headers["X-Request-ID"] == "sse-one"
            assert b"connected" in await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 5)

            async def streams(n: float) -> bool:
                return await _metric(server.url, "kevin_feed_sse_streams") == n
            await wait_for(lambda: streams(1))
            resp.close()  # the client goes away, as a closed browser tab does
            left = asyncio.get_running_loop().time()
            await wait_for(lambda: streams(0), timeout=5)
            assert asyncio.get_running_loop().time() - left < 5
        duration = "kevin_http_request_duration_seconds_count"
        assert await _metric(server.url, duration, method="GET", route="/v1/feed",
                             status="499") == 1
        assert await _metric(server.url, duration, method="GET", route="/v1/feed",
                             status="500") is None
    finally:
        assert await server.stop() == 0
    lines = [json.loads(line) for line in server.log().splitlines()]
    assert not [line for line in lines if line["level"] == "error"]
    [feed] = [line for line in lines if line.get("path") == "/v1/feed"]
    assert feed["status"] == 499 and feed["request_id"] == "sse-one"


async def test_an_incoming_request_id_is_kept_only_when_printable_and_short(
        service, aiohttp_client):
    client = await aiohttp_client(create_app(service, ADMIN_TOKEN))
    for sent, kept in (("abc-123", True), ("a b:c/d", True), ("x" * 128, True),
                       ("x" * 129, False), ("", False), ("é-not-ascii", False)):
        resp = await client.get("/healthz", headers={"X-Request-ID": sent})
        echoed = resp.headers["X-Request-ID"]
        if kept:
            assert echoed == sent
        else:
            assert re.fullmatch(r"[0-9a-f]{32}", echoed), (sent, echoed)
    # A stream's headers leave before its handler returns: it carries the id too.
    resp = await client.get("/v1/feed", headers={**SSE, "X-Request-ID": "x" * 200})
    assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["X-Request-ID"])
    resp.close()
    resp = await client.get("/v1/feed", headers=SSE)
    assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["X-Request-ID"])
    resp.close()
