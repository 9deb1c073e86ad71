"""Reports over the versions: read-only, one statement each (and, while cut-offs are in
force, one more over the open trades, whose cut-offs are computed here)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import asyncpg

from kevin.domain.cutoffs import cutoff_at, is_overdue
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
                    conn, query.start, query.end, query.participant, query.group_by, None)
                return now, *await _with_overdue(conn, query, now, None, total, groups)
            total, groups = await report_store.stp_counts(
                conn, query.start, query.end, query.participant, query.group_by, instant)
            return instant, *await _with_overdue(conn, query, instant, instant, total, groups)

        as_of, total, groups = await self.reads.read(count, as_of=query.as_of)
        return build_report(query, as_of, total, groups)


async def _with_overdue(conn: asyncpg.Connection, query: StpQuery, instant: datetime,
                        as_of: datetime | None, total: StpCounts, groups: list[StpCounts]
                        ) -> tuple[StpCounts, list[StpCounts]]:
    """The counts with ``overdue``: of the trades open at ``instant``, those whose cut-off
    (of the profile or rules in force then, as a read at that instant says) had passed.
    Only trade dates up to the latest whose cut-off passed can be; none at all when no
    cut-off is in force, and then nothing more is read."""
    cutoffs = await (cutoff_store.live_cutoffs(conn) if as_of is None
                     else cutoff_store.cutoffs_as_of(conn, as_of))
    latest = cutoffs.latest_trade_date_passed(instant)
    if latest is None or latest < query.start:
        return total, groups
    # Now, the latest versions are read, so the range can stop at the latest date that
    # may be overdue; as of an instant, a trade's version then may have moved its date.
    end = min(query.end, latest) if as_of is None else query.end
    overdue: dict[str, int] = {}
    for group in await report_store.open_groups(conn, query.start, end, query.participant,
                                                query.group_by, as_of):
        cutoff = cutoffs.for_trade(group.participant, group.counterparty, group.product)
        if cutoff is not None and is_overdue("unmatched", cutoff_at(group.trade_date, cutoff),
                                             instant):
            overdue[group.key] = overdue.get(group.key, 0) + group.open
    return (replace(total, overdue=sum(overdue.values())),
            [replace(g, overdue=overdue.get(g.key or "", 0)) for g in groups])
