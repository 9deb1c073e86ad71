"""The cut-offs in force now (or at an instant), read in two statements: every live
profile's and every product's rules' (a handful of rows, each from its one-latest index).
With them a caller decides the cut-off of many trades, or of many (pair, product, trade
date) groups, with no query per trade (kevin.domain.cutoffs.DecidingCutoffs)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from kevin.domain.cutoffs import DecidingCutoffs
from kevin.domain.profiles import Cutoff

LIVE_PROFILE_CUTOFFS = """
SELECT participant_a, participant_b, product, body->'cutoff' AS cutoff FROM profiles
WHERE latest AND NOT retired
"""
LIVE_RULES_CUTOFFS = "SELECT product, body->'cutoff' AS cutoff FROM rules WHERE latest"

# The same as they stood at instant $1: per profile name, and per product, the last
# version recorded by then (a profile's retiring version: none).
PROFILE_CUTOFFS_AS_OF = """
SELECT participant_a, participant_b, product, body->'cutoff' AS cutoff FROM (
    SELECT DISTINCT ON (name) participant_a, participant_b, product, body, retired
    FROM profiles WHERE recorded_at <= $1
    ORDER BY name, version DESC
) AS at_instant
WHERE NOT retired
"""
RULES_CUTOFFS_AS_OF = """
SELECT DISTINCT ON (product) product, body->'cutoff' AS cutoff FROM rules
WHERE recorded_at <= $1
ORDER BY product, version DESC
"""


async def live_cutoffs(conn: asyncpg.Connection) -> DecidingCutoffs:
    return await _deciding(conn, LIVE_PROFILE_CUTOFFS, LIVE_RULES_CUTOFFS)


async def cutoffs_as_of(conn: asyncpg.Connection, instant: datetime) -> DecidingCutoffs:
    """The cut-offs in force at ``instant`` (as-of reports)."""
    return await _deciding(conn, PROFILE_CUTOFFS_AS_OF, RULES_CUTOFFS_AS_OF, instant)


async def _deciding(conn: asyncpg.Connection, profiles: str, rules: str,
                    *args: object) -> DecidingCutoffs:
    return DecidingCutoffs(
        profiles={(r["participant_a"], r["participant_b"], r["product"]):
                  _cutoff(r["cutoff"]) for r in await conn.fetch(profiles, *args)},
        rules={r["product"]: _cutoff(r["cutoff"]) for r in await conn.fetch(rules, *args)})


def _cutoff(body: object) -> Cutoff | None:
    return Cutoff.model_validate(body) if body is not None else None
