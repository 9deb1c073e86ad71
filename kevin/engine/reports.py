"""Reports over the versions: read-only, one statement each."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from kevin.domain.cutoffs import latest_trade_date_passed
from kevin.domain.reports import StpCounts, StpQuery, StpReport, build_report
from kevin.store import cutoffs as cutoff_store
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
                    conn, query.start, query.end, query.participant, query.group_by, None,
                    await overdue_dates(conn, now, None))
                return now, total, groups
            total, groups = await report_store.stp_counts(
                conn, query.start, query.end, query.participant, query.group_by, instant,
                await overdue_dates(conn, instant, instant))
            return instant, total, groups

        as_of, total, groups = await self.reads.read(count, as_of=query.as_of)
        return build_report(query, as_of, total, groups)


async def overdue_dates(conn: asyncpg.Connection, instant: datetime, as_of: datetime | None
                        ) -> report_store.OverdueDates | None:
    """What the report's ``overdue`` needs: per profile claim and per product's rules in
    force at the instant (``as_of``, or now), the last trade date whose cut-off had
    passed at ``instant`` — a trade open then is overdue exactly when its trade date is
    at most that (a cut-off grows with the trade date), as a read at that instant says.
    None when no cut-off is in force: nothing is overdue."""
    cutoffs = await (cutoff_store.live_cutoffs(conn) if as_of is None
                     else cutoff_store.cutoffs_as_of(conn, as_of))
    if not cutoffs.in_force():
        return None
    return report_store.OverdueDates(
        claims={claim: latest_trade_date_passed(c, instant) if c is not None else None
                for claim, c in cutoffs.profiles.items()},
        rules={product: latest_trade_date_passed(c, instant) if c is not None else None
               for product, c in cutoffs.rules.items()})
