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
            instant = query.as_of or settled_at
            if instant is None:
                # Now, on the primary: the store's statement over the latest versions,
                # cheaper than reading every version as of an instant.
                now = await conn.fetchval("SELECT clock_timestamp()")
                total, groups = await report_store.stp_counts(
                    conn, query.start, query.end, query.participant, query.group_by, None)
                return now, total, groups
            total, groups = await report_store.stp_counts(
                conn, query.start, query.end, query.participant, query.group_by, instant)
            return instant, total, groups

        as_of, total, groups = await self.reads.read(count, as_of=query.as_of)
        return build_report(query, as_of, total, groups)
