"""The submission's statements keep one generic plan once the tables have statistics.

PostgreSQL plans a prepared statement for its parameters the first five times, then keeps
one generic plan if that looks no dearer. The candidate search once could not bound its
index scan by a price whose value it did not know, so with statistics its generic plan
always looked dearer and every submission re-planned the whole UNION (docs/performance.md,
change 15); on a deeper book it did again, and so did the append of a match's
versions and the mismatch-list check, whatever the depth (changes 16, 19): a submission
now runs on generic plans throughout. This drives the statements on one connection and
reads pg_prepared_statements of that very session."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kevin.domain.models import TradeSubmission
from kevin.engine.service import TradeService
from kevin.store import database
from kevin.store.bulk_queries import WRITE_VERSIONS
from kevin.store.matching_queries import NAMING_ANY
from tests.conftest import trade_body

pytestmark = pytest.mark.slow

RESTING = 3_000
PAIRS = 12


def _plans(rows: list[dict[str, object]], statement: str) -> dict[str, object]:
    found = [r for r in rows if r["statement"] == statement]
    assert len(found) == 1, [r["statement"][:60] for r in rows]
    return found[0]


async def test_the_submission_statements_keep_a_generic_plan_on_analyzed_tables(db_url):
    pool = await database.create_pool(db_url, min_size=1, max_size=1)
    try:
        kevin = TradeService(pool)
        for name in ("BANKA", "BANKB"):
            await kevin.create_participant(name)
        # A deep book of resting sells under the same key, then real statistics.
        await kevin.submit_batch("BANKA", [TradeSubmission.model_validate(
            trade_body(f"R-{i}", price=str(Decimal(900) + i))) for i in range(RESTING)])
        async with pool.acquire() as conn:
            await conn.execute("ANALYZE trades; ANALYZE feed")
            before = [dict(r) for r in await conn.fetch(_PREPARED)]
        for i in range(PAIRS):
            sell = trade_body(f"A-{i}", price="2000.5")
            buy = trade_body(f"B-{i}", price="2000.5", side="buy", counterparty="BANKA")
            assert (await kevin.submit("BANKA", TradeSubmission.model_validate(sell)))[0] \
                == "created"
            _, matched = await kevin.submit("BANKB", TradeSubmission.model_validate(buy))
            assert matched.status == "matched"
        async with pool.acquire() as conn:
            rows = [dict(r) for r in await conn.fetch(_PREPARED)]
    finally:
        await pool.close()
    # Each after the submission's first statement asked for generic plans (change 19):
    # not even PostgreSQL's first five are custom. Two searches per pair, one write of
    # versions each (the sell's version 1 alone, the buy's with both legs matched; the
    # batch ran that statement before, planned for its own size) and one mismatch-list
    # check a pair.
    search = [r for r in rows if "WITH within AS MATERIALIZED" in r["statement"]
              and "pg_prepared_statements" not in r["statement"]]  # not this query
    assert len(search) == 1, search
    earlier = {r["statement"]: r for r in before}
    for plans, executions in ((search[0], 2 * PAIRS), (_plans(rows, WRITE_VERSIONS), 2 * PAIRS),
                              (_plans(rows, NAMING_ANY), PAIRS)):
        was = earlier.get(plans["statement"], {"custom_plans": 0, "generic_plans": 0})
        assert (plans["custom_plans"] - was["custom_plans"],
                plans["generic_plans"] - was["generic_plans"]) == (0, executions), plans


_PREPARED = "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"


def _scans(plan: dict[str, object]) -> list[tuple[object, object]]:
    """(node type, relation) of every node of an EXPLAIN (FORMAT JSON) plan."""
    found = [(plan["Node Type"], plan.get("Relation Name"))]
    for child in plan.get("Plans", ()):  # type: ignore[attr-defined]
        found += _scans(child)
    return found


def _indexes(plan: dict[str, object]) -> list[object]:
    """The index of every index scan of an EXPLAIN (FORMAT JSON) plan."""
    found = [plan["Index Name"]] if "Index Name" in plan else []
    for child in plan.get("Plans", ()):  # type: ignore[attr-defined]
        found += _indexes(child)
    return found


async def _plans_on_a_young_table(db_url: str, statement: str, *args: object,
                                  modes: tuple[str, ...] = ("auto",)
                                  ) -> list[dict[str, object]]:
    """``statement``'s plan with ``args`` under each of ``modes`` (plan_cache_mode), on a
    table of RESTING trades that was never analyzed."""
    pool = await database.create_pool(db_url, min_size=1, max_size=1)
    try:
        kevin = TradeService(pool)
        await kevin.create_participant("BANKA")
        await kevin.submit_batch("BANKA", [TradeSubmission.model_validate(
            trade_body(f"R-{i}", price=str(Decimal(900) + i))) for i in range(RESTING)])
        plans = []
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT reltuples FROM pg_class "
                                       "WHERE relname = 'trades'") <= 0  # never analyzed
            for mode in modes:
                await conn.execute(f"SET plan_cache_mode = {mode}")
                plans.append((await conn.fetchval(  # json, decoded by the pool's codec
                    "EXPLAIN (FORMAT JSON) " + statement, *args))[0]["Plan"])
            await conn.execute("RESET plan_cache_mode")
        return plans
    finally:
        await pool.close()


async def test_a_group_s_write_flips_by_index_on_a_table_without_statistics(db_url):
    """A group commit's write (bulk.write_versions) flips each stored version by its own
    index probe: joined with the lines, which the planner guesses at 100, the UPDATE was
    a hash join over every latest row of a table without statistics (change 39)."""
    from kevin.store import bulk_queries

    [plan] = await _plans_on_a_young_table(
        db_url, bulk_queries.WRITE_VERSIONS, [["BANKA", "R-1", 1], ["BANKA", "R-2", 1]], [], 2)
    scans = _scans(plan)
    assert ("Index Scan", "trades") in scans, scans
    assert ("Seq Scan", "trades") not in scans, scans


async def test_a_batch_s_first_submissions_probe_the_primary_key(db_url):
    """Whether a batch's new trade_ids are taken (bulk_queries.FIRST_SUBMISSIONS) is one
    probe of pk_trades a line, on a table without statistics too: an EXISTS was planned
    there as a hash of the whole table, and a probe of the partial indexes on latest as a
    scan of the participant's every latest trade (ix_trades_latest_by_participant)."""
    from kevin.store import bulk_queries

    for plan in await _plans_on_a_young_table(
            db_url, bulk_queries.FIRST_SUBMISSIONS, [["BANKA", "R-1"], ["BANKA", "N-1"]],
            modes=("force_custom_plan", "force_generic_plan")):
        assert ("Seq Scan", "trades") not in _scans(plan), plan
        assert _indexes(plan) == ["pk_trades"], plan


