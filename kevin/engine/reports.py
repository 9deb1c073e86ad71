"""Reports over the versions: read-only, one statement each."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from kevin.domain.reports import StpCounts, StpQuery, StpReport, build_report
from kevin.store import reports as report_store
from kevin.store.replica import Reads


class Reports:
    def __init__(self, reads: Reads) -> None:
        self.reads = reads

    async def stp(self, query: StpQuery) -> StpReport:
        """The STP report as of ``query.as_of``; if None, now by the primary's clock — or,
        on a replica, the instant up to which the replica has every commit (the report
        says which)."""

        async def count(conn: asyncpg.Connection, settled_at: datetime | None
                        ) -> tuple[datetime, StpCounts, list[StpCounts]]:
            as_of = (query.as_of or settled_at
                     or await conn.fetchval("SELECT clock_timestamp()"))
            total, groups = await report_store.stp_counts(
                conn, query.start, query.end, query.participant, query.group_by, as_of)
            return as_of, total, groups

        as_of, total, groups = await self.reads.read(count, as_of=query.as_of)
        return build_report(query, as_of, total, groups)
