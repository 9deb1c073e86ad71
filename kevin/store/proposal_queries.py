"""Every SQL statement of proposals, named. Parameters are always bound.

A proposal version and its two feed rows (proposer's and counterparty's) are written in
one statement: invariant 5 for proposals holds by construction.
"""

PROPOSAL_COLUMNS = """
    proposal_id, version, kind, state, proposer, trade_id, trade_version, counterparty,
    counterparty_trade_id, counterparty_trade_version, differences, comment, actor,
    created_at, recorded_at
"""

_FEED_ROWS = """
, feed_rows AS (
    INSERT INTO feed (participant, proposal_id, proposal_version)
    SELECT proposer, proposal_id, version FROM version
    UNION ALL
    SELECT counterparty, proposal_id, version FROM version
)
"""

# Version 1 (open). ix_proposals_one_open refuses a second open proposal of the same
# kind for the same two trades (unique violation: the caller answers 409).
INSERT_OPEN = f"""
WITH version AS (
    INSERT INTO proposals (proposal_id, version, latest, kind, state, proposer, trade_id,
                           trade_version, counterparty, counterparty_trade_id,
                           counterparty_trade_version, pair_key, differences, comment, actor,
                           created_at)
    VALUES ($1, 1, true, $2, 'open', $3, $4, $5, $6, $7, $8, $9, $10, $11, $3,
            clock_timestamp())
    RETURNING {PROPOSAL_COLUMNS}
){_FEED_ROWS}
SELECT {PROPOSAL_COLUMNS} FROM version
"""

# The decision on an open proposal (accepted, rejected, withdrawn): flip version $2 —
# only while it is still the latest and open — and write $2 + 1 in the same statement.
# Two deciders racing (two accepts, an accept and a withdraw, a lapse by a new trade
# version): the UPDATE's row lock orders them; the later one re-checks `latest` on the
# row it waited for, flips nothing, and writes nothing: the caller sees no row and
# answers 409. Exactly one decision wins, whichever process it came from.
DECIDE = f"""
WITH flipped AS (
    UPDATE proposals SET latest = false
    WHERE proposal_id = $1 AND version = $2 AND latest AND state = 'open'
    RETURNING *
), version AS (
    INSERT INTO proposals (proposal_id, version, latest, kind, state, proposer, trade_id,
                           trade_version, counterparty, counterparty_trade_id,
                           counterparty_trade_version, pair_key, differences, comment, actor,
                           created_at)
    SELECT proposal_id, version + 1, true, kind, $3, proposer, trade_id, trade_version,
           counterparty, counterparty_trade_id, counterparty_trade_version, pair_key,
           differences, $4, $5, created_at
    FROM flipped
    RETURNING {PROPOSAL_COLUMNS}
){_FEED_ROWS}
SELECT {PROPOSAL_COLUMNS} FROM version
"""

SELECT_LATEST = f"""
SELECT {PROPOSAL_COLUMNS} FROM proposals WHERE proposal_id = $1 AND latest
"""

SELECT_OPEN_FOR_PAIR = f"""
SELECT {PROPOSAL_COLUMNS} FROM proposals
WHERE kind = $1 AND pair_key = $2 AND latest AND state = 'open'
"""

# Those participant $1 made or received, latest versions, optionally of one state ($2),
# newest first by proposal_id order for a stable keyset ($3: the last id seen).
SELECT_PAGE = f"""
SELECT * FROM (
    SELECT {PROPOSAL_COLUMNS} FROM proposals
    WHERE latest AND proposer = $1 AND ($2::text IS NULL OR state = $2)
      AND proposal_id > $3
    UNION ALL
    SELECT {PROPOSAL_COLUMNS} FROM proposals
    WHERE latest AND counterparty = $1 AND ($2::text IS NULL OR state = $2)
      AND proposal_id > $3
) AS mine
ORDER BY proposal_id
LIMIT $4
"""

# The admin's listing: every proposal ($1: state or NULL).
SELECT_PAGE_ALL = f"""
SELECT {PROPOSAL_COLUMNS} FROM proposals
WHERE latest AND ($1::text IS NULL OR state = $1) AND proposal_id > $2
ORDER BY proposal_id
LIMIT $3
"""
