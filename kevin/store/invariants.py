"""SQL that verifies the invariants 1-6 and 8-11 of docs/design.md live (``kevin check``).

Each statement returns one row per offending trade (or trigger), with the columns
``participant, trade_id, version, problem``; an empty result means the invariant holds.
They are whole-table scans by design: a check reads everything once, off the hot path.
Run them in one REPEATABLE READ, READ ONLY transaction so they judge a single snapshot —
a version and its feed row commit together, so a snapshot never sees one without the
other, and a check never reports a write that was merely half-way through.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

# Invariant 1: the database itself refuses changes. Look for an enabled trigger on
# trades that fires on UPDATE and DELETE (per row, before) and one on TRUNCATE, both
# calling a function; tgenabled 'D' is a disabled trigger. tgtype bits (pg_trigger.h):
# 1 ROW, 2 BEFORE, 8 DELETE, 16 UPDATE, 32 TRUNCATE.
TRIGGERS = """
WITH guards AS (
    SELECT tgname, tgenabled <> 'D' AS enabled, tgtype
    FROM pg_trigger
    WHERE tgrelid = 'trades'::regclass AND NOT tgisinternal
)
SELECT NULL::text AS participant, NULL::text AS trade_id, NULL::int AS version,
       problem
FROM (
    SELECT 'no enabled BEFORE UPDATE OR DELETE row trigger on trades ('
           || coalesce(string_agg(tgname || CASE WHEN enabled THEN '' ELSE ' disabled' END,
                                  ', '), 'none') || ')' AS problem
    FROM guards
    HAVING NOT coalesce(bool_or(enabled AND tgtype & 27 = 27), false)
    UNION ALL
    SELECT 'no enabled TRUNCATE trigger on trades'
    FROM guards
    HAVING NOT coalesce(bool_or(enabled AND tgtype & 32 = 32), false)
) AS missing
"""

# Invariant 2: per trade, versions are exactly 1..n, one row is latest, and it is n.
# Over trade_history (trades UNION ALL trades_archive): archived versions still count, and
# a version in both tables would show as a duplicate.
VERSIONS = """
SELECT participant, trade_id, NULL::int AS version,
       concat_ws('; ',
           CASE WHEN min(version) <> 1 OR max(version) <> count(*)
                OR count(DISTINCT version) <> count(*)
                THEN 'versions ' || string_agg(version::text, ',' ORDER BY version)
                     || ' are not 1..' || count(*) END,
           CASE WHEN count(*) FILTER (WHERE latest) <> 1
                THEN count(*) FILTER (WHERE latest) || ' latest rows, not 1' END,
           CASE WHEN count(*) FILTER (WHERE latest) = 1
                 AND max(version) FILTER (WHERE latest) <> max(version)
                THEN 'latest is version ' || max(version) FILTER (WHERE latest)
                     || ', not the highest (' || max(version) || ')' END
       ) AS problem
FROM trade_history
GROUP BY participant, trade_id
HAVING min(version) <> 1 OR max(version) <> count(*) OR count(DISTINCT version) <> count(*)
    OR count(*) FILTER (WHERE latest) <> 1
    OR max(version) FILTER (WHERE latest) <> max(version)
