"""The load generator's measuring parts on their own, without a server: the event-stream
reading that notes when each trade is seen matched, the pair latency computed from it,
and the open-loop pacing of the latency slices."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from kevin.bench.loadgen import FeedWatcher, Pair, pace, pair_latencies
from kevin.bench.runner import Options, pairs_text


def _event(name: bytes, participant: str, trade_id: str) -> list[bytes]:
    data = orjson.dumps({"participant": participant, "trade_id": trade_id, "seq": 1})
    return [b"id: 1\n", b"event: " + name + b"\n", b"data: " + data + b"\n", b"\n"]


def test_the_watcher_notes_each_trade_when_its_matched_update_first_arrives() -> None:
    watcher = FeedWatcher()
    lines = [
        *_event(b"unmatched", "BANKA", "S1"),  # the sell resting: not a match
        b": keep-alive\n",
        *_event(b"matched", "BANKA", "S1"),
        *_event(b"matched", "BANKB", "B1"),
        *_event(b"matched", "BANKA", "S1"),  # seen again later: the first time counts
    ]
    for now, line in enumerate(lines):
        watcher.take(line, float(now))
    assert watcher.seen == {("BANKA", "S1"): 7.0, ("BANKB", "B1"): 11.0}
    assert watcher.events == 3


def test_a_data_line_after_a_blank_line_belongs_to_no_matched_event() -> None:
    watcher = FeedWatcher()
    data = orjson.dumps({"participant": "BANKA", "trade_id": "S1"})
    for line in (b"event: matched\r\n", b"\r\n", b"data: " + data + b"\r\n"):
        watcher.take(line, 1.0)
    assert watcher.seen == {}


async def test_waiting_for_trades_ends_when_the_last_is_seen() -> None:
    watcher = FeedWatcher()
    for line in _event(b"matched", "BANKA", "S1"):
        watcher.take(line, 1.0)
    everything = watcher.await_all([("BANKA", "S1"), ("BANKB", "B1")])
    assert not everything.is_set()
    for line in _event(b"matched", "BANKB", "B1"):
        watcher.take(line, 2.0)
    assert everything.is_set()
    assert FeedWatcher().await_all([]).is_set()


def test_a_pairs_latency_runs_from_the_buy_sent_to_the_later_leg_seen() -> None:
    pairs = [Pair(("BANKA", "S1"), ("BANKB", "B1"), sent=10.0, answered=10.01,
                  matched_in_response=True),
             Pair(("BANKA", "S2"), ("BANKB", "B2"), sent=20.0, answered=20.01,
                  matched_in_response=True)]
    seen = {("BANKA", "S1"): 10.030, ("BANKB", "B1"): 10.025, ("BANKB", "B2"): 20.02}
    latencies, unseen = pair_latencies(pairs, seen)
    assert latencies == [pytest.approx(0.030)]  # the sell's update came last
    assert unseen == 1  # S2 never seen matched: counted, not timed


async def test_pacing_starts_each_launch_on_schedule_whatever_the_earlier_ones_do() -> None:
    release = asyncio.Event()
    started: dict[int, float] = {}

    async def launch(k: int) -> None:
        started[k] = time.perf_counter()
        await release.wait()  # no launch finishes while the schedule runs: an open loop

    rate = 200.0
    start = time.perf_counter() + 0.01
    lateness, running = await pace(rate, start, start + 0.1, launch)
    assert len(lateness) == 20 and len(running) == 20
    await asyncio.sleep(0)
    assert sorted(started) == list(range(20))
    for k, at in started.items():
        assert at >= start + k / rate  # never early
    release.set()
    await asyncio.wait(running, timeout=5)
    assert all(task.done() for task in running)


def test_the_text_says_whether_each_target_is_met() -> None:
    def config(workers: int, ratio: float, p99: float) -> dict[str, object]:
        latency = {"p50_ms": 10.0, "p99_ms": p99, "max_ms": p99}
        return {
            "workers": workers, "group_commit": workers == 1, "ratio": 0.5,
            "minimal_ratio": ratio,
            "rounds": [{"pairs_per_s": 100.0, "ratio": 0.5, "minimal_ratio": ratio}],
            "service": {"pairs_per_s": 100.0, "latency": latency, "errors": {}},
            "paced": {"rate": 50.0, "pairs": 250, "latency": latency, "errors": {},
                      "latency_is": "buy sent -> both matched updates seen on GET /v1/feed",
                      "pairs_not_seen_on_feed": 0, "unfinished": 0,
                      "start_lateness_p99_ms": 0.5,
                      "other_transactions": {"longest_s": workers * 0.04,
                                             "share_over_target": 0.25}}}

    figures = {
        "ceiling": {"pairs_per_s": 200.0, "latency": {"p50_ms": 1.0, "p99_ms": 2.0},
                    "latency_is": "BEGIN to COMMIT"},
        "minimal_ceiling": {"pairs_per_s": 400.0, "script": "pgbench_pair.sql"},
        "rounds": [{"ceiling_pairs_per_s": 200.0, "minimal_pairs_per_s": 400.0}],
        "services": [config(1, 0.25, 20.0), config(2, 0.35, 70.0)], "latency_at": 0.5}
    text = pairs_text(figures, Options(rounds=1))
    one, two = text.split("kevin serve --workers 1, group commit on")[1].split(
        "kevin serve --workers 2, group commit off")
    assert "0.25 x minimal ceiling (target >= 0.3: NOT met)" in one
    assert "p99 20.0 ms max 20.0 ms (target p99 < 50 ms: met)" in one
    assert "0.35 x minimal ceiling (target >= 0.3: met)" in two
    assert "(target p99 < 50 ms: NOT met)" in two
    # Another session's transaction open longer than the target is called out.
    assert "held transactions" not in one
    assert "held transactions open up to 0.1 s (25% of samples over 50 ms)" in two
