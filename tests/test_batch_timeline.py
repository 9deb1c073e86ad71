"""benchmarks/batch_cpu.py --timeline: when a batch's connection had a statement in
flight, and the longest stretches it sat idle."""

from __future__ import annotations

from benchmarks.batch_cpu import timeline


def test_the_timeline_counts_overlapping_statements_once_and_ranks_the_idle_stretches():
    began = 100.0
    statements = [
        (100.010, 100.030, "SELECT first"),
        (100.020, 100.040, "SELECT overlapping"),  # pipelined: 10 ms counted once
        (100.140, 100.200, "WITH flipped AS write"),  # after 100 ms of Python alone
    ]
    in_flight, idle, order = timeline(statements, began, 100.250)
    assert in_flight.split()[:2] == ["in", "flight"]
    assert "0.090 s of the engine's 0.250 s; 3 statements" in in_flight
    # Longest first: before the write, then the engine's return, then before the first.
    assert idle.index("100 at 40 before WITH flipped") < idle.index(
        "50 at 200 before (the engine returns)") < idle.index("10 at 0 before SELECT first")
    assert order.endswith("SELECT first 10+20, SELECT overl 20+20, WITH flipped 140+60")
