"""Helpers for feed tests: read the feed as a client would."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from aiohttp.test_utils import TestClient

from kevin import jsoncodec
from kevin.consumer.sse import events
from tests.conftest import wait_for


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


async def relayed(pool: Any, count: int, nats_url: str = "nats://127.0.0.1:4222"
                  ) -> tuple[str, list[tuple[str, str, dict[str, Any]]]]:
    """Run `kevin relay nats` into a stream of the test's own until it holds ``count``
    messages; its subject prefix and every message as (subject, Nats-Msg-Id, body). The
    stream is deleted after."""
    import nats

    from kevin.feed.relay import NatsRelay

    tag = uuid.uuid4().hex[:10]
    stream, prefix = f"KEVIN_TEST_{tag}", f"test_{tag}.updates"
    relay = NatsRelay(pool, nats_url, stream=stream, subject_prefix=prefix)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    nc = await nats.connect(nats_url, connect_timeout=5)
    js = nc.jetstream()

    async def enough() -> bool:
        try:
            return (await js.stream_info(stream)).state.messages >= count
        except Exception:  # the stream is not there before the relay's first batch
            return False

    try:
        await wait_for(enough, timeout=30)
        info = await js.stream_info(stream)
        carried = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(stream, seq)
            carried.append((msg.subject, msg.headers["Nats-Msg-Id"], jsoncodec.loads(msg.data)))
        return prefix, carried
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        try:
            await js.delete_stream(stream)
        finally:
            await nc.close()
