"""The load generator: HTTP clients submitting pairs to a running Kevin.

Run by ``kevin bench`` as a separate process (``python -m kevin.bench.loadgen``), so the
service's event loop and the clients' never share a core's time slice inside one Python
process. Reads its configuration as JSON on stdin; prints its figures as JSON on stdout.

A pair: POST the sell, then POST the buy with identical terms. Its latency runs from the
moment the buy is sent until both matched updates have been seen on the admin's
``GET /v1/feed`` event stream — or, on a service without a feed, until the buy's response.
The stream starts after ``feed_after``, the feed's head when the slice began: a live
consumer, not one catching up on the earlier slices' updates.

Two ways to load the service:

* closed loop (``drive``): ``concurrency`` clients, each posting its next pair as soon as
  the last is answered — the most pairs per second the service gives them (its peak);
* open loop (``drive_paced``, ``"mode": "paced"``): a pair started every ``1 / rate``
  seconds whatever the earlier ones are doing, as independent submitters do — the pair
  latency at a given rate, which a closed loop cannot show (a slow answer there also
  slows the arrivals, and the queue it would have caused is never seen).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from kevin.bench import workload as w

TradeKey = tuple[str, str]  # (participant, trade_id)
Launches = set[asyncio.Task[None]]


@dataclass
class Pair:
    sell: TradeKey
    buy: TradeKey
    sent: float  # when the buy was sent
    answered: float  # when the buy's response arrived
    matched_in_response: bool


@dataclass
class FeedWatcher:
    """Follows the admin event stream and notes when each trade's matched update arrives."""

    seen: dict[TradeKey, float] = field(default_factory=dict)
    events: int = 0
    wanted: set[TradeKey] = field(default_factory=set)
    all_seen: asyncio.Event = field(default_factory=asyncio.Event)
    _event: bytes | None = None

    async def follow(self, session: aiohttp.ClientSession, url: str, token: str,
                     after: int) -> None:
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        async with session.get(f"{url}/v1/feed?after={after}", headers=headers,
                               timeout=aiohttp.ClientTimeout(total=None)) as resp:
            resp.raise_for_status()
            async for raw in resp.content:
                self.take(raw, time.perf_counter())

    def take(self, raw: bytes, now: float) -> None:
        """One line of the event stream, received at ``now``: a ``matched`` event's data
        line notes its trade as seen (the first time only)."""
        line = raw.rstrip(b"\r\n")
        if line.startswith(b"event:"):
            self._event = line[6:].strip()
        elif line.startswith(b"data:") and self._event == b"matched":
            data = orjson.loads(line[5:])
            key = (data["participant"], data["trade_id"])
            self.seen.setdefault(key, now)
            self.events += 1
            if key in self.wanted:
                self.wanted.discard(key)
                if not self.wanted:
                    self.all_seen.set()
        elif not line:
            self._event = None

    def await_all(self, keys: Iterable[TradeKey]) -> asyncio.Event:
        """The event set once every one of ``keys`` has been seen (at once if they are)."""
        self.wanted = set(keys) - set(self.seen)
        if not self.wanted:
            self.all_seen.set()
        return self.all_seen


def pair_latencies(pairs: Iterable[Pair],
                   seen: dict[TradeKey, float]) -> tuple[list[float], int]:
    """Each pair's latency, buy sent -> the later of its two matched updates seen; and how
    many pairs had a leg never seen matched on the feed (counted, not timed)."""
    latencies: list[float] = []
    unseen = 0
    for p in pairs:
        if p.sell in seen and p.buy in seen:
            latencies.append(max(seen[p.sell], seen[p.buy]) - p.sent)
        else:
            unseen += 1
    return latencies, unseen


async def _sleep_until(instant: float) -> None:
    """Sleep until perf_counter() reaches ``instant``, never less (a timer may fire a
    little early: the remainder is slept again)."""
    wait = instant - time.perf_counter()
    if wait > 0:
        await asyncio.sleep(wait)
        await _sleep_until(instant)


async def pace(rate: float, start: float, until: float,
               launch: Callable[[int], Coroutine[Any, Any, None]]) -> tuple[list[float], Launches]:
    """Start ``launch(k)`` at ``start + k / rate`` for every k due before ``until``, never
    waiting for earlier launches (an open loop). Returns how late each start was (s) —
    the generator's own health: a late start is load not offered — and the launches still
    running."""
    lateness: list[float] = []
    running: Launches = set()
    k = 0
    while (due := start + k / rate) < until:
        await _sleep_until(due)
        lateness.append(max(0.0, time.perf_counter() - due))
        task = asyncio.create_task(launch(k))
        running.add(task)
        task.add_done_callback(running.discard)
        k += 1
    return lateness, running


async def has_feed(session: aiohttp.ClientSession, url: str, token: str) -> bool:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    async with session.get(f"{url}/v1/feed?after=0&limit=1", headers=headers) as resp:
        await resp.read()
        return resp.status == 200