ORDER BY participant, trade_id
LIMIT $1
"""

# Invariant 5: every version has exactly one feed update, and every update a version. Feed rows
# of archived versions stay, so versions are read from trade_history. A proposal version has
# one update on each of its two participants' feeds, an overdue notice one on its
# participant's and one on its counterparty's.
FEED_ROWS = """
SELECT participant, trade_id, version, problem FROM (
    SELECT t.participant, t.trade_id, t.version, 'version has no feed update' AS problem
    FROM trade_history t
    WHERE NOT EXISTS (SELECT 1 FROM feed f WHERE f.participant = t.participant
                      AND f.trade_id = t.trade_id AND f.version = t.version)
    UNION ALL
    SELECT f.participant, f.trade_id, f.version, 'feed update for a version that does not exist'
    FROM feed f
    WHERE f.trade_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM trade_history t WHERE t.participant = f.participant
                      AND t.trade_id = f.trade_id AND t.version = f.version)
    UNION ALL
    SELECT participant, trade_id, version, count(*) || ' feed updates for one version'
    FROM feed
    WHERE trade_id IS NOT NULL
    GROUP BY participant, trade_id, version
    HAVING count(*) > 1
    UNION ALL
    -- A proposal version: exactly one update on each of its two participants' feeds.
    SELECT p.proposer, 'proposal ' || p.proposal_id, p.version,
           'proposal version has ' || count(f.id) FILTER (WHERE f.participant = p.proposer)
           || ' update(s) for the proposer and '
           || count(f.id) FILTER (WHERE f.participant = p.counterparty)
           || ' for the counterparty, not one each'
    FROM proposals p
    LEFT JOIN feed f ON f.proposal_id = p.proposal_id AND f.proposal_version = p.version
    GROUP BY p.proposal_id, p.version, p.proposer, p.counterparty
    HAVING count(f.id) FILTER (WHERE f.participant = p.proposer) <> 1
        OR count(f.id) FILTER (WHERE f.participant = p.counterparty) <> 1
        OR count(f.id) <> 2
    UNION ALL
    SELECT f.participant, 'proposal ' || f.proposal_id, f.proposal_version,
           'feed update for a proposal version that does not exist'
    FROM feed f
    WHERE f.proposal_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM proposals p WHERE p.proposal_id = f.proposal_id
                      AND p.version = f.proposal_version)
    UNION ALL
    -- An overdue notice: exactly one update on its participant's feed and one on its
    -- counterparty's.
    SELECT n.participant, 'overdue notice ' || n.id, n.version,
           'overdue notice has ' || count(f.id) FILTER (WHERE f.participant = n.participant)
           || ' update(s) for the participant and '
           || count(f.id) FILTER (WHERE f.participant = n.counterparty)
           || ' for the counterparty, not one each'
    FROM overdue_notices n
    LEFT JOIN feed f ON f.notice_id = n.id
    GROUP BY n.id, n.participant, n.counterparty, n.version
    HAVING count(f.id) FILTER (WHERE f.participant = n.participant) <> 1
        OR count(f.id) FILTER (WHERE f.participant = n.counterparty) <> 1
        OR count(f.id) <> 2
    UNION ALL
    SELECT f.participant, 'overdue notice ' || f.notice_id, NULL,
           'feed update for an overdue notice that does not exist'
    FROM feed f
    WHERE f.notice_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM overdue_notices n WHERE n.id = f.notice_id)
) AS problems
ORDER BY participant, trade_id, version
LIMIT $1
"""

# Invariant 6: seq is unique and positive; per trade it grows with the version, and no
# version is sequenced while an earlier one is not (a consumer would see v2 before v1).
# Commit order across trades leaves no trace in a snapshot; the race tests prove that part.
FEED_SEQ = """
SELECT participant, trade_id, version, problem FROM (
    SELECT participant,
           coalesce(trade_id, 'proposal ' || proposal_id, 'overdue notice ' || notice_id)
               AS trade_id,
           coalesce(version, proposal_version, 1) AS version,
           'seq ' || seq || ' is shared by ' || count(*) OVER (PARTITION BY seq)
           || ' updates' AS problem,
           count(*) OVER (PARTITION BY seq) > 1 AS bad
    FROM feed WHERE seq IS NOT NULL
    UNION ALL
    SELECT participant,
           coalesce(trade_id, 'proposal ' || proposal_id, 'overdue notice ' || notice_id),
           coalesce(version, proposal_version, 1), 'seq ' || seq || ' is not positive', seq <= 0
    FROM feed WHERE seq IS NOT NULL
    UNION ALL
    SELECT participant, trade_id, version,
           CASE WHEN seq IS NOT NULL AND previous_version IS NOT NULL
                     AND previous_seq IS NULL
                THEN 'sequenced (seq ' || seq || ') before version ' || previous_version
                ELSE 'seq ' || seq || ' is not above version ' || previous_version
                     || '''s seq ' || previous_seq END,
           seq IS NOT NULL AND previous_version IS NOT NULL
               AND (previous_seq IS NULL OR seq <= previous_seq)
    FROM (
        SELECT participant, trade_id, version, seq,
               lag(seq) OVER w AS previous_seq, lag(version) OVER w AS previous_version
        FROM (SELECT participant,
                     coalesce(trade_id, 'proposal ' || proposal_id,
                              'overdue notice ' || notice_id) AS trade_id,
                     coalesce(version, proposal_version, 1) AS version, seq FROM feed) AS subjects
        WINDOW w AS (PARTITION BY participant, trade_id ORDER BY version)
    ) AS ordered
) AS checks
WHERE bad
ORDER BY participant, trade_id, version
LIMIT $1
"""

# Invariant 4: each live match joins exactly two latest rows, of mirrored participants
# and opposite sides, that name each other (trade_id and current version) under the same
# match_id; and no trade is claimed by two live matches.
MATCHES = """
WITH live AS (
    SELECT participant, trade_id, version, counterparty, side, match_id,
           match_counterparty_trade_id AS their_id, match_counterparty_version AS their_version,
           count(*) OVER (PARTITION BY match_id) AS legs,
           count(*) OVER (PARTITION BY counterparty, match_counterparty_trade_id) AS claims
    FROM trades
    WHERE latest AND (status = 'matched' OR match_id IS NOT NULL)
)
SELECT a.participant, a.trade_id, a.version,
       concat_ws('; ',
           CASE WHEN a.match_id IS NULL THEN 'matched without a match_id' END,
           CASE WHEN a.legs <> 2 THEN 'match ' || a.match_id || ' has ' || a.legs
                                      || ' legs, not 2' END,
           CASE WHEN a.claims > 1 THEN a.counterparty || '/' || a.their_id
                                       || ' is claimed by ' || a.claims || ' live matches' END,
           CASE WHEN b.trade_id IS NULL
                THEN 'counterparty trade ' || a.counterparty || '/'
                     || coalesce(a.their_id, '?') || ' is not in a live match'
                ELSE concat_ws('; ',
                    CASE WHEN b.match_id IS DISTINCT FROM a.match_id
                         THEN 'counterparty ' || b.participant || '/' || b.trade_id
                              || ' is in match ' || coalesce(b.match_id::text, 'none') END,
                    CASE WHEN b.counterparty <> a.participant
                         THEN 'counterparty ' || b.participant || '/' || b.trade_id
                              || ' names ' || b.counterparty || ', not ' || a.participant END,
                    CASE WHEN b.side = a.side THEN 'both sides ' || a.side END,
                    CASE WHEN b.their_id IS DISTINCT FROM a.trade_id
                         THEN 'counterparty ' || b.participant || '/' || b.trade_id
                              || ' refers to ' || coalesce(b.their_id, 'nothing') END,
                    CASE WHEN a.their_version IS DISTINCT FROM b.version
                         THEN 'refers to version ' || coalesce(a.their_version::text, 'none')
                              || ' of ' || b.participant || '/' || b.trade_id
                              || ', whose latest is ' || b.version END)
           END
       ) AS problem
FROM live a
LEFT JOIN live b ON b.participant = a.counterparty AND b.trade_id = a.their_id
WHERE a.match_id IS NULL OR a.legs <> 2 OR a.claims > 1 OR b.trade_id IS NULL
   OR b.match_id IS DISTINCT FROM a.match_id OR b.counterparty <> a.participant
   OR b.side = a.side OR b.their_id IS DISTINCT FROM a.trade_id
   OR a.their_version IS DISTINCT FROM b.version
ORDER BY a.participant, a.trade_id
LIMIT $1
"""


# Invariant 8: an accepted proposal's two trades carry its outcome in the version right
# after the one each was proposed at: a match made both `matched` with reason `agreed`
# under the proposal's id; a cancel made both `cancelled`.
PROPOSAL_OUTCOMES = """
WITH accepted AS (
    SELECT proposal_id, kind, proposer AS participant, trade_id, trade_version AS proposed
    FROM proposals WHERE latest AND state = 'accepted'
    UNION ALL
    SELECT proposal_id, kind, counterparty, counterparty_trade_id, counterparty_trade_version
    FROM proposals WHERE latest AND state = 'accepted'
)
SELECT a.participant, a.trade_id, a.proposed + 1 AS version,
       'accepted ' || a.kind || ' proposal ' || a.proposal_id || ' but version '
       || (a.proposed + 1) || ' is '
       || coalesce(t.status || ' (reason ' || t.reason || ')', 'missing') AS problem
FROM accepted a
LEFT JOIN trade_history t
       ON t.participant = a.participant AND t.trade_id = a.trade_id
      AND t.version = a.proposed + 1
WHERE t.version IS NULL
   OR (a.kind = 'match' AND NOT (t.status = 'matched' AND t.reason = 'agreed'
                                  AND t.match_id = a.proposal_id))
   OR (a.kind = 'cancel' AND NOT (t.status = 'cancelled' AND t.reason = 'cancelled'))
ORDER BY a.participant, a.trade_id
LIMIT $1
"""

# Invariant 9: no two open proposals of one kind for the same two trades, and an open
# proposal names the latest version of each trade (a newer one lapses it).
OPEN_PROPOSALS = """
SELECT participant, trade_id, version, problem FROM (
    SELECT min(proposer) AS participant, min(trade_id) AS trade_id, NULL::int AS version,
           count(*) || ' open ' || kind || ' proposals for ' || pair_key AS problem
    FROM proposals WHERE latest AND state = 'open'
    GROUP BY kind, pair_key
    HAVING count(*) > 1
    UNION ALL
    SELECT t.participant, t.trade_id, t.version,
           'open proposal ' || p.proposal_id || ' names version '
           || CASE WHEN t.participant = p.proposer THEN p.trade_version
                   ELSE p.counterparty_trade_version END
           || ', the latest is ' || t.version
    FROM proposals p
    JOIN trades t ON t.latest
     AND ((t.participant = p.proposer AND t.trade_id = p.trade_id
           AND t.version <> p.trade_version)
       OR (t.participant = p.counterparty AND t.trade_id = p.counterparty_trade_id
           AND t.version <> p.counterparty_trade_version))
    WHERE p.latest AND p.state = 'open'
) AS problems
ORDER BY participant, trade_id
LIMIT $1
"""


# Invariant 10: a match names what decided it (kevin.store.trades.stored_mismatches: the
# matched version's one entry carries "rules"), and that version of the profile or the
# product's rules existed at the match's instant. Versions written before matches named
# their rules carry only rules_version (NULL: exact); that version must have existed too.
# Forced and agreed matches name no rules (an operator, or the two sides, decided).
MATCH_RULES = """
WITH matched AS (
    SELECT participant, trade_id, version, product, recorded_at, rules_version,
           mismatches -> 0 -> 'rules' AS rules
    FROM trade_history
    WHERE status = 'matched' AND reason IN ('matched', 'amended')
), judged AS (
    SELECT m.participant, m.trade_id, m.version, CASE
        WHEN m.rules IS NULL THEN CASE
            WHEN m.rules_version IS NOT NULL AND NOT EXISTS (
                SELECT 1 FROM rules r WHERE r.product = m.product
                AND r.version = m.rules_version AND r.recorded_at <= m.recorded_at)
            THEN 'matched under rules version ' || m.rules_version || ' of ' || m.product
                 || ', which did not exist then' END
        WHEN m.rules ->> 'kind' = 'product' THEN CASE
            WHEN NOT EXISTS (
                SELECT 1 FROM rules r WHERE r.product = m.rules ->> 'name'
                AND r.version = (m.rules ->> 'version')::int
                AND r.recorded_at <= m.recorded_at)
            THEN 'names rules version ' || coalesce(m.rules ->> 'version', 'none') || ' of '
                 || (m.rules ->> 'name') || ', which did not exist at the match' END
        WHEN m.rules ->> 'kind' = 'profile' THEN CASE
            WHEN NOT EXISTS (
                SELECT 1 FROM profiles p WHERE p.name = m.rules ->> 'name'
                AND p.version = (m.rules ->> 'version')::int AND NOT p.retired
                AND p.recorded_at <= m.recorded_at)
            THEN 'names profile ' || (m.rules ->> 'name') || ' version '
                 || coalesce(m.rules ->> 'version', 'none')
                 || ', which was not in force at the match' END
        WHEN m.rules ->> 'kind' IN ('exact', 'replay') THEN NULL
        ELSE 'names unknown rules ' || m.rules::text
    END AS problem
    FROM matched m
)
SELECT participant, trade_id, version, problem FROM judged
WHERE problem IS NOT NULL
ORDER BY participant, trade_id, version
LIMIT $1
"""


@dataclass(frozen=True)
class Violation:
    invariant: int
    participant: str | None
    trade_id: str | None
    version: int | None
    problem: str

    @property
    def subject(self) -> str:
        if self.trade_id is None:
            return "trades table"
        version = f" v{self.version}" if self.version is not None else ""
        return f"{self.participant}/{self.trade_id}{version}"


# (invariant, statement); statements without $1 take no limit.
CHECKS: tuple[tuple[int, str], ...] = (
    (1, TRIGGERS), (2, VERSIONS), (4, MATCHES), (5, FEED_ROWS), (6, FEED_SEQ),
    (8, PROPOSAL_OUTCOMES), (9, OPEN_PROPOSALS), (10, MATCH_RULES),
)


async def find_violations(conn: asyncpg.Connection, limit: int = 100) -> list[Violation]:
    """Every invariant violation in one snapshot; at most ``limit`` per invariant."""
    found: list[Violation] = []
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        for invariant, statement in CHECKS:
            args = (limit,) if "$1" in statement else ()
            for row in await conn.fetch(statement, *args):
                found.append(Violation(invariant, row["participant"], row["trade_id"],
                                       row["version"], row["problem"]))
    return found
