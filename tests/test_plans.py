"""The submission's statements keep one generic plan once the tables have statistics.

PostgreSQL plans a prepared statement for its parameters the first five times, then keeps
one generic plan if that looks no dearer. The candidate search once could not bound its
index scan by a price whose value it did not know, so with statistics its generic plan
always looked dearer and every submission re-planned the whole UNION (README,
Performance, change 15). This drives the statement on one connection and reads
pg_prepared_statements of that very session."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kevin.domain.models import TradeSubmission
from kevin.engine.service import Kevin
from kevin.store import database
from tests.conftest import trade_body

pytestmark = pytest.mark.slow

RESTING = 3_000
PAIRS = 12


async def test_the_candidate_search_keeps_a_generic_plan_on_analyzed_tables(db_url):
    pool = await database.create_pool(db_url, min_size=1, max_size=1)
    try:
        kevin = Kevin(pool)
        for name in ("BANKA", "BANKB"):
            await kevin.create_participant(name)
        # A deep book of resting sells under the same key, then real statistics.
        await kevin.submit_batch("BANKA", [TradeSubmission.model_validate(
            trade_body(f"R-{i}", price=str(Decimal(900) + i))) for i in range(RESTING)])
        async with pool.acquire() as conn:
            await conn.execute("ANALYZE trades; ANALYZE feed")
        for i in range(PAIRS):
            sell = trade_body(f"A-{i}", price="2000.5")
            buy = trade_body(f"B-{i}", price="2000.5", side="buy", counterparty="BANKA")
            assert (await kevin.submit("BANKA", TradeSubmission.model_validate(sell)))[0] \
                == "created"
            _, matched = await kevin.submit("BANKB", TradeSubmission.model_validate(buy))
            assert matched.status == "matched"
        async with pool.acquire() as conn:
            plans = [dict(r) for r in await conn.fetch(
                "SELECT name, generic_plans, custom_plans FROM pg_prepared_statements "
                "WHERE statement LIKE '%WITH within AS MATERIALIZED%' "
                "AND statement NOT LIKE '%pg_prepared_statements%'")]  # not this query
    finally:
        await pool.close()
    # Two searches per pair; PostgreSQL's first five are always custom.
    assert len(plans) == 1, plans
    assert plans[0]["custom_plans"] <= 5, plans
    assert plans[0]["generic_plans"] >= 2 * PAIRS - 5, plans
