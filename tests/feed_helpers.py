"""Helpers for feed tests: read the feed as a client would."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from kevin import jsoncodec
from kevin.consumer.sse import events


async def page(client: TestClient, headers: dict[str, str], after: int = 0,
               limit: int = 1000, **params: Any) -> dict[str, Any]:
    resp = await client.get("/v1/feed", params={"after": after, "limit": limit, **params},
                            headers={**headers, "Accept": "application/json"})
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def read_all(client: TestClient, headers: dict[str, str], after: int = 0
                   ) -> list[dict[str, Any]]:
    """Every update after `after`, page by page."""
    out: list[dict[str, Any]] = []
    while True:
        body = await page(client, headers, after)
        out += body["updates"]
        if not body["updates"]:
            return out
        after = body["last_seq"]


async def sse_events(resp: Any, count: int) -> list[tuple[str | None, str, dict[str, Any]]]:
    """The next `count` events of an open SSE response: (id, event, data)."""
    out = []
    async for event in events(resp.content):
        if event is None:
            continue
        out.append((event.id, event.event, jsoncodec.loads(event.data)))
        if len(out) == count:
            break
    return out
