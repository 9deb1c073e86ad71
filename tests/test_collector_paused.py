"""The cyclic collector is paused while a batch request builds what it keeps alive —
its submissions, the engine's book and outcomes, the answer — and resumed once they are
freed (kevin.heap.collector_paused), not before: resumed with them alive, its first pass
walks every one of them."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

from aiohttp import web

from kevin import heap
from kevin.api import batch as batch_route
from kevin.api.app_keys import KEVIN
from tests.conftest import trade_body
from tests.test_batch_api import batch


def test_only_the_outermost_pause_resumes_the_collector():
    assert gc.isenabled()
    with heap.collector_paused():
        with heap.collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with heap.collector_paused():
            pass
        assert not gc.isenabled()  # paused by someone else: theirs to resume
    finally:
        gc.enable()


def test_overlapping_pauses_resume_the_collector_when_the_last_ends():
    # Two batch requests at once: the first to end must not resume the collector under
    # the second, still building its book.
    first, second = heap.collector_paused(), heap.collector_paused()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not gc.isenabled()
    second.__exit__(None, None, None)
    assert gc.isenabled()


async def test_two_batch_requests_at_once_keep_the_collector_paused_until_both_end(
        client, banks, monkeypatch):
    # The first request ends (answered) while the second is held inside the engine.
    service = client.server.app[KEVIN]
    submit_batch = service.submit_batch
    entered = {"A-1": asyncio.Event(), "A-2": asyncio.Event()}
    release = {"A-1": asyncio.Event(), "A-2": asyncio.Event()}
    during_second: list[bool] = []

    async def submitted(participant: str, submissions: Any) -> Any:
        trade_id = submissions[0].trade_id
        entered[trade_id].set()
        await asyncio.wait_for(release[trade_id].wait(), 10)
        if trade_id == "A-2":
            during_second.append(gc.isenabled())
        return await submit_batch(participant, submissions)

    monkeypatch.setattr(service, "submit_batch", submitted)
    a, _ = banks
    assert gc.isenabled()
    first = asyncio.ensure_future(batch(client, a, trade_body("A-1")))
    await asyncio.wait_for(entered["A-1"].wait(), 10)
    second = asyncio.ensure_future(batch(client, a, trade_body("A-2", price="1001")))
    await asyncio.wait_for(entered["A-2"].wait(), 10)
    release["A-1"].set()
    answer = await asyncio.wait_for(first, 10)
    assert [r["result"] for r in answer["results"]] == ["created"]
    release["A-2"].set()
    answer = await asyncio.wait_for(second, 10)
    assert [r["result"] for r in answer["results"]] == ["created"]
    assert during_second == [False]
    assert gc.isenabled()


async def test_a_batch_request_pauses_the_collector_until_its_objects_are_freed(
        client, banks, monkeypatch):
    seen: dict[str, list[bool]] = {"parse_line": [], "results_answer": []}

    def spy(name: str) -> Any:
        original = getattr(batch_route, name)

        def call(*args: Any) -> Any:
            seen[name].append(gc.isenabled())
            return original(*args)
        return call

    for name in seen:
        monkeypatch.setattr(batch_route, name, spy(name))
    a, _ = banks
    assert gc.isenabled()
    answer = await batch(client, a, trade_body("A-1"), trade_body("A-2", price="1001"))
    assert [r["result"] for r in answer["results"]] == ["created", "created"]
    assert seen == {"parse_line": [False, False], "results_answer": [False]}
    assert gc.isenabled()


async def test_a_batch_is_answered_before_its_objects_are_freed(client, banks, monkeypatch):
    # Freeing 10,000 lines' submissions and outcomes takes a few hundredths of a second:
    # the client reads its answer meanwhile.
    events: list[str] = []
    service = client.server.app[KEVIN]
    submit_batch, write_eof = service.submit_batch, web.Response.write_eof

    class Outcomes(list[Any]):  # a list the test can watch (weakref)
        pass

    async def submitted(*args: Any) -> Any:
        outcomes = Outcomes(await submit_batch(*args))
        weakref.finalize(outcomes, events.append, "freed")
        return outcomes

    async def written(self: web.Response, *args: Any) -> None:
        await write_eof(self, *args)
        events.append("sent")

    monkeypatch.setattr(service, "submit_batch", submitted)
    monkeypatch.setattr(web.Response, "write_eof", written)
    a, _ = banks
    answer = await batch(client, a, trade_body("A-1"))
    assert [r["result"] for r in answer["results"]] == ["created"]
    assert "freed" in events
    assert events.index("sent") < events.index("freed")
