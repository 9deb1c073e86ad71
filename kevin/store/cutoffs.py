"""The cut-offs in force now, read in two statements: every live profile's and every
product's rules' (a handful of rows, each from its one-latest index). With them a caller
decides the cut-off of many trades, or of many (pair, product, trade date) groups, with
no query per trade (kevin.domain.cutoffs.DecidingCutoffs)."""

from __future__ import annotations

import asyncpg

from kevin.domain.cutoffs import DecidingCutoffs
from kevin.domain.profiles import Cutoff

LIVE_PROFILE_CUTOFFS = """
SELECT participant_a, participant_b, product, body->'cutoff' AS cutoff FROM profiles
WHERE latest AND NOT retired
"""
LIVE_RULES_CUTOFFS = "SELECT product, body->'cutoff' AS cutoff FROM rules WHERE latest"


async def live_cutoffs(conn: asyncpg.Connection) -> DecidingCutoffs:
    return DecidingCutoffs(
        profiles={(r["participant_a"], r["participant_b"], r["product"]):
                  _cutoff(r["cutoff"]) for r in await conn.fetch(LIVE_PROFILE_CUTOFFS)},
        rules={r["product"]: _cutoff(r["cutoff"]) for r in await conn.fetch(LIVE_RULES_CUTOFFS)})


def _cutoff(body: object) -> Cutoff | None:
    return Cutoff.model_validate(body) if body is not None else None
