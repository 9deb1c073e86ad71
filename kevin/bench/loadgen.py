"""The load generator: N concurrent HTTP clients submitting pairs to a running Kevin.

Run by ``kevin bench`` as a separate process (``python -m kevin.bench.loadgen``), so the
service's event loop and the clients' never share a core's time slice inside one Python
process. Reads its configuration as JSON on stdin; prints its figures as JSON on stdout.

A pair: POST the sell, then POST the buy with identical terms. Its latency runs from the
moment the buy is sent until both matched updates have been seen on the admin's
``GET /v1/feed`` event stream — or, on a service without a feed, until the buy's response.
The stream starts after ``feed_after``, the feed's head when the slice began: a live
consumer, not one catching up on the earlier slices' updates.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from kevin.bench import workload as w


@dataclass
class Pair:
    sell: tuple[str, str]  # (participant, trade_id)
    buy: tuple[str, str]
    sent: float
    answered: float
    matched_in_response: bool


@dataclass
class FeedWatcher:
    """Follows the admin event stream and notes when each trade's matched update arrives."""

    seen: dict[tuple[str, str], float] = field(default_factory=dict)
    events: int = 0
    wanted: set[tuple[str, str]] = field(default_factory=set)
    all_seen: asyncio.Event = field(default_factory=asyncio.Event)

    async def follow(self, session: aiohttp.ClientSession, url: str, token: str,
                     after: int) -> None:
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        async with session.get(f"{url}/v1/feed?after={after}", headers=headers,
                               timeout=aiohttp.ClientTimeout(total=None)) as resp:
            resp.raise_for_status()
            event = None
            async for raw in resp.content:
                line = raw.rstrip(b"\r\n")
                if line.startswith(b"event:"):
                    event = line[6:].strip()
                elif line.startswith(b"data:") and event == b"matched":
                    data = orjson.loads(line[5:])
                    key = (data["participant"], data["trade_id"])
                    self.seen.setdefault(key, time.perf_counter())
                    self.events += 1
                    if self.wanted and key in self.wanted:
                        self.wanted.discard(key)
                        if not self.wanted:
                            self.all_seen.set()
                elif not line:
                    event = None


async def has_feed(session: aiohttp.ClientSession, url: str, token: str) -> bool:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    async with session.get(f"{url}/v1/feed?after=0&limit=1", headers=headers) as resp:
        await resp.read()
        return resp.status == 200


async def drive(config: dict[str, Any]) -> dict[str, Any]:
    url, run_id = config["url"], config["run_id"]
    concurrency, keys = config["concurrency"], config["keys"]
    warmup, duration = config["warmup"], config["duration"]
    keys_of = {w.SELLER: config["seller_key"], w.BUYER: config["buyer_key"]}
    headers = {p: {"Authorization": f"Bearer {k}", "Content-Type": "application/json"}
               for p, k in keys_of.items()}
    pairs: list[Pair] = []
    errors: dict[str, int] = {}
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        watcher = FeedWatcher()
        follower = None
        with_feed = await has_feed(session, url, config["admin_token"])
        if with_feed:
            follower = asyncio.create_task(watcher.follow(
                session, url, config["admin_token"], config.get("feed_after", 0)))

        async def post(participant: str, body: dict[str, Any]) -> dict[str, Any] | None:
            async with session.post(f"{url}/v1/trades", data=orjson.dumps(body),
                                    headers=headers[participant]) as resp:
                payload = await resp.read()
                if resp.status not in (200, 201):
                    errors[str(resp.status)] = errors.get(str(resp.status), 0) + 1
                    return None
                return orjson.loads(payload)

        start = time.perf_counter()
        window = (start + warmup, start + warmup + duration)

        async def client(c: int) -> None:
            i = 0
            while time.perf_counter() < window[1]:
                sell, buy = w.pair_terms(run_id, c, i, keys)
                i += 1
                began = time.perf_counter()
                if await post(w.SELLER, sell) is None:
                    continue
                sent = time.perf_counter()
                answer = await post(w.BUYER, buy)
                answered = time.perf_counter()
                if answer is None or not (window[0] <= began and answered <= window[1]):
                    continue
                pairs.append(Pair((w.SELLER, sell["trade_id"]), (w.BUYER, buy["trade_id"]),
                                  sent, answered, answer.get("status") == "matched"))

        await asyncio.gather(*(client(c) for c in range(concurrency)))
        latencies: list[float] = []
        unseen = 0
        feed_error = None
        if follower is not None:
            watcher.wanted = {k for p in pairs for k in (p.sell, p.buy)} - set(watcher.seen)
            if watcher.wanted:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(watcher.all_seen.wait(), timeout=15)
            feed_error = None
            if follower.done() and not follower.cancelled() and follower.exception():
                feed_error = repr(follower.exception())
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await follower
            for p in pairs:
                if p.sell in watcher.seen and p.buy in watcher.seen:
                    latencies.append(max(watcher.seen[p.sell], watcher.seen[p.buy]) - p.sent)
                else:
                    unseen += 1
        else:
            latencies = [p.answered - p.sent for p in pairs]
    return {
        "pairs": len(pairs), "seconds": duration,
        "pairs_per_s": round(len(pairs) / duration, 1),
        "matched_in_response": sum(p.matched_in_response for p in pairs),
        "errors": errors, "latency": w.latency_summary(latencies),
        "latencies_s": latencies,  # for the runner to merge rounds; not reported
        "latency_is": ("buy sent -> both matched updates seen on GET /v1/feed" if with_feed
                       else "buy sent -> buy's response (this service has no GET /v1/feed)"),
        "pairs_not_seen_on_feed": unseen if with_feed else None,
        "feed_matched_updates_seen": watcher.events if with_feed else None,
        "feed_error": feed_error if with_feed else None,
        # The load generator shares the machine: its own CPU is part of the picture.
        "load_generator_cpu_s": round(time.process_time(), 2),
    }


def main() -> None:
    config = json.load(sys.stdin)
    runner: Callable[..., Any]
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is optional
        runner = asyncio.run
    if config.get("mode") == "batch":
        from kevin.bench import batch

        result = runner(batch.drive(config))
    else:
        result = runner(drive(config))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