class Clients:
    """One HTTP session posting pairs to the service, and the feed follower timing them."""

    def __init__(self, config: dict[str, Any], session: aiohttp.ClientSession) -> None:
        self.config = config
        self.url, self.run_id = config["url"], config["run_id"]
        self.keys = config["keys"]
        self.session = session
        self.headers = {
            p: {"Authorization": f"Bearer {k}", "Content-Type": "application/json"}
            for p, k in ((w.SELLER, config["seller_key"]), (w.BUYER, config["buyer_key"]))}
        self.errors: dict[str, int] = {}
        self.pairs: list[Pair] = []
        self.watcher = FeedWatcher()
        self.follower: asyncio.Task[None] | None = None
        self.with_feed = False

    async def start_feed(self) -> None:
        self.with_feed = await has_feed(self.session, self.url, self.config["admin_token"])
        if self.with_feed:
            self.follower = asyncio.create_task(self.watcher.follow(
                self.session, self.url, self.config["admin_token"],
                self.config.get("feed_after", 0)))

    async def post(self, participant: str, body: dict[str, Any]) -> dict[str, Any] | None:
        async with self.session.post(f"{self.url}/v1/trades", data=orjson.dumps(body),
                                     headers=self.headers[participant]) as resp:
            payload = await resp.read()
            if resp.status not in (200, 201):
                self.errors[str(resp.status)] = self.errors.get(str(resp.status), 0) + 1
                return None
            return orjson.loads(payload)

    async def pair(self, client: int, i: int, counted: Callable[[float, float], bool]) -> None:
        """Pair ``i`` of ``client``: the sell, then the buy; kept if ``counted(began,
        answered)``."""
        sell, buy = w.pair_terms(self.run_id, client, i, self.keys)
        began = time.perf_counter()
        if await self.post(w.SELLER, sell) is None:
            return
        sent = time.perf_counter()
        answer = await self.post(w.BUYER, buy)
        answered = time.perf_counter()
        if answer is not None and counted(began, answered):
            self.pairs.append(Pair((w.SELLER, sell["trade_id"]), (w.BUYER, buy["trade_id"]),
                                   sent, answered, answer.get("status") == "matched"))

    async def figures(self, seconds: float) -> dict[str, Any]:
        """Waits (bounded) for the feed to show every kept pair matched, then the figures."""
        feed_error = None
        if self.follower is not None:
            everything = self.watcher.await_all(k for p in self.pairs for k in (p.sell, p.buy))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(everything.wait(), timeout=15)
            if self.follower.done() and not self.follower.cancelled() \
                    and self.follower.exception():
                feed_error = repr(self.follower.exception())
            self.follower.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await self.follower
            latencies, unseen = pair_latencies(self.pairs, self.watcher.seen)
        else:
            latencies, unseen = [p.answered - p.sent for p in self.pairs], 0
        return {
            "pairs": len(self.pairs), "seconds": seconds,
            "pairs_per_s": round(len(self.pairs) / seconds, 1),
            "matched_in_response": sum(p.matched_in_response for p in self.pairs),
            "errors": self.errors, "latency": w.latency_summary(latencies),
            "latencies_s": latencies,  # for the runner to merge rounds; not reported
            "latency_is": ("buy sent -> both matched updates seen on GET /v1/feed"
                           if self.with_feed
                           else "buy sent -> buy's response (this service has no GET /v1/feed)"),
            "pairs_not_seen_on_feed": unseen if self.with_feed else None,
            "feed_matched_updates_seen": self.watcher.events if self.with_feed else None,
            "feed_error": feed_error if self.with_feed else None,
            # The load generator shares the machine: its own CPU is part of the picture.
            "load_generator_cpu_s": round(time.process_time(), 2),
        }


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=False))


async def drive(config: dict[str, Any]) -> dict[str, Any]:
    """Closed loop: ``concurrency`` clients, each on match key ``c % keys``."""
    warmup, duration = config["warmup"], config["duration"]
    async with _session() as session:
        clients = Clients(config, session)
        await clients.start_feed()
        start = time.perf_counter()
        window = (start + warmup, start + warmup + duration)

        def counted(began: float, answered: float) -> bool:
            return window[0] <= began and answered <= window[1]

        async def client(c: int) -> None:
            i = 0
            while time.perf_counter() < window[1]:
                await clients.pair(c, i, counted)
                i += 1

        await asyncio.gather(*(client(c) for c in range(config["concurrency"])))
        return await clients.figures(duration)


async def drive_paced(config: dict[str, Any]) -> dict[str, Any]:
    """Open loop: a pair started every ``1 / rate`` s for ``warmup + duration`` s, pair k on
    match key ``k % keys``; the pairs started in the measured window are timed."""
    rate, warmup, duration = config["rate"], config["warmup"], config["duration"]
    keys = config["keys"]
    async with _session() as session:
        clients = Clients(config, session)
        await clients.start_feed()
        start = time.perf_counter()
        window = (start + warmup, start + warmup + duration)

        async def launch(k: int) -> None:
            due = start + k / rate
            await clients.pair(k % keys, k // keys,
                               lambda _began, _answered: window[0] <= due < window[1])

        lateness, running = await pace(rate, start, window[1], launch)
        unfinished = 0
        if running:  # pairs not answered within a minute are left out, and counted
            _, pending = await asyncio.wait(set(running), timeout=60)
            unfinished = len(pending)
            for task in pending:
                task.cancel()
        figures = await clients.figures(duration)
        measured = [late for k, late in enumerate(lateness) if window[0] <= start + k / rate]
        figures.update(rate=rate, offered_pairs_per_s=round(len(measured) / duration, 1),
                       start_lateness=w.latency_summary(measured), unfinished=unfinished)
        return figures


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
    elif config.get("mode") == "paced":
        result = runner(drive_paced(config))
    else:
        result = runner(drive(config))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
