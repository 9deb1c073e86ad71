"""``kevin check``: verify the invariants 1-6 and 8-11 of docs/design.md on a live database.

The SQL lives in ``kevin.store.invariants``; this module runs it and words the report.
Invariant 3 (a version is written only against the one it derives from) leaves its trace
as invariant 2's: a lost race would show as two latest rows or a hole in the versions.
Invariant 7 (deterministic matching) is a property of code, proven by tests, not data.
Invariant 11 (one overdue notice per trade and date) is its unique key; its feed updates
are checked with invariant 5's.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import asyncpg

from kevin.dburl import server_settings, to_asyncpg_dsn
from kevin.domain.errors import DatabaseUnavailable
from kevin.store import database
from kevin.store.invariants import Violation, find_violations

INVARIANTS = {
    1: "trades are insert-only, enforced by a trigger",
    2: "versions run 1..n without holes; exactly one latest row, the highest version",
    4: "a live match joins exactly two mirrored, opposite trades that name each other",
    5: "every version has exactly one feed update (a proposal's: one per participant)",
    6: "feed seq is unique and grows with the version",
    8: "an accepted proposal's trades are matched (agreed) or cancelled, as it said",
    9: "no two open proposals of one kind for the same trades; an open proposal names "
       "their latest versions",
    10: "a match names the profile or rules version that decided it, in force at its instant",
}


@dataclass(frozen=True)
class Report:
    violations: list[Violation]
    limit: int

    @property
    def ok(self) -> bool:
        return not self.violations

    def offenders(self, invariant: int | None = None) -> set[tuple[str | None, str | None]]:
        """(participant, trade_id) of every offending trade, for one invariant or all."""
        return {(v.participant, v.trade_id) for v in self.violations
                if invariant is None or v.invariant == invariant}

    def text(self) -> str:
        if self.ok:
            return f"ok: invariants {', '.join(map(str, INVARIANTS))} hold"
        by_invariant: dict[int, list[Violation]] = defaultdict(list)
        for v in self.violations:
            by_invariant[v.invariant].append(v)
        lines = [f"FAILED: {len(by_invariant)} invariant(s) violated"]
        for number in sorted(by_invariant):
            found = by_invariant[number]
            capped = f" (first {self.limit} shown)" if len(found) >= self.limit else ""
            lines.append(f"invariant {number} ({INVARIANTS[number]}): "
                         f"{len(found)} violation(s){capped}")
            lines.extend(f"  {v.subject}: {v.problem}" for v in found)
        return "\n".join(lines)


async def check(url: str, limit: int = 100) -> Report:
    """Run every check against the database at ``url`` in one snapshot."""
    try:
        conn = await asyncpg.connect(
            to_asyncpg_dsn(url), timeout=database.ACQUIRE_TIMEOUT,
            server_settings=server_settings(url, "kevin check"))
    except database.CONNECTIVITY_ERRORS as e:
        raise DatabaseUnavailable(f"cannot connect to the database: {e}") from e
    try:
        return Report(await find_violations(conn, limit), limit)
    except database.CONNECTIVITY_ERRORS as e:
        raise DatabaseUnavailable(f"lost the database during the check: {e}") from e
    finally:
        await conn.close()