async def test_a_group_s_first_submissions_probe_the_primary_key(db_url):
    """A group commit's read of its first submissions (bulk_queries
    .FIRST_SUBMISSIONS_AND_BROKEN, with the broken pairs) keeps FIRST_SUBMISSIONS' plan:
    one probe of pk_trades a line, never a scan of trades."""
    from kevin.store import bulk_queries

    for plan in await _plans_on_a_young_table(
            db_url, bulk_queries.FIRST_SUBMISSIONS_AND_BROKEN,
            [["BANKA", "R-1"], ["BANKA", "N-1"]], ["BANKA", "BANKB"],
            modes=("force_custom_plan", "force_generic_plan")):
        assert ("Seq Scan", "trades") not in _scans(plan), plan
        assert [i for i in _indexes(plan) if "broken" not in i] == ["pk_trades"], plan


async def test_a_submission_s_first_statement_probes_the_primary_key(db_url):
    """The match-key lock and rules statement reads whether the new trade_id is taken
    (matching_queries.LOCK_MATCH_KEY_AND_RULES) with one probe of pk_trades, never a
    scan of trades."""
    from kevin.store.matching import MATCH_LOCK_CLASS
    from kevin.store.matching_queries import LOCK_MATCH_KEY_AND_RULES

    for plan in await _plans_on_a_young_table(
            db_url, LOCK_MATCH_KEY_AND_RULES, MATCH_LOCK_CLASS, 1, "XAU", "BANKA", "BANKB",
            "BANKA", "R-1", modes=("force_custom_plan", "force_generic_plan")):
        assert ("Seq Scan", "trades") not in _scans(plan), plan
        assert "pk_trades" in _indexes(plan), plan
