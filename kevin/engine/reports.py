"""Reports over the versions: read-only, one statement each."""

from __future__ import annotations

import asyncpg

from kevin.domain.reports import StpQuery, StpReport, build_report
from kevin.store import database
from kevin.store import reports as report_store


class Reports:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def stp(self, query: StpQuery) -> StpReport:
        """The STP report as of ``query.as_of`` (now, by the database's clock, if None)."""
        async with database.connection(self.pool) as conn:
            as_of = query.as_of or await conn.fetchval("SELECT clock_timestamp()")
            total, groups = await report_store.stp_counts(
                conn, query.start, query.end, query.participant, query.group_by, as_of)
        return build_report(query, as_of, total, groups)
